"""curves.png: loss and accuracy per epoch, train vs val (matplotlib, Agg backend, atomic write)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_curves(history: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 4), dpi=80)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.84, wspace=0.22)
    ax_loss, ax_acc = fig.subplots(1, 2)
    marker = "o-" if len(epochs) <= 40 else "-"
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], marker, ms=3, label="train")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], marker, ms=3, label="val")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if history:
        best = max(history, key=lambda h: h["val_acc"])
        ax_acc.axvline(best["epoch"], color="grey", ls=":", lw=1)
        ax_acc.set_title(f"best val {best['val_acc']:.2%} (epoch {best['epoch']})", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path
