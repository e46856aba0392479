"""Text generation shared by every NLG evaluator: model + adapter loading, batched decoding, resumability.

Decoding follows the training format (docs/method.md §5): the Alpaca prompt, greedy by default, a cap on
new tokens, and stop strings that end a response when the model starts a new Alpaca section.

* HF backend: left padding, prompts sorted by length so each batch pads little, `generate` with
  `stop_strings`; completions are cut at the first stop string afterwards (a batch keeps decoding
  until its longest member stops).
* vLLM backend (used automatically when vllm is installed and a GPU is present): same prompts,
  `SamplingParams(temperature=0, stop=...)`, adapters through `LoRARequest`.
* Resumability: `generate_to_file` appends every finished completion to a JSONL file (flushed and
  fsync'ed per batch); a rerun reads it and only generates what is missing. The decoding settings
  are stored beside it and a rerun with different settings is refused instead of mixing them.

Shapes: B = batch size, T = padded prompt length, N = new tokens.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from balora.repro import rehearsal
from balora.repro.models import TINY_CAUSAL_LMS, resolve_model_path, tiny_causal_lm

logger = logging.getLogger(__name__)

# A response ends where the model starts the next Alpaca section (training ends responses with EOS).
DEFAULT_STOP_STRINGS = ("### Instruction", "### Response")
# HumanEval / MBPP under the paper protocol: the official pipeline generates code with no stop strings
# (PiSSA utils/gen_vllm.py: `stop_tokens = []`, max_tokens 1024) and post-processes the completion
# (balora.eval.code.extract_code_paper); the code commands use these instead of the default.
CODE_STOP_STRINGS: tuple[str, ...] = ()


@dataclass
class DecodingConfig:
    """How completions are produced (recorded in every metrics.json).

    Attributes:
        max_new_tokens: cap on generated tokens per completion.
        temperature: 0 means greedy decoding.
        top_p: nucleus sampling mass (ignored when greedy).
        batch_size: prompts per HF `generate` call.
        stop_strings: a completion is cut before the first occurrence of any of them.
        seed: seeds torch before decoding (matters only when sampling).
        backend: "auto" (vLLM when installed and CUDA is available, else HF), "hf" or "vllm".
    """

    max_new_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    batch_size: int = 16
    stop_strings: list[str] = field(default_factory=lambda: list(DEFAULT_STOP_STRINGS))
    seed: int = 42
    backend: str = "auto"

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.backend not in ("auto", "hf", "vllm"):
            raise ValueError(f"backend must be auto, hf or vllm, got {self.backend!r}")

    def fingerprint(self) -> dict:
        """The settings that change completions (batch size and backend are left out on purpose)."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p if self.temperature > 0 else 1.0,
            "stop_strings": list(self.stop_strings),
            "seed": self.seed,
        }


def truncate_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """Cut `text` before the earliest occurrence of any stop string."""
    cut = len(text)
    for stop in stop_strings:
        index = text.find(stop)
        if index != -1:
            cut = min(cut, index)
    return text[:cut]


# --- loading ------------------------------------------------------------------------------------


def _read_adapter_config(adapter_dir: Path) -> dict:
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"--adapter {adapter_dir}: no adapter_config.json there (expected a peft "
            "adapter directory such as <run>/adapter_lora)"
        )
    return json.loads(config_file.read_text())


def is_unconverted_pissa_adapter(adapter_dir: str | os.PathLike) -> bool:
    """Whether an adapter was trained on a PiSSA residual base (so it is wrong on the original model).

    Two signs: peft's own record (`init_lora_weights` "pissa"/"pissa_niter_N", written when PiSSA
    was initialised on the fly), or a train_nlg.py run directory whose config.yaml says
    a PiSSA-initialised method (`pissa`, or the recipe `ba-lora`) for its `adapter/` (the init_dir flow saves the initial adapter with
    init_lora_weights=True, so peft's field alone does not show it). `adapter_lora/` is the
    converted plain LoRA and is never flagged.
    """
    adapter_dir = Path(adapter_dir)
    init = _read_adapter_config(adapter_dir).get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith("pissa"):
        return True
    run_config = adapter_dir.parent / "config.yaml"
    if adapter_dir.name != "adapter_lora" and run_config.is_file():
        import yaml

        from balora.adapters import adapter_of

        method = (yaml.safe_load(run_config.read_text()) or {}).get("method")
        return adapter_of(str(method).lower()) == "pissa"
    return False


