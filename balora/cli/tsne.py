"""t-SNE of saved last-hidden-layer features (the paper's feature-space figure).

    balora-tsne --features_dir runs/sst2_ba-lora --output_dir figs --step final
    balora-tsne --compare --features_dir runs/bert_lora runs/bert_ba-lora \
        runs/gpt2_lora runs/gpt2_ba-lora --titles "BERT-L LoRA" "BERT-L BA-LoRA" "GPT-2 LoRA" \
        "GPT-2 BA-LoRA" --output_dir figs --step final

Reads `<features_dir>/features_step_<step>.npy` (N, H) and `labels_step_<step>.npy` (N,), embeds with
sklearn TSNE (2 components, perplexity 30, random_state 42, as in the paper), colours by class and
writes `tsne_step_<step>.{pdf,png}` (`tsne_compare_step_<step>.{pdf,png}` with --compare: one panel
per run, two per row, i.e. LoRA | BA-LoRA for each model). Prints the silhouette score of the 2-D
embedding and of the raw features for each run. From a checkout: python tsne_visualization.py ..., the
same command.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np

from balora.cli.command import run_command

logger = logging.getLogger(__name__)


def load_features(features_dir: str | Path, step: str) -> tuple[np.ndarray, np.ndarray]:
    """Load (N, H) features and (N,) labels of one dump; raises with the path when missing."""
    features_dir = Path(features_dir)
    feature_path = features_dir / f"features_step_{step}.npy"
    label_path = features_dir / f"labels_step_{step}.npy"
    for path in (feature_path, label_path):
        if not path.is_file():
            available = (
                sorted(p.name for p in features_dir.glob("features_step_*.npy"))
                if features_dir.is_dir()
                else []
            )
            raise FileNotFoundError(f"{path} not found; dumps present in {features_dir}: {available}")
    features = np.load(feature_path)
    labels = np.load(label_path)
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(
            f"{features_dir}: expected features (N, H) and labels (N,), got {features.shape} and {labels.shape}"
        )
    return features, labels


def is_categorical(labels: np.ndarray) -> bool:
    """Class ids (colour by class, silhouette defined) vs regression scores (colour map, no silhouette)."""
    return bool(np.all(np.equal(np.mod(labels, 1), 0))) and len(np.unique(labels)) <= 20


def embed(features: np.ndarray, perplexity: float = 30.0, random_state: int = 42) -> np.ndarray:
    """sklearn TSNE to 2-D: (N, H) -> (N, 2)."""
    from sklearn.manifold import TSNE

    if perplexity >= features.shape[0]:
        raise ValueError(
            f"perplexity ({perplexity}) must be smaller than the number of points ({features.shape[0]})"
        )
    tsne = TSNE(n_components=2, perplexity=perplexity, random_state=random_state, init="pca")
    return tsne.fit_transform(features.astype(np.float64))


def silhouettes(features: np.ndarray, embedding: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """Silhouette score of the raw features and of the 2-D embedding (None for regression labels)."""
    from sklearn.metrics import silhouette_score

    if not is_categorical(labels) or len(np.unique(labels)) < 2:
        return {"silhouette_raw": None, "silhouette_2d": None}
    return {
        "silhouette_raw": float(silhouette_score(features, labels)),
        "silhouette_2d": float(silhouette_score(embedding, labels)),
    }


def _scatter(
    ax, embedding: np.ndarray, labels: np.ndarray, title: str, class_names: list[str] | None
) -> None:
    import matplotlib

    if is_categorical(labels):
        classes = np.unique(labels)
        cmap = matplotlib.colormaps["tab10"]
        for i, cls in enumerate(classes):
            mask = labels == cls
            name = (
                class_names[int(cls)] if class_names and int(cls) < len(class_names) else f"class {int(cls)}"
            )
            ax.scatter(embedding[mask, 0], embedding[mask, 1], s=6, alpha=0.7, color=cmap(i % 10), label=name)
        ax.legend(loc="best", fontsize=7, markerscale=2)
    else:
        points = ax.scatter(embedding[:, 0], embedding[:, 1], s=6, alpha=0.7, c=labels, cmap="viridis")
        ax.figure.colorbar(points, ax=ax, label="score")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _class_names(features_dir: Path) -> list[str] | None:
    """Class names from the run's metrics.json/config.yaml task, when present."""
    metrics = features_dir / "metrics.json"
    if metrics.is_file():
        task = json.loads(metrics.read_text()).get("task")
        if task:
            from balora.repro.glue import get_task

            names = list(get_task(task).label_names)
            return names or None
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--features_dir", nargs="+", required=True, help="run folder(s) holding features_step_*.npy"
    )
    parser.add_argument("--output_dir", required=True, help="where the pdf/png go")
    parser.add_argument("--step", default="final", help="which dump: 'final' or an optimizer step number")
    parser.add_argument("--compare", action="store_true", help="one figure, one panel per run, two per row")
    parser.add_argument("--titles", nargs="+", default=None, help="panel titles (default: folder names)")
    parser.add_argument("--perplexity", type=float, default=30.0, help="TSNE perplexity (paper: 30)")
    parser.add_argument("--random_state", type=int, default=42, help="TSNE seed (paper: 42)")
    args = parser.parse_args(argv)
    if len(args.features_dir) > 1 and not args.compare:
        parser.error("several --features_dir need --compare")
    if args.titles and len(args.titles) != len(args.features_dir):
        parser.error(f"--titles has {len(args.titles)} entries for {len(args.features_dir)} --features_dir")
    return args


def main(argv: list[str] | None = None) -> dict[str, dict[str, float | None]]:
    """Make the figure; returns {title: {"silhouette_raw", "silhouette_2d"}}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args = parse_args(argv)
    dirs = [Path(d) for d in args.features_dir]
    titles = args.titles or [d.name for d in dirs]
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    n_cols = 2 if len(dirs) > 1 else 1
    n_rows = math.ceil(len(dirs) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.5 * n_cols, 4.2 * n_rows), squeeze=False)
    scores: dict[str, dict[str, float | None]] = {}
    for i, (features_dir, title) in enumerate(zip(dirs, titles, strict=True)):
        features, labels = load_features(features_dir, args.step)
        embedding = embed(features, args.perplexity, args.random_state)
        scores[title] = silhouettes(features, embedding, labels)
        s = scores[title]
        fmt = lambda v: "n/a (regression labels)" if v is None else f"{v:.4f}"  # noqa: E731
        print(
            f"{title}: N={features.shape[0]} H={features.shape[1]} "
            f"silhouette_2d={fmt(s['silhouette_2d'])} silhouette_raw={fmt(s['silhouette_raw'])}"
        )
        _scatter(axes[i // n_cols][i % n_cols], embedding, labels, title, _class_names(features_dir))
    for j in range(len(dirs), n_rows * n_cols):
        axes[j // n_cols][j % n_cols].axis("off")
    fig.tight_layout()
    stem = f"tsne_compare_step_{args.step}" if args.compare else f"tsne_step_{args.step}"
    for suffix in (".pdf", ".png"):
        fig.savefig(output_dir / f"{stem}{suffix}", dpi=150)
    plt.close(fig)
    (output_dir / f"{stem}_silhouette.json").write_text(json.dumps(scores, indent=2) + "\n")
    print(f"wrote {output_dir / (stem + '.pdf')} and .png")
    return scores


def cli() -> int:
    """Console entry point `balora-tsne` (and `python tsne_visualization.py`): returns the exit status."""
    return run_command(main)


if __name__ == "__main__":
    sys.exit(cli())
