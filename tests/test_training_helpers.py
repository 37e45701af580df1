"""Shared helpers for the training tests: synthetic FaceDatasets and a tiny, fast model config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from synth import make_faces

from ferkit.data.dataset import FaceDataset
from ferkit.training.config import TrainConfig

# A CPU-cheap CNN from the zoo (2 conv stages of 8/16 filters, one hidden FC layer of 32).
TINY_MODEL = "configurable-cnn"
TINY_KWARGS = {"stages": 2, "filters": 8, "fc_layers": 2, "fc_units": 32}
TIMING = ("epoch_seconds", "images_per_s")


def make_face_dataset(n_per_class: int = 24, val_every: int | None = 4, seed: int = 0,
                      classes: tuple[int, ...] | None = None) -> FaceDataset:
    """Synthetic faces; every `val_every`-th face is in the val split (None: all train)."""
    images, labels = make_faces(n_per_class, seed, classes)
    splits = np.array(["train"] * len(labels), dtype=object)
    if val_every:
        splits[::val_every] = "val"
    names = np.array([f"synth:{i}" for i in range(len(labels))])
    return FaceDataset(images, labels, splits.astype(str), names, "synth")


def tiny_config(out: Path, **overrides) -> TrainConfig:
    base = dict(model=TINY_MODEL, model_kwargs=dict(TINY_KWARGS), epochs=2, batch_size=32,
                lr=0.05, device="cpu", seed=0, out=str(out), augment="light", threads=1)
    base.update(overrides)
    return TrainConfig(**base)


def learning_metrics(rows: list[dict]) -> list[dict]:
    """metrics.jsonl rows without the timing fields (which differ between identical runs)."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
