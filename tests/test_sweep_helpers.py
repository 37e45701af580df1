"""Shared helpers for the sweep, transfer and report tests: synthetic data, tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from synth import make_faces

from ferkit.data.dataset import FaceDataset

# configurable-cnn kwargs that train in well under a second per epoch on the CPU
TINY = {"filters": 4, "fc_layers": 2, "fc_units": 16, "kernel_size": 3}


def face_dataset(n_per_class: int = 12, val_every: int = 3) -> FaceDataset:
    """Synthetic faces, every `val_every`-th one in the val split."""
    images, labels = make_faces(n_per_class)
    splits = np.array(["train"] * len(labels), dtype=object)
    splits[::val_every] = "val"
    names = np.array([f"synth:{i}" for i in range(len(labels))])
    return FaceDataset(images, labels, splits.astype(str), names, "synth")


def tiny_space(tmp_path: Path, header: str, params: str, model_extra: str = "",
               name: str = "tiny.toml") -> Path:
    """A search space file training configurable-cnn with TINY widths: `header` (sampler,
    budget), extra [model] lines and the [params...] tables."""
    path = tmp_path / name
    path.write_text(f"""
{header}
[train]
model = "configurable-cnn"
batch_size = 32
augment = "none"

[model]
filters = {TINY['filters']}
fc_layers = {TINY['fc_layers']}
fc_units = {TINY['fc_units']}
{model_extra}

{params}
""")
    return path


def tiny_grid_space(tmp_path: Path, stages=(1, 2), extra: str = "") -> Path:
    """A grid search space file over configurable-cnn stages with TINY widths."""
    return tiny_space(tmp_path, f'sampler = "grid"\n{extra}',
                      f"[params.model]\nstages = {list(stages)}")
