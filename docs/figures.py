"""Draw the dataset figures of docs/datasets.md: ``python docs/figures.py`` (writes docs/img/rotshapes.png)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.datasets import create_dataset  # noqa: E402
from bench.datasets.rotshapes import CLASSES  # noqa: E402

IMG = Path(__file__).resolve().parent / "img"


def rotshapes_samples(path: Path = IMG / "rotshapes.png", per_class: int = 8) -> Path:
    """The first `per_class` training images of every class, one row per class, as the models see them."""
    train = create_dataset("rotshapes", "train")
    fig, axes = plt.subplots(len(CLASSES), per_class, figsize=(per_class * 0.9 + 1.3, len(CLASSES) * 0.9))
    for k, name in enumerate(CLASSES):
        index = (train.labels == k).nonzero().flatten()[:per_class]
        for ax, i in zip(axes[k], index.tolist()):
            ax.imshow(train.images[i, 0], cmap="gray", vmin=-1.0, vmax=3.0)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        axes[k, 0].set_ylabel(f"{k}: {name}", rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("rotshapes: training images per class (normalised; 0 outside the disk)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(rotshapes_samples())
