"""λ schedules (balora/schedules.py): the ICLR-2026 script's cosine λ1 and two-phase λ2/λ3, step by step."""

import math

import pytest

from balora.schedules import SCHEDULES, cosine_decay_factor, lambda_factors, two_phase_factor


def test_constant_is_one_everywhere():
    for step in (0, 1, 50, 100, 250):
        assert lambda_factors("constant", step, 100) == {"consistency": 1.0, "diversity": 1.0, "svd": 1.0}


def test_cosine_runs_from_one_to_the_floor():
    assert cosine_decay_factor(0, 3125) == 1.0
    assert cosine_decay_factor(3125, 3125) == pytest.approx(0.1)
    # Half way the cosine term is 1/2: 0.1 + 0.9 / 2.
    assert cosine_decay_factor(1000, 2000) == pytest.approx(0.55)
    values = [cosine_decay_factor(s, 100) for s in range(101)]
    assert all(a >= b for a, b in zip(values[:-1], values[1:], strict=True))
    # Steps past the end stay at the floor.
    assert cosine_decay_factor(150, 100) == pytest.approx(0.1)


def test_two_phase_uses_whole_steps_as_the_script_does():
    # 100K rows at batch 32: 3,125 optimizer steps; W = int(625.0) = 625, R = int(156.25) = 156.
    assert two_phase_factor(624, 3125) == 0.0
    assert two_phase_factor(625, 3125) == 0.0
    assert two_phase_factor(626, 3125) == 1 / 156
    assert two_phase_factor(703, 3125) == 78 / 156
    assert two_phase_factor(780, 3125) == 155 / 156
    # A continuous ramp over 156.25 steps would still be below 1 here.
    assert two_phase_factor(781, 3125) == 1.0
    assert two_phase_factor(3125, 3125) == 1.0


def test_two_phase_short_runs_ramp_over_at_least_one_step():
    # S = 10: W = int(2.0) = 2, R = max(int(0.5), 1) = 1.
    assert [two_phase_factor(s, 10) for s in range(5)] == [0.0, 0.0, 0.0, 1.0, 1.0]
    # S unknown (0) counts as 1 step: W = 0, R = 1, so step 0 is the start of the ramp.
    assert two_phase_factor(0, 0) == 0.0 and two_phase_factor(1, 0) == 1.0


def test_iclr2026_factors_per_term():
    start = lambda_factors("iclr2026", 0, 100)
    assert start == {"consistency": 1.0, "diversity": 0.0, "svd": 0.0}
    ramp = lambda_factors("iclr2026", 22, 100)  # W = 20, R = 5
    assert ramp["diversity"] == ramp["svd"] == pytest.approx(0.4)
    assert ramp["consistency"] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.22)))
    end = lambda_factors("iclr2026", 100, 100)
    assert end["consistency"] == pytest.approx(0.1) and end["diversity"] == end["svd"] == 1.0


def test_unknown_schedule_names_the_choices():
    with pytest.raises(
        ValueError, match=r"lambda_schedule must be one of \('constant', 'iclr2026'\), got 'linear'"
    ):
        lambda_factors("linear", 0, 10)
    assert SCHEDULES == ("constant", "iclr2026")
