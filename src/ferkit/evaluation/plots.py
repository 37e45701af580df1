"""Figures of an evaluation: the confusion matrix, the reliability diagram and the most
confident mistakes.

They take plain arrays, not the EvaluationReport, so this module depends on nothing else of
ferkit.evaluation (EvaluationReport.save calls it; nothing here calls back).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ferkit.plotting import pyplot


def row_normalise(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its total (the per-class recall on the diagonal); empty rows stay 0."""
    totals = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros(cm.shape, dtype=np.float64), where=totals > 0)


def plot_confusion_matrix(confusion_matrix: np.ndarray, classes: Sequence[str], caption: str,
                          path: str | Path) -> Path:
    """Two panels, counts and row-normalised (rows = true class, columns = predicted), as a PNG."""
    plt = pyplot()
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
    plt = pyplot()
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


def plot_reliability(probabilities: np.ndarray, labels: np.ndarray, caption: str,
                     path: str | Path, n_bins: int | None = None, temperature: float = 1.0
                     ) -> Path:
    """Reliability diagram as a PNG: per confidence bin, the accuracy (bars) against the mean
    confidence (the diagonal is perfect calibration; a gap drawn in red), above a histogram of
    how many faces each bin holds; ECE, mean confidence and accuracy in the legend.

    `probabilities` (n, C) and `labels` (n,) are in the same class order; `temperature` is the
    one already applied to them (shown in the title, 1 = uncalibrated).
    """
    from ferkit.evaluation.metrics import ECE_BINS, calibration_summary, reliability_bins

    n_bins = n_bins or ECE_BINS
    plt = pyplot()
    bins = reliability_bins(probabilities, labels, n_bins)
    summary = calibration_summary(probabilities, labels, n_bins)
    edges, count = bins["edges"], bins["count"]
    width = edges[1] - edges[0]
    centres = edges[:-1] + width / 2
    full = count > 0
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.6, 6.4), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]},
                                      constrained_layout=True)
    top.plot([0, 1], [0, 1], ls="--", color="0.45", lw=1, label="perfect calibration")
    top.bar(centres[full], bins["accuracy"][full], width=width * 0.92, color="#4a7fb5",
            edgecolor="#2b5a87", label="accuracy in the bin")
    gap_low = np.minimum(bins["accuracy"][full], bins["confidence"][full])
    gap = np.abs(bins["accuracy"][full] - bins["confidence"][full])
    top.bar(centres[full], gap, bottom=gap_low, width=width * 0.92, color="#d9534f", alpha=0.45,
            edgecolor="#b52b27", hatch="//", label="gap to mean confidence")
    top.plot(bins["confidence"][full], bins["accuracy"][full], "o", ms=3, color="black",
             label="(mean confidence, accuracy)")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_aspect("auto")
    top.legend(loc="upper left", fontsize=8, frameon=True, framealpha=0.9, edgecolor="none",
               title=(f"ECE {summary['ece']:.4f} ({n_bins} bins)\n"
                      f"mean confidence {summary['mean_confidence']:.4f}, "
                      f"accuracy {summary['accuracy']:.4f}"),
               title_fontsize=8, alignment="left")
    calibrated = ("uncalibrated (T = 1)" if temperature == 1.0
                  else f"temperature T = {temperature:.3f}")
    top.set_title(f"reliability diagram, {calibrated}\n{caption}", fontsize=8)
    bottom.bar(centres, count, width=width * 0.92, color="0.6")
    bottom.set_xlabel("confidence (top-class probability)")
    bottom.set_ylabel("faces")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
