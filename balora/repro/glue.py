"""GLUE for the NLU experiments: task specs, data loading (hub or local TSV), tokenisation, metrics.

Labels follow the `nyu-mll/glue` hub dataset's ids, so a model trained from the TSV files and one
trained from the hub agree on what class 0 means. Metrics are computed with scikit-learn / scipy
(the `evaluate` hub metrics do not load offline) and returned as fractions, plus `score`: the paper's
headline number for the task in percent (accuracy; MNLI matched; Matthews correlation for CoLA;
Pearson for STS-B).

Shapes: N = number of examples, C = number of classes (1 for the STS-B regression head).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GlueTask:
    """What a GLUE task looks like on disk and how it is scored.

    Attributes:
        name: canonical lower-case name ("sst2", "stsb", ...), the hub config name.
        tsv_dir: folder name in the original GLUE release ("SST-2", "STS-B", ...).
        text_columns: TSV header names of the one or two input texts.
        label_column: TSV header name of the label.
        label_names: class names in hub id order; empty for regression.
        tsv_label_values: how each class is spelled in the TSV file, in the same order.
        metrics: metric names returned by compute_metrics, as fractions.
        headline: the metric the paper's table reports (`score` = 100 * this).
        dev_file: the validation file name in the GLUE release.
        has_header: False for CoLA, whose TSV files have no header line.
        fixed_columns: for header-less files, the column index of each field.
    """

    name: str
    tsv_dir: str
    text_columns: tuple[str, ...]
    label_column: str
    label_names: tuple[str, ...]
    tsv_label_values: tuple[str, ...]
    metrics: tuple[str, ...]
    headline: str
    dev_file: str = "dev.tsv"
    hub_validation_split: str = "validation"
    has_header: bool = True
    fixed_columns: dict[str, int] = field(default_factory=dict)

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)


GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask(
        "cola",
        "CoLA",
        ("sentence",),
        "label",
        ("unacceptable", "acceptable"),
        ("0", "1"),
        ("matthews_correlation", "accuracy"),
        "matthews_correlation",
        has_header=False,
        # CoLA TSV: source, label, original label (blank), sentence.
        fixed_columns={"label": 1, "sentence": 3},
    ),
    "sst2": GlueTask(
        "sst2",
        "SST-2",
        ("sentence",),
        "label",
        ("negative", "positive"),
        ("0", "1"),
        ("accuracy",),
        "accuracy",
    ),
    "mrpc": GlueTask(
        "mrpc",
        "MRPC",
        ("#1 String", "#2 String"),
        "Quality",
        ("not_equivalent", "equivalent"),
        ("0", "1"),
        ("accuracy", "f1"),
        "accuracy",
    ),
    "qqp": GlueTask(
        "qqp",
        "QQP",
        ("question1", "question2"),
        "is_duplicate",
        ("not_duplicate", "duplicate"),
        ("0", "1"),
        ("accuracy", "f1"),
        "accuracy",
    ),
    "stsb": GlueTask(
        "stsb",
        "STS-B",
        ("sentence1", "sentence2"),
        "score",
        (),
        (),
        ("pearson", "spearmanr"),
        "pearson",
    ),
    "mnli": GlueTask(
        "mnli",
        "MNLI",
        ("sentence1", "sentence2"),
        "gold_label",
        ("entailment", "neutral", "contradiction"),
        ("entailment", "neutral", "contradiction"),
        ("accuracy",),
        "accuracy",
        dev_file="dev_matched.tsv",
        hub_validation_split="validation_matched",
    ),
    "qnli": GlueTask(
        "qnli",
        "QNLI",
        ("question", "sentence"),
        "label",
        ("entailment", "not_entailment"),
        ("entailment", "not_entailment"),
        ("accuracy",),
        "accuracy",
    ),
    "rte": GlueTask(
        "rte",
        "RTE",
        ("sentence1", "sentence2"),
        "label",
        ("entailment", "not_entailment"),
        ("entailment", "not_entailment"),
        ("accuracy",),
        "accuracy",
    ),
    "wnli": GlueTask(
        "wnli",
        "WNLI",
        ("sentence1", "sentence2"),
        "label",
        ("not_entailment", "entailment"),
        ("0", "1"),
        ("accuracy",),
        "accuracy",
    ),
}

# Spellings people use for the same task (GLUE folder names, hyphenated forms).
_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli_matched": "mnli"}

# Reported for every classification task beside its official metrics (the bias probes read them):
# per-class recall (`recall_<label name>`), balanced accuracy (their mean) and macro-F1; from logits also
# `auroc`, which does not depend on the decision threshold (a model whose argmax is always the majority
# class can still rank the minority class first).
CLASS_BALANCE_METRICS = ("balanced_accuracy", "macro_f1", "auroc")


def get_task(name: str) -> GlueTask:
    """Look up a task by any common spelling ("SST-2", "sst2", "STS-B", ...).

    Raises:
        ValueError: unknown task, with the list of known ones.
    """
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in GLUE_TASKS:
        raise ValueError(f"Unknown GLUE task {name!r}; choose one of {sorted(GLUE_TASKS)}")
    return GLUE_TASKS[key]


def validate_metric(task: str | GlueTask, metric: str) -> str:
    """Check that `metric` (optionally prefixed "eval_") is reported for `task`; returns the bare name.

    Raises:
        ValueError: e.g. a classification metric asked of the STS-B regression task.
    """
    spec = task if isinstance(task, GlueTask) else get_task(task)
    bare = metric[len("eval_") :] if metric.startswith("eval_") else metric
    allowed = (*spec.metrics, "score")
    if not spec.is_regression:
        allowed = (*allowed, *CLASS_BALANCE_METRICS, *(f"recall_{name}" for name in spec.label_names))
    if bare not in allowed:
        kind = "regression" if spec.is_regression else "classification"
        raise ValueError(
            f"Metric {metric!r} is not reported for {spec.name} ({kind} task); use one of {list(allowed)}"
        )
    return bare


# --- data --------------------------------------------------------------------------------------


def read_glue_tsv(path: str | os.PathLike, task: str | GlueTask) -> list[dict[str, Any]]:
    """Read one original GLUE TSV file into rows {"sentence1", ["sentence2"], "label"}.

    Lines are split on tabs with no quote handling (GLUE sentences contain unbalanced `"`).
    Every line must have the header's number of fields and a known label: a malformed row raises
    with the file and line number instead of being dropped.

    Returns:
        A list of dicts; "label" is the hub class id (int) or, for STS-B, the float score.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: missing label/text column, malformed row, unknown label.
    """
    spec = task if isinstance(task, GlueTask) else get_task(task)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"GLUE file not found: {path} (expected layout <glue_dir>/{spec.tsv_dir}/...)"
        )
    # utf-8-sig: MRPC's header starts with a byte-order mark.
    raw = path.read_bytes()
    try:
        lines = raw.decode("utf-8-sig").split("\n")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text (byte {err.start}: {err.reason}); re-encode the file as UTF-8"
        ) from None
    if lines and lines[-1] == "":
        lines.pop()  # final newline (CoLA's dev.tsv has none)
    first_data_line = 1
    if spec.has_header:
        if not lines:
            raise ValueError(f"{path}: empty file, expected a header line")
        header = lines[0].split("\t")
        needed = (*spec.text_columns, spec.label_column)
        missing = [c for c in needed if c not in header]
        if missing:
            raise ValueError(f"{path}: column(s) {missing} missing from the header {header} ({spec.name})")
        columns = {c: header.index(c) for c in needed}
        n_fields = len(header)
        first_data_line = 2
        body = lines[1:]
    else:
        columns = {
            spec.text_columns[0]: spec.fixed_columns["sentence"],
            spec.label_column: spec.fixed_columns["label"],
        }
        n_fields = None
        body = lines
    label_to_id = {value: i for i, value in enumerate(spec.tsv_label_values)}

    rows = []
    for offset, line in enumerate(body):
        lineno = offset + first_data_line
        fields = line.split("\t")
        if n_fields is None:
            n_fields = len(fields)  # header-less file: the first row sets the width
        if len(fields) != n_fields:
            raise ValueError(
                f"{path}:{lineno}: malformed row, expected {n_fields} tab-separated fields, found {len(fields)}"
            )
        raw_label = fields[columns[spec.label_column]].strip()
        if spec.is_regression:
            try:
                label: float | int = float(raw_label)
            except ValueError as err:
                raise ValueError(
                    f"{path}:{lineno}: label {raw_label!r} is not a number ({spec.name})"
                ) from err
        else:
            if raw_label not in label_to_id:
                raise ValueError(
                    f"{path}:{lineno}: unknown label {raw_label!r} for {spec.name}; "
                    f"expected one of {list(spec.tsv_label_values)}"
                )
            label = label_to_id[raw_label]
        row: dict[str, Any] = {"sentence1": fields[columns[spec.text_columns[0]]]}
        if len(spec.text_columns) == 2:
            row["sentence2"] = fields[columns[spec.text_columns[1]]]
        row["label"] = label
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no data rows")
    return rows


def load_glue_split(task: str | GlueTask, split: str, glue_dir: str | os.PathLike | None = None):
    """Load `split` ("train" or "validation") of a GLUE task as a `datasets.Dataset`.

    Columns: sentence1, [sentence2], label. With `glue_dir` the original TSV files are read from
    `glue_dir/<TASK>/{train,dev}.tsv` (MNLI: dev_matched.tsv); otherwise `nyu-mll/glue` from the hub.
    """
    import datasets

    from balora.repro import rehearsal

    spec = task if isinstance(task, GlueTask) else get_task(task)
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
    if glue_dir:
        filename = "train.tsv" if split == "train" else spec.dev_file
        rows = read_glue_tsv(Path(glue_dir) / spec.tsv_dir / filename, spec)
        columns = {key: [row[key] for row in rows] for key in rows[0]}
        return datasets.Dataset.from_dict(columns)
    hub_split = "train" if split == "train" else spec.hub_validation_split
    try:
        ds = rehearsal.load_hub_dataset("nyu-mll/glue", spec.name, split=hub_split)
    except Exception as err:  # the hub raises many different types when offline
        from balora.repro.data import data_dir

        # An OSError: the command line answers it with one line and exit status 2 (balora.cli.command).
        local = data_dir() / "glue"
        fix = (
            f"The TSVs are in {local}: pass --glue_dir {local}"
            if (local / spec.tsv_dir).is_dir()
            else "Pass --glue_dir with the original GLUE TSV files (data/glue: python scripts/fetch_data.py)"
        )
        raise OSError(
            f"Could not load nyu-mll/glue/{spec.name} from the hub ({type(err).__name__}: {err}). Offline? {fix}"
        ) from err
    # Hub column names differ per task; rename to sentence1/sentence2.
    text = [c for c in ds.column_names if c not in ("label", "idx")]
    renames = {
        old: new for old, new in zip(text, ("sentence1", "sentence2")[: len(text)], strict=True) if old != new
    }
    if renames:
        ds = ds.rename_columns(renames)
    return ds.remove_columns([c for c in ds.column_names if c == "idx"])


def tokenize_dataset(dataset, tokenizer, max_seq_length: int):
    """Tokenise a (sentence1, [sentence2], label) dataset; pair tasks as one segment pair.

    No padding here: batches are padded dynamically by DataCollatorWithPadding.
    Returns a dataset with input_ids, attention_mask, [token_type_ids], labels.
    """
    has_pair = "sentence2" in dataset.column_names

    def encode(batch):
        texts = (batch["sentence1"], batch["sentence2"]) if has_pair else (batch["sentence1"],)
        encoded = tokenizer(*texts, truncation=True, max_length=max_seq_length)
        encoded["labels"] = batch["label"]
        return encoded

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="tokenise")


# --- training-set perturbations (bias probes) ----------------------------------------------------


def _class_id(spec: GlueTask, value: str) -> int:
    """A class given by name ("positive") or id ("1")."""
    if value in spec.label_names:
        return spec.label_names.index(value)
    if value.isdigit() and int(value) < spec.num_labels:
        return int(value)
    raise ValueError(
        f"{spec.name} has no class {value!r}; use one of {list(spec.label_names)} or 0..{spec.num_labels - 1}"
    )


def subsample_class(dataset, task: str | GlueTask, minority_class: str, ratio: float, seed: int):
    """Make one class a minority: keep a seeded random 1/`ratio` share of it against the other classes.

    The minority class keeps round(m / ratio) of its rows (at least 1), where m is the row count of
    the smallest other class, so every other class outnumbers it by about `ratio` : 1 (SST-2 with
    ratio 19: 1:19). All rows of the other classes stay, in their order; the kept minority rows keep
    their positions. The dev set is never touched.

    Args:
        dataset: a `datasets.Dataset` with an integer `label` column (N rows).
        minority_class: class name (e.g. "positive", "contradiction") or id.
        ratio: majority : minority ratio, > 1.
        seed: draws which minority rows stay.

    Returns:
        (the subsampled dataset, {"minority_class", "ratio", "kept", "dropped", "class_counts"}).
    """
    spec = task if isinstance(task, GlueTask) else get_task(task)
    if spec.is_regression:
        raise ValueError(f"{spec.name} is a regression task: it has no classes to subsample")
    if not ratio > 1:
        raise ValueError(f"imbalance_ratio must be > 1 (majority : minority), got {ratio}")
    minority = _class_id(spec, str(minority_class))
    labels = np.asarray(dataset["label"], dtype=np.int64)
    counts = np.bincount(labels, minlength=spec.num_labels)
    others = [int(counts[c]) for c in range(spec.num_labels) if c != minority and counts[c] > 0]
    if counts[minority] == 0 or not others:
        raise ValueError(
            f"{spec.name}: the training rows hold {counts.tolist()} per class; "
            f"class {spec.label_names[minority]!r} and another class must both be present"
        )
    keep_n = max(1, min(int(counts[minority]), round(min(others) / ratio)))
    minority_rows = np.flatnonzero(labels == minority)
    kept_minority = np.random.default_rng(seed).choice(minority_rows, size=keep_n, replace=False)
    keep = np.sort(np.concatenate([np.flatnonzero(labels != minority), kept_minority]))
    new_counts = np.bincount(labels[keep], minlength=spec.num_labels)
    info = {
        "minority_class": spec.label_names[minority],
        "ratio": float(ratio),
        "kept": int(keep_n),
        "dropped": int(counts[minority] - keep_n),
        "class_counts": dict(zip(spec.label_names, map(int, new_counts), strict=True)),
    }
    return dataset.select(keep.tolist()), info


def flip_labels(dataset, task: str | GlueTask, fraction: float, seed: int):
    """Symmetric label noise: a seeded random `fraction` of the rows get a different class, uniformly.

    Exactly round(fraction * N) rows are changed; each takes one of the other C - 1 classes with equal
    probability (binary tasks: the other class). Texts and order are unchanged.

    Args:
        dataset: a `datasets.Dataset` with an integer `label` column (N rows).
        fraction: share of rows to corrupt, in [0, 1).
        seed: draws the rows and their new classes.

    Returns:
        (the dataset with noisy labels, {"fraction", "flipped", "rows"}).
    """
    spec = task if isinstance(task, GlueTask) else get_task(task)
    if spec.is_regression:
        raise ValueError(f"{spec.name} is a regression task: label noise by class flips does not apply")
    if not 0 <= fraction < 1:
        raise ValueError(f"label_noise must be a fraction in [0, 1), got {fraction}")
    labels = np.asarray(dataset["label"], dtype=np.int64)
    rng = np.random.default_rng(seed)
    n_flip = round(fraction * len(labels))
    rows = rng.choice(len(labels), size=n_flip, replace=False)
    # An offset in 1..C-1 added modulo C: uniform over the other classes, never the same one.
    offsets = rng.integers(1, spec.num_labels, size=n_flip)
    noisy = labels.copy()
    noisy[rows] = (labels[rows] + offsets) % spec.num_labels
    info = {"fraction": float(fraction), "flipped": int(n_flip), "rows": len(labels)}
    dataset = dataset.remove_columns("label").add_column("label", noisy.tolist())
    return dataset, info


# --- metrics -----------------------------------------------------------------------------------


def _as_class_ids(predictions: np.ndarray, spec: GlueTask) -> np.ndarray:
    """(N, C) logits -> argmax ids; (N,) integer ids pass through."""
    if predictions.ndim == 2:
        if predictions.shape[1] != spec.num_labels:
            raise ValueError(
                f"{spec.name}: predictions have {predictions.shape[1]} columns, expected {spec.num_labels} classes"
            )
        return predictions.argmax(axis=1)
    if predictions.ndim == 1:
        if not np.all(np.equal(np.mod(predictions, 1), 0)):
            raise ValueError(
                f"{spec.name} is a classification task but got non-integer 1-D predictions; "
                "pass (N, C) logits or class ids"
            )
        return predictions.astype(np.int64)
    raise ValueError(f"predictions must be (N,) or (N, C), got shape {predictions.shape}")


def compute_metrics(task: str | GlueTask, predictions, labels) -> dict[str, float]:
    """The task's official validation metrics.

    Args:
        task: GLUE task name.
        predictions: (N, C) logits or (N,) class ids; for STS-B (N,) or (N, 1) scores.
        labels: (N,) class ids or STS-B gold scores.

    Returns:
        Named metrics as fractions (accuracy, f1, matthews_correlation, pearson, spearmanr as the
        task defines) plus `score`, the paper's headline metric in percent. Classification tasks
        also get `recall_<label name>` per class, `balanced_accuracy` and `macro_f1`, and, from (N, C)
        logits with every class present in the labels, `auroc`: the ROC AUC of the class-1 probability
        for two classes, the macro one-vs-rest AUC for more.

    Raises:
        ValueError: shape mismatch, or classification-style predictions for the regression task
        (and vice versa).
    """
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import f1_score, matthews_corrcoef, recall_score

    spec = task if isinstance(task, GlueTask) else get_task(task)
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        labels = labels.reshape(-1)
    if predictions.shape[0] != labels.shape[0]:
        raise ValueError(f"{predictions.shape[0]} predictions but {labels.shape[0]} labels")
    if labels.shape[0] == 0:
        raise ValueError("no examples to score")

    results: dict[str, float] = {}
    if spec.is_regression:
        if predictions.ndim == 2:
            if predictions.shape[1] != 1:
                raise ValueError(
                    f"{spec.name} is a regression task: predictions must be (N,) or (N, 1) scores, "
                    f"got (N, {predictions.shape[1]}) class logits"
                )
            predictions = predictions[:, 0]
        predictions = predictions.astype(np.float64)
        labels = labels.astype(np.float64)
        results["pearson"] = float(pearsonr(predictions, labels)[0])
        results["spearmanr"] = float(spearmanr(predictions, labels)[0])
    else:
        ids = _as_class_ids(predictions, spec)
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError(f"{spec.name} is a classification task but the labels are not class ids")
        labels = labels.astype(np.int64)
        if "accuracy" in spec.metrics:
            results["accuracy"] = float((ids == labels).mean())
        if "f1" in spec.metrics:
            results["f1"] = float(f1_score(labels, ids))
        if "matthews_correlation" in spec.metrics:
            results["matthews_correlation"] = float(matthews_corrcoef(labels, ids))
        classes = list(range(spec.num_labels))
        recalls = recall_score(labels, ids, labels=classes, average=None, zero_division=0.0)
        for name, recall in zip(spec.label_names, recalls, strict=True):
            results[f"recall_{name}"] = float(recall)
        # Over the classes present in the labels (a class absent from a dev slice has no recall).
        present = np.isin(classes, labels)
        results["balanced_accuracy"] = float(recalls[present].mean())
        results["macro_f1"] = float(f1_score(labels, ids, labels=classes, average="macro", zero_division=0.0))
        if predictions.ndim == 2 and predictions.shape[1] == spec.num_labels and present.all():
            from sklearn.metrics import roc_auc_score

            shifted = predictions.astype(np.float64) - predictions.max(axis=1, keepdims=True)
            probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)  # (N, C) softmax
            results["auroc"] = float(
                roc_auc_score(labels, probs[:, 1])
                if spec.num_labels == 2
                else roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=classes)
            )
    results["score"] = 100.0 * results[spec.headline]
    return results


def majority_class_score(task: str | GlueTask, labels) -> float:
    """The headline score (percent) of always predicting the most frequent label (classification only)."""
    spec = task if isinstance(task, GlueTask) else get_task(task)
    if spec.is_regression:
        raise ValueError(f"{spec.name} is a regression task: it has no majority class")
    labels = np.asarray(labels, dtype=np.int64)
    majority = np.bincount(labels).argmax()
    return compute_metrics(spec, np.full_like(labels, majority), labels)["score"]


# --- models ------------------------------------------------------------------------------------

TINY_CLASSIFIERS = ("tiny-bert", "tiny-roberta", "tiny-deberta", "tiny-gpt2", "tiny-t5")

# Per architecture: LoRA-family target modules (every attention and FFN linear, docs/method.md §4) and the
# task head trained in full. peft never puts an adapter inside a `modules_to_save` module, so "dense"
# skips DeBERTa's pooler and RoBERTa's classifier.dense; on BERT it also adapts the pre-trained pooler.
DEFAULT_TARGET_MODULES = {
    "bert": ["query", "key", "value", "dense"],
    "roberta": ["query", "key", "value", "dense"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj", "dense"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "t5": ["q", "k", "v", "o", "wi", "wo"],
}
# DeBERTa's ContextPooler is not in the pre-trained checkpoint (random init): it belongs to the head.
DEFAULT_MODULES_TO_SAVE = {
    "bert": ["classifier"],
    "roberta": ["classifier"],
    "deberta-v2": ["pooler", "classifier"],
    "gpt2": ["score"],
    "t5": ["classification_head"],
}


def default_target_modules(model_type: str) -> list[str]:
    """LoRA-family target modules for a transformers `model_type` (raises for unknown types)."""
    if model_type not in DEFAULT_TARGET_MODULES:
        raise ValueError(
            f"no default target_modules for model_type {model_type!r}; set target_modules "
            f"explicitly (defaults exist for {sorted(DEFAULT_TARGET_MODULES)})"
        )
    return list(DEFAULT_TARGET_MODULES[model_type])


def default_modules_to_save(model_type: str) -> list[str]:
    """The classification head's module names for a transformers `model_type`."""
    if model_type not in DEFAULT_MODULES_TO_SAVE:
        raise ValueError(f"no default head for model_type {model_type!r}; set modules_to_save explicitly")
    return list(DEFAULT_MODULES_TO_SAVE[model_type])


