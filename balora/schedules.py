"""λ schedules: the factor each regulariser weight is multiplied by at an optimizer step.

The weights of docs/method.md §3 are λ_t · factor_t(step); a schedule is a pure function of the
optimizer step and the run's total optimizer steps, so it is the same under any number of processes
and gradient-accumulation setting.

* `constant`: every factor is 1 (the paper text's objective).
* `iclr2026`: the ICLR-2026 training script (github.com/llm172/BA-LoRA, `scripts/ba-lora.sh` at
  0ce47fd0de170a11d99f6c19a62813feaadd271b: `--lambda1_schedule cosine --lambda_focus_schedule two_phase
  --lambda_warmup_ratio 0.2 --lambda_ramp_up_ratio 0.05`; the formulas in its `train.py` at
  2829797295cbe7eaade309d501da40964eb54c94, `BALoRATrainer.compute_loss`):
  λ1 decays by a cosine from λ1 to 0.1·λ1 (`cosine_decay_factor`); λ2 and λ3 are 0 for the first
  ⌊0.2·S⌋ steps, then ramp linearly over max(⌊0.05·S⌋, 1) steps to their value (`two_phase_factor`).
  The phase lengths are whole steps, as in the script: with S = 3,125 (100K rows, batch 32) the ramp
  covers steps 625-781 (156 steps, not 156.25).
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "iclr2026")
TERMS = ("consistency", "diversity", "svd")

# The ICLR-2026 script's settings (scripts/ba-lora.sh flags; train.py's 0.1·λ1 floor).
ICLR2026_COSINE_FLOOR = 0.1
ICLR2026_WARMUP_RATIO = 0.2
ICLR2026_RAMP_UP_RATIO = 0.05


def cosine_decay_factor(step: int, max_steps: int, floor: float = ICLR2026_COSINE_FLOOR) -> float:
    """Cosine decay from 1 at step 0 to `floor` at step `max_steps`.

    factor = floor + (1 − floor) · ½ (1 + cos(π · step / S)), S = max(max_steps, 1); step is clamped to [0, S].
    """
    total = max(int(max_steps), 1)
    progress = min(max(step, 0), total) / total
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def two_phase_factor(
    step: int,
    max_steps: int,
    warmup_ratio: float = ICLR2026_WARMUP_RATIO,
    ramp_up_ratio: float = ICLR2026_RAMP_UP_RATIO,
) -> float:
    """0 during a warm-up of W = ⌊warmup_ratio · S⌋ steps, then a linear ramp over R = max(⌊ramp_up_ratio · S⌋, 1)
    steps, then 1 (S = max(max_steps, 1)).

    factor = 0 for step < W; (step − W) / R for W ≤ step < W + R; 1 after.
    """
    total = max(int(max_steps), 1)
    warmup = int(warmup_ratio * total)
    ramp = max(int(ramp_up_ratio * total), 1)
    if step < warmup:
        return 0.0
    if step < warmup + ramp:
        return (step - warmup) / ramp
    return 1.0


def lambda_factors(schedule: str, step: int, max_steps: int) -> dict[str, float]:
    """The factor of each term's λ at optimizer step `step` of `max_steps`.

    Args:
        schedule: "constant" | "iclr2026".
        step: optimizer steps completed (the Trainer's `state.global_step`).
        max_steps: optimizer steps of the whole run (`state.max_steps`).

    Returns:
        {"consistency": f1, "diversity": f2, "svd": f3}; the weight of term t is λ_t · f_t.

    Raises:
        ValueError: an unknown schedule name.
    """
    if schedule == "constant":
        return dict.fromkeys(TERMS, 1.0)
    if schedule == "iclr2026":
        focus = two_phase_factor(step, max_steps)
        return {"consistency": cosine_decay_factor(step, max_steps), "diversity": focus, "svd": focus}
    raise ValueError(f"lambda_schedule must be one of {SCHEDULES}, got {schedule!r}")


def scheduled_lambdas(base: dict[str, float], schedule: str, step: int, max_steps: int) -> dict[str, float]:
    """λ values at optimizer step `step` of `max_steps` (docs/method.md §3).

    Args:
        base: {"consistency": λ1, "diversity": λ2, "svd": λ3}.
        schedule: "constant" | "iclr2026" (the ICLR-2026 script's cosine λ1 and two-phase λ2, λ3).
    """
    factors = lambda_factors(schedule, step, max_steps)
    return {term: base[term] * factors[term] for term in base}
