"""The bias probes' training-set perturbations (minority subsample, label flips) and class-balance metrics."""

import json

import datasets
import numpy as np
import pytest
from test_glue_run import TINY, _tiny_glue

from balora.cli import finetune_glue
from balora.repro import glue


def _labelled(labels: list[int]) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"sentence1": [f"row {i}" for i in range(len(labels))], "label": labels}
    )


def test_subsample_class_keeps_one_in_ratio_of_the_minority_and_all_other_rows():
    ds = _labelled([0] * 380 + [1] * 500)
    out, info = glue.subsample_class(ds, "sst2", "positive", 19, seed=1)
    labels = np.asarray(out["label"])
    assert (labels == 0).sum() == 380 and (labels == 1).sum() == 20  # round(380 / 19)
    assert info == {
        "minority_class": "positive",
        "ratio": 19.0,
        "kept": 20,
        "dropped": 480,
        "class_counts": {"negative": 380, "positive": 20},
    }
    # The other class is untouched and in order; the draw depends on the seed only.
    assert out["sentence1"][:380] == ds["sentence1"][:380]
    again, _ = glue.subsample_class(ds, "sst2", "1", 19, seed=1)
    other, _ = glue.subsample_class(ds, "sst2", "1", 19, seed=2)
    assert again["sentence1"] == out["sentence1"] and other["sentence1"] != out["sentence1"]


def test_subsample_class_on_three_classes_uses_the_smallest_other_class():
    ds = _labelled([0] * 100 + [1] * 60 + [2] * 90)
    out, info = glue.subsample_class(ds, "mnli", "contradiction", 3, seed=0)
    assert info["class_counts"] == {"entailment": 100, "neutral": 60, "contradiction": 20}
    assert len(out) == 180


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(minority_class="neutral", ratio=19), "no class 'neutral'"),
        (dict(minority_class="positive", ratio=1.0), "must be > 1"),
    ],
)
def test_subsample_class_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        glue.subsample_class(_labelled([0, 1, 1]), "sst2", seed=0, **bad)
    with pytest.raises(ValueError, match="regression"):
        glue.subsample_class(_labelled([0, 1]), "stsb", "0", 2, seed=0)


@pytest.mark.parametrize("task,num_labels", [("sst2", 2), ("mnli", 3)])
def test_flip_labels_changes_exactly_the_fraction_to_other_classes(task, num_labels):
    rng = np.random.default_rng(0)
    clean = rng.integers(0, num_labels, size=1000).tolist()
    noisy_ds, info = glue.flip_labels(_labelled(clean), task, 0.2, seed=7)
    noisy = np.asarray(noisy_ds["label"])
    changed = noisy != np.asarray(clean)
    assert changed.sum() == 200 and info == {"fraction": 0.2, "flipped": 200, "rows": 1000}
    assert noisy.min() >= 0 and noisy.max() < num_labels
    assert noisy_ds["sentence1"] == [f"row {i}" for i in range(1000)]
    if num_labels == 3:  # uniform over the two other classes: both offsets occur
        offsets = (noisy[changed] - np.asarray(clean)[changed]) % 3
        assert set(offsets.tolist()) == {1, 2}
    same_seed, _ = glue.flip_labels(_labelled(clean), task, 0.2, seed=7)
    assert same_seed["label"] == noisy_ds["label"]
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        glue.flip_labels(_labelled(clean), task, 1.0, seed=0)


def test_class_balance_metrics():
    # 4 negatives (3 right), 2 positives (1 right).
    labels = np.array([0, 0, 0, 0, 1, 1])
    preds = np.array([0, 0, 0, 1, 1, 0])
    m = glue.compute_metrics("sst2", preds, labels)
    assert m["recall_negative"] == pytest.approx(0.75) and m["recall_positive"] == pytest.approx(0.5)
    assert m["balanced_accuracy"] == pytest.approx(0.625)
    f1_neg, f1_pos = 2 * 3 / (2 * 3 + 1 + 1), 2 * 1 / (2 * 1 + 1 + 1)
    assert m["macro_f1"] == pytest.approx((f1_neg + f1_pos) / 2)
    assert m["score"] == pytest.approx(100 * 4 / 6)
    assert "auroc" not in m  # class ids carry no ranking
    # Logits whose argmax is always the majority class but that rank every positive first: recall 0,
    # balanced accuracy 0.5, AUROC 1 (threshold-free).
    logits = np.stack([np.full(6, 2.0), np.array([0.1, 0.2, 0.3, 0.4, 0.9, 1.0])], axis=1)
    m = glue.compute_metrics("sst2", logits, labels)
    assert m["recall_positive"] == 0.0 and m["balanced_accuracy"] == 0.5 and m["auroc"] == 1.0
    # Three classes: macro one-vs-rest, brute force by pair counting per class.
    rng = np.random.default_rng(0)
    labels3, logits3 = rng.integers(0, 3, 60), rng.normal(size=(60, 3))
    probs = np.exp(logits3) / np.exp(logits3).sum(1, keepdims=True)
    per_class = []
    for c in range(3):
        pos, neg = probs[labels3 == c, c], probs[labels3 != c, c]
        per_class.append(np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg]))
    assert glue.compute_metrics("mnli", logits3, labels3)["auroc"] == pytest.approx(np.mean(per_class))
    assert glue.validate_metric("sst2", "eval_auroc") == "auroc"
    assert glue.validate_metric("mnli", "eval_recall_contradiction") == "recall_contradiction"
    with pytest.raises(ValueError, match="regression"):
        glue.validate_metric("stsb", "balanced_accuracy")


