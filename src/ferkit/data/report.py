"""Dataset summaries for `ferkit data inspect`: counts per split and class, and PNG figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ferkit.classes import CLASSES, FACE_SIZE, NUM_CLASSES
from ferkit.data.dataset import FaceDataset
from ferkit.plotting import pyplot


def summarize(ds: FaceDataset) -> dict:
    """{"source", "splits": {split: {"count", "per_class": {all 7 classes}}}, "skipped",
    "warnings"}: skipped entries were left out, entries with warnings were loaded."""
    splits = {}
    for s in ds.split_names:
        counts = np.bincount(ds.labels[ds.splits == s], minlength=NUM_CLASSES)
        splits[s] = {"count": int(counts.sum()),
                     "per_class": {c: int(v) for c, v in zip(CLASSES, counts, strict=True)}}
    return {"source": ds.source, "splits": splits,
            "skipped": [{"entry": s.entry, "reason": s.reason} for s in ds.skipped],
            "warnings": [{"entry": w.entry, "message": w.message} for w in ds.warnings]}




def plot_distribution(ds: FaceDataset, out: Path) -> Path:
    """One PNG: a bar chart of faces per class for each split (one subplot per split)."""
    plt = pyplot()
    summary = summarize(ds)["splits"]
    n = max(1, len(summary))
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.2), squeeze=False)
    colors = plt.get_cmap("tab10")(np.arange(NUM_CLASSES))
    for ax, (split, info) in zip(axes[0], summary.items(), strict=False):
        values = [info["per_class"][c] for c in CLASSES]
        bars = ax.bar(range(NUM_CLASSES), values, color=colors)
        ax.set_xticks(range(NUM_CLASSES), CLASSES, rotation=35, ha="right")
        ax.set_title(f"{split} ({info['count']:,} faces)")
        ax.set_ylabel("faces")
        ax.bar_label(bars, [f"{v:,}" for v in values], fontsize=8)
        ax.margins(y=0.12)
    fig.suptitle(f"Class distribution: {Path(ds.source).name or ds.source}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def sample_mosaic(ds: FaceDataset, split: str, per_class: int = 10, seed: int = 0,
                  pad: int = 2) -> tuple[np.ndarray, list[int]]:
    """A (7 rows x per_class) grid of random faces of one split as one uint8 image.

    Empty cells (a class with fewer faces than per_class) stay white. Also returns the number
    of faces of each class in the split.
    """
    rng = np.random.default_rng(seed)
    cell = FACE_SIZE + pad
    grid = np.full((NUM_CLASSES * cell + pad, per_class * cell + pad), 255, np.uint8)
    part = ds.splits == split
    counts = []
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(part & (ds.labels == c))
        counts.append(len(idx))
        pick = np.sort(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
        for k, i in enumerate(pick):
            top, left = pad + c * cell, pad + k * cell
            grid[top:top + FACE_SIZE, left:left + FACE_SIZE] = ds.images[i]
    return grid, counts


def plot_samples(ds: FaceDataset, split: str, out: Path, per_class: int = 10,
                 seed: int = 0) -> Path:
    """One PNG: a grid of random faces of one split, one row per class (7 x per_class)."""
    plt = pyplot()
    grid, counts = sample_mosaic(ds, split, per_class, seed)
    cell = grid.shape[0] / NUM_CLASSES
    fig, ax = plt.subplots(figsize=(grid.shape[1] / 60 + 1.6, grid.shape[0] / 60 + 0.6))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_yticks([cell * (c + 0.5) for c in range(NUM_CLASSES)],
                  [f"{name} ({n:,})" if n else f"{name} (none)"
                   for name, n in zip(CLASSES, counts, strict=True)])
    ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(f"Sample faces, {split} split")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_figures(ds: FaceDataset, out_dir: Path) -> list[Path]:
    """class_distribution.png plus samples_<split>.png for each split present."""
    out_dir = Path(out_dir)
    paths = [plot_distribution(ds, out_dir / "class_distribution.png")]
    for split in ds.split_names:
        paths.append(plot_samples(ds, split, out_dir / f"samples_{split}.png"))
    return paths