def tiny_classifier_config(kind: str, vocab_size: int, num_labels: int, pad_token_id: int):
    """A random-init ~1M-parameter config of the given family (hidden 32, 2 layers) for the tests."""
    from transformers import BertConfig, DebertaV2Config, GPT2Config, RobertaConfig, T5Config

    common = dict(vocab_size=vocab_size, num_labels=num_labels, pad_token_id=pad_token_id)
    encoder = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        **common,
    )
    if kind == "tiny-bert":
        return BertConfig(**encoder)
    if kind == "tiny-roberta":
        return RobertaConfig(**encoder)
    if kind == "tiny-deberta":
        return DebertaV2Config(**encoder)
    if kind == "tiny-gpt2":
        return GPT2Config(
            n_embd=32,
            n_layer=2,
            n_head=2,
            n_positions=512,
            bos_token_id=pad_token_id,
            eos_token_id=pad_token_id,
            **common,
        )
    if kind == "tiny-t5":
        return T5Config(
            d_model=32,
            d_ff=64,
            num_layers=2,
            num_heads=2,
            d_kv=16,
            decoder_start_token_id=pad_token_id,
            **common,
        )
    raise ValueError(f"unknown tiny model {kind!r}; choose one of {TINY_CLASSIFIERS}")


def load_classifier(name_or_path: str, task: str | GlueTask, seed: int = 0):
    """(model, tokenizer) for sequence classification/regression on `task`.

    `name_or_path`: a tiny test model name (TINY_CLASSIFIERS: random weights, MiniLM's WordPiece
    tokenizer), an embedded model name ("all-minilm-l6-v2"), a local directory or a hub id.
    STS-B gets a 1-output regression head (MSE loss). GPT-2-style tokenizers without a pad token pad
    with EOS, on the right (the classifier reads the last non-pad token).
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from balora.repro import rehearsal
    from balora.repro.models import minilm_dir, resolve_model_path

    name_or_path = rehearsal.model_name(name_or_path)
    spec = task if isinstance(task, GlueTask) else get_task(task)
    head = dict(num_labels=spec.num_labels)
    if spec.is_regression:
        head["problem_type"] = "regression"
    else:
        head["problem_type"] = "single_label_classification"
        head["id2label"] = dict(enumerate(spec.label_names))
        head["label2id"] = {name: i for i, name in enumerate(spec.label_names)}
    if name_or_path in TINY_CLASSIFIERS:
        tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
        config = tiny_classifier_config(name_or_path, len(tokenizer), spec.num_labels, tokenizer.pad_token_id)
        for key, value in head.items():
            setattr(config, key, value)
        if name_or_path == "tiny-t5":
            # T5's head reads the decoder state at <eos>; with the WordPiece tokenizer that is [SEP].
            config.eos_token_id = tokenizer.sep_token_id
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = AutoModelForSequenceClassification.from_config(config)
        return model, tokenizer
    path = resolve_model_path(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, **head)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{name_or_path}: the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def model_input_columns(model_config) -> list[str]:
    """Tokeniser outputs the model should see: token_type_ids only where the model has segment embeddings."""
    columns = ["input_ids", "attention_mask"]
    if getattr(model_config, "type_vocab_size", 0) and model_config.type_vocab_size > 1:
        columns.append("token_type_ids")
    return columns
