"""Figures of an evaluation: the confusion matrix and the most confident mistakes.

They take plain arrays, not the EvaluationReport, so this module depends on nothing else of
ferkit.evaluation (EvaluationReport.save calls it; nothing here calls back).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def row_normalise(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its total (the per-class recall on the diagonal); empty rows stay 0."""
    totals = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros(cm.shape, dtype=np.float64), where=totals > 0)


def plot_confusion_matrix(confusion_matrix: np.ndarray, classes: Sequence[str], caption: str,
                          path: str | Path) -> Path:
    """Two panels, counts and row-normalised (rows = true class, columns = predicted), as a PNG."""
    plt = _pyplot()
    cm = np.asarray(confusion_matrix)
    norm = row_normalise(cm)
    classes = list(classes)
    size = max(5.0, 0.75 * len(classes) + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size), constrained_layout=True)
    panels = [(axes[0], cm, "counts", "d"), (axes[1], norm, "row-normalised (recall)", ".2f")]
    for ax, values, title, fmt in panels:
        shown = norm  # colour by the row-normalised value in both, so big classes do not dominate
        im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        for i in range(len(classes)):
            for j in range(len(classes)):
                text = format(values[i, j], fmt)
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if shown[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=axes, shrink=0.8, label="fraction of the true class")
    fig.suptitle(caption)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_mistakes(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                  names: Sequence[str], classes: Sequence[str], caption: str, path: str | Path,
                  k: int = 36) -> Path:
    """A grid of the k most confident mistakes: face, true class, predicted class and its score.

    `probabilities` (n, C) and `labels` (n,) are in the order of `classes`; `names` may be empty.
    """
    if images is None:
        raise ValueError("no images to show (evaluate() keeps them)")
    plt = _pyplot()
    preds, scores = probabilities.argmax(axis=1), probabilities.max(axis=1)
    wrong = np.flatnonzero(preds != labels)
    ordered = wrong[np.argsort(-scores[wrong], kind="stable")]
    idx = ordered[:k]
    cols = min(6, max(4, len(idx)))  # at least 4 wide, so the title fits
    rows = max(1, math.ceil(len(idx) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.4 * rows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), idx, strict=False):
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        name = Path(str(names[i])).name if i < len(names) else ""
        ax.set_title(f"true: {classes[labels[i]]}\n"
                     f"pred: {classes[preds[i]]} {scores[i]:.2f}", fontsize=8)
        ax.text(0.5, -0.02, name[:28], transform=ax.transAxes, ha="center", va="top",
                fontsize=6, color="0.35")
    if len(idx) == 0:
        axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center", fontsize=12)
    fig.suptitle(f"most confident mistakes ({len(wrong)} of {len(labels)} wrong)\n"
                 f"{caption}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