def check_adapter_base(model_path: str, adapter_dir: str | os.PathLike) -> None:
    """Refuse an unconverted PiSSA adapter on a base that is not its residual model.

    The trained PiSSA adapter holds A, B of W = W_res + BA; applied to the original W it computes
    W + BA, which is a different (wrong) model. Rule: such an adapter is accepted only on a model
    directory named `residual_model` (what the init step writes); otherwise use `<run>/adapter_lora`
    (the rank-2r conversion that applies to the original base) or a merged model.

    Raises:
        ValueError: with the two correct alternatives.
    """
    if is_unconverted_pissa_adapter(adapter_dir) and Path(model_path).name != "residual_model":
        run = Path(adapter_dir).parent
        raise ValueError(
            f"--adapter {adapter_dir} is an unconverted PiSSA adapter: it was trained on the residual "
            f"model W_res = W - BA and is wrong on {model_path!r}. Either pass the converted adapter "
            f"--adapter {run / 'adapter_lora'} (plain LoRA on the original base), or evaluate on the "
            "residual base: --model <init_dir>/residual_model --adapter <run>/adapter."
        )


def load_model(model: str, adapter: str | None = None, dtype: str = "auto", device: str | None = None):
    """Load a causal LM (+ optional peft adapter) for inference: (model, tokenizer).

    Args:
        model: a local path, a hub id, an embedded name ("smollm2-135m-instruct") or a tiny test
            model name ("tiny-llama", random weights, for tests).
        adapter: a peft adapter directory (see check_adapter_base for PiSSA).
        dtype: "auto" (bf16 on CUDA, fp32 on CPU), "float32", "bfloat16" or "float16".
        device: defaults to CUDA when available.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = rehearsal.model_name(model)
    if model in TINY_CAUSAL_LMS:
        lm, tokenizer = tiny_causal_lm(model)
    else:
        path = resolve_model_path(model)
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        model = path
    if adapter is not None:
        from peft import PeftConfig, PeftModel

        from balora.adapters import quiet_peft_wrapping

        check_adapter_base(str(model), adapter)
        config = PeftConfig.from_pretrained(adapter)
        # Loading must never re-run an initialisation that rewrites base weights (PiSSA would
        # decompose the already-residual weights again); the saved A, B are loaded as they are.
        if hasattr(config, "init_lora_weights"):
            config.init_lora_weights = True
        with quiet_peft_wrapping():
            lm = PeftModel.from_pretrained(lm, adapter, config=config)
    lm.to(device)
    lm.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # decoder-only batching: prompts end at the same position
    return lm, tokenizer


# --- generation ---------------------------------------------------------------------------------


def _use_vllm(cfg: DecodingConfig) -> bool:
    if cfg.backend == "hf":
        return False
    import importlib.util

    available = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
    if cfg.backend == "vllm" and not available:
        raise ValueError("--backend vllm needs the vllm package and a CUDA GPU; use --backend hf")
    return available


@torch.no_grad()
def generate_hf(model, tokenizer, prompts: Sequence[str], cfg: DecodingConfig, progress=None) -> list[str]:
    """Batched HF generation: completions for `prompts`, in input order, cut at stop strings.

    Args:
        model, tokenizer: from load_model (left padding).
        prompts: full prompt strings.
        cfg: decoding settings.
        progress: optional callable(done_indices, completions) invoked after every batch (used to
            append finished completions to disk).
    """
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lengths = [len(ids) for ids in tokenizer(list(prompts))["input_ids"]]
    # Longest first: similar lengths share a batch (little padding) and memory errors show up early.
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    results: list[str | None] = [None] * len(prompts)
    device = next(model.parameters()).device
    sampling = cfg.temperature > 0
    kwargs = dict(
        max_new_tokens=cfg.max_new_tokens,
        do_sample=sampling,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=model.generation_config.eos_token_id
        if model.generation_config.eos_token_id is not None
        else tokenizer.eos_token_id,
    )
    if sampling:
        kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if cfg.stop_strings:
        kwargs.update(stop_strings=list(cfg.stop_strings), tokenizer=tokenizer)
    for start in range(0, len(order), cfg.batch_size):
        batch = order[start : start + cfg.batch_size]
        encoded = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True).to(device)
        output = model.generate(**encoded, **kwargs)  # (B, T + N)
        new_tokens = output[:, encoded["input_ids"].shape[1] :]  # (B, N)
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        completions = [truncate_at_stop(text, cfg.stop_strings) for text in texts]
        for i, completion in zip(batch, completions, strict=True):
            results[i] = completion
        if progress is not None:
            progress(batch, completions)
    return results  # type: ignore[return-value]


def generate_vllm(
    model_path: str, adapter: str | None, prompts: Sequence[str], cfg: DecodingConfig, progress=None
) -> list[str]:
    """vLLM generation (GPU). Same prompts and stop strings as the HF path; adapters via LoRARequest."""
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    lora_request, llm_kwargs = None, {}
    if adapter is not None:
        rank = int(_read_adapter_config(Path(adapter)).get("r", 16))
        # vLLM's max_lora_rank must be one of these values; take the smallest >= the adapter's rank
        # (a PiSSA adapter converted to a LoRA delta has rank 2r).
        supported = [r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= rank]
        if not supported:
            raise ValueError(
                f"adapter rank {rank} exceeds vLLM's max_lora_rank (512); merge it or use --backend hf"
            )
        llm_kwargs.update(enable_lora=True, max_lora_rank=supported[0])
        lora_request = LoRARequest("adapter", 1, adapter)
    llm = LLM(model=model_path, seed=cfg.seed, **llm_kwargs)
    params = SamplingParams(
        temperature=cfg.temperature,
        top_p=cfg.top_p if cfg.temperature > 0 else 1.0,
        max_tokens=cfg.max_new_tokens,
        stop=list(cfg.stop_strings),
        seed=cfg.seed,
    )
    outputs = llm.generate(list(prompts), params, lora_request=lora_request)
    completions = [truncate_at_stop(out.outputs[0].text, cfg.stop_strings) for out in outputs]
    if progress is not None:
        progress(list(range(len(prompts))), completions)
    return completions


class Generator:
    """Lazily loads the model the first time completions are needed (score-only runs never do)."""

    def __init__(self, model: str, adapter: str | None, cfg: DecodingConfig, dtype: str = "auto"):
        model = rehearsal.model_name(model)
        self.model_name, self.adapter, self.cfg, self.dtype = model, adapter, cfg, dtype
        self._loaded = None
        # Both fail before any work: vLLM asked for where it cannot run, an adapter of another base.
        self.use_vllm = model not in TINY_CAUSAL_LMS and _use_vllm(cfg)
        if adapter is not None and model not in TINY_CAUSAL_LMS:
            check_adapter_base(resolve_model_path(model), adapter)

    def load(self) -> None:
        """Load the HF model now (generate_to_file calls this before it opens its progress bar)."""
        if self._loaded is None and not self.use_vllm:
            self._loaded = load_model(self.model_name, self.adapter, self.dtype)

    def __call__(self, prompts: Sequence[str], progress=None) -> list[str]:
        torch.manual_seed(self.cfg.seed)
        if self.use_vllm:
            return generate_vllm(
                resolve_model_path(self.model_name), self.adapter, prompts, self.cfg, progress
            )
        self.load()
        return generate_hf(*self._loaded, prompts, self.cfg, progress)


def generate_to_file(
    generator,
    items: Sequence[tuple[str, str]],
    path: str | os.PathLike,
    cfg: DecodingConfig,
    desc: str = "generate",
) -> dict[str, str]:
    """Resumable generation: {key: completion} for `items` [(key, prompt)], appended to `path` as they finish.

    Rows already in `path` (from an interrupted run with the same decoding settings) are reused;
    a torn last line from a crash is dropped. A settings file `<path>.settings.json` guards against
    resuming with different settings.

    Raises:
        ValueError: the existing file was produced with other decoding settings.
    """
    from tqdm import tqdm

    path = Path(path)
    settings_path = path.with_name(path.name + ".settings.json")
    fingerprint = cfg.fingerprint()
    done: dict[str, str] = {}
    if path.exists():
        if settings_path.exists() and json.loads(settings_path.read_text()) != fingerprint:
            raise ValueError(
                f"{path} was generated with other decoding settings ({settings_path.read_text().strip()}); "
                f"now {fingerprint}. Use a fresh --output_dir or delete {path} to regenerate."
            )
        lines = path.read_text().splitlines(keepends=True)
        good = 0
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # torn write at the end of an interrupted run: regenerate from here
            done[str(row["key"])] = row["completion"]
            good += len(line.encode())
        with open(path, "r+b") as handle:
            handle.truncate(good)
    todo = [(key, prompt) for key, prompt in items if key not in done]
    if todo:
        logger.info(
            "%s: %d of %d completions to generate (%d cached in %s)",
            desc,
            len(todo),
            len(items),
            len(items) - len(todo),
            path,
        )
        # The model's loading messages before the bar, not inside it; and before anything is written, so
        # that a model that does not load leaves no folder behind.
        if hasattr(generator, "load"):
            generator.load()
    path.parent.mkdir(parents=True, exist_ok=True)
    settings_path.write_text(json.dumps(fingerprint) + "\n")
    if todo:
        bar = tqdm(total=len(todo), desc=desc, unit="prompt")
        with open(path, "a") as handle:

            def append(indices, completions):
                for i, completion in zip(indices, completions, strict=True):
                    key = todo[i][0]
                    done[key] = completion
                    handle.write(json.dumps({"key": key, "completion": completion}) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
                bar.update(len(indices))

            generator([prompt for _, prompt in todo], progress=append)
        bar.close()
    return {key: done[key] for key, _ in items}