def test_finetune_glue_trains_on_the_perturbed_set_and_records_it(tmp_path):
    glue_dir = _tiny_glue(tmp_path / "glue")  # RTE: 20 entailment, 20 not_entailment rows
    out = tmp_path / "rte"
    metrics = finetune_glue.main(
        [
            "--task_name",
            "rte",
            "--glue_dir",
            str(glue_dir),
            "--model_name_or_path",
            "tiny-bert",
            "--method",
            "lora",
            "--output_dir",
            str(out),
            "--minority_class",
            "entailment",
            "--imbalance_ratio",
            "4",
            "--label_noise",
            "0.25",
            *TINY,
        ]
    )
    record = json.loads((out / "metrics.json").read_text())["train_perturbation"]
    assert record["imbalance"]["class_counts"] == {"entailment": 5, "not_entailment": 20}
    assert record["label_noise"] == {"fraction": 0.25, "flipped": 6, "rows": 25} and record["seed"] == 42
    assert metrics["train_samples"] == 25 and metrics["eval_samples"] == 40  # the dev set is untouched
    assert {"recall_entailment", "recall_not_entailment", "balanced_accuracy", "macro_f1"} <= set(
        metrics["final"]
    )
    # The per-item dev predictions of the final model agree with its dev metrics (paired comparisons read them).
    rows = [json.loads(line) for line in (out / "eval_dev" / "samples.jsonl").read_text().splitlines()]
    dev = json.loads((out / "eval_dev" / "metrics.json").read_text())
    assert [r["task_id"] for r in rows] == list(range(40)) and dev["n"] == 40
    assert np.mean([r["correct"] for r in rows]) == pytest.approx(metrics["final"]["accuracy"])
    assert dev["score"] == pytest.approx(metrics["final_score"]) and dev["protocol"] == "glue-dev"
    # The stored logits are the model's float32 values, unrounded: they give back the prediction and the
    # metrics exactly (a tiny model's near-equal logits, rounded, would tie and move the AUROC).
    stored = np.array([r["logits"] for r in rows])
    logits = stored.astype(np.float32)
    assert (logits.astype(np.float64) == stored).all()
    assert (logits.argmax(1) == [r["prediction"] for r in rows]).all()
    labels = [r["label"] for r in rows]
    assert glue.compute_metrics("rte", logits, labels)["auroc"] == metrics["final"]["auroc"]


def test_finetune_glue_imbalance_flags_go_together(tmp_path):
    with pytest.raises(ValueError, match="go together"):
        finetune_glue.main(
            [
                "--task_name",
                "rte",
                "--glue_dir",
                str(tmp_path),
                "--model_name_or_path",
                "tiny-bert",
                "--output_dir",
                str(tmp_path / "x"),
                "--minority_class",
                "entailment",
                *TINY,
            ]
        )


def test_probe_tables_paired_rows_and_figures_from_result_folders(tmp_path):
    """mini_imbalance / mini_label_noise tables, the paired dev table and the imbalance figure, built from
    result folders laid out as scripts/mini_probes.sh writes them."""
    from test_results import write_run

    import aggregate_results
    import plot_results
    from balora.repro import paired, results

    root = tmp_path / "results"
    recall = {"lora": 0.10, "pissa": 0.20, "ba-lora": 0.30}
    for seed in (42, 1024, 2024):
        for method, value in recall.items():
            for ratio in (4, 19, 49):
                final = {
                    "accuracy": 0.6,
                    "recall_positive": value / max(1, ratio // 19),
                    "balanced_accuracy": 0.55,
                    "macro_f1": 0.5,
                    "score": 60.0,
                }
                path = write_run(
                    root,
                    "mini/imbalance",
                    f"sst2_{method}_positive1to{ratio}",
                    seed,
                    {"final": final, "score": 60.0, "trainable_params": 1000},
                    evals={"dev": {"protocol": "glue-dev", "protocol_version": "1", "n": 4}},
                )
                correct = [1, 1, 0, int(method == "ba-lora")]
                (path / "eval" / "dev.samples.jsonl").write_text(
                    "".join(json.dumps({"task_id": i, "correct": c}) + "\n" for i, c in enumerate(correct))
                )
    table = results.build_table(results.TABLES["mini_imbalance"](), root)
    cell = table.cells["ba-lora"]["recall49"]
    assert cell.n == 3 and cell.mean == pytest.approx(100 * 0.30 / 2)
    built = paired.build_paired(paired.PAIRED_TABLES["mini_probes_dev_paired"](), root)
    row = next(r for r in built["rows"] if r["label"] == "1:19, BA-LoRA − PiSSA")
    assert row["n_seeds"] == 3 and row["mean"] == pytest.approx(0.25)
    assert row["seeds"][42].a_better == 1 and row["seeds"][42].n == 4
    aggregate_results.main(
        [
            "mini_imbalance",
            "mini_probes_dev_paired",
            "--results_dir",
            str(root),
            "--out_dir",
            str(tmp_path / "tables"),
        ]
    )
    assert "1:49 minority recall" in (tmp_path / "tables" / "mini_imbalance.md").read_text()
    written = plot_results.main(
        ["mini_imbalance", "--results_dir", str(root), "--out_dir", str(tmp_path / "fig")]
    )
    assert any(p.endswith("mini_imbalance.png") for p in written["mini_imbalance"])
