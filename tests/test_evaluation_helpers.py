"""Checkpoints for the evaluation, ensemble and CLI tests (helpers only; no tests here).

Made here rather than by the trainer, so these tests depend only on the model registry and the
checkpoint format: a shallow-cnn, optionally given a few Adam steps on the synthetic faces of
tests/synth.py so that its predictions are far from uniform.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from synth import make_faces

from ferkit.classes import CLASSES
from ferkit.models import create_model
from ferkit.models.checkpoint import save_checkpoint


def make_checkpoint(path: Path, *, steps: int = 0, seed: int = 0, mean: float | None = None,
                    std: float | None = None, classes: tuple[str, ...] = CLASSES,
                    arch: str = "shallow-cnn", arch_kwargs: dict | None = None) -> Path:
    """Save a (briefly trained, if steps > 0) model as a ferkit checkpoint at `path`."""
    torch.manual_seed(seed)
    arch_kwargs = dict(arch_kwargs or {})
    model = create_model(arch, num_classes=len(classes), **arch_kwargs)
    images, labels = make_faces(12, seed=seed)
    x = torch.from_numpy(images).float().unsqueeze(1) / 255.0
    mean = float(x.mean()) if mean is None else mean
    std = float(x.std()) if std is None else std
    if steps:
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        y = torch.from_numpy(labels) % len(classes)
        model.train()
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model((x - mean) / std), y)
            loss.backward()
            opt.step()
    model.eval()
    save_checkpoint(path, {"arch": arch, "arch_kwargs": arch_kwargs, "classes": list(classes),
                           "normalization": {"mean": mean, "std": std}, "config": {},
                           "epoch": 1, "metrics": {}, "state_dict": model.state_dict()})
    return path


def make_face_dataset(n_per_class: int = 6, seed: int = 5, classes: tuple[int, ...] | None = None,
                      splits: tuple[str, ...] = ("train", "val", "test")):
    """A FaceDataset built directly (no loader), the faces dealt round-robin over `splits`."""
    from ferkit.data.dataset import FaceDataset

    images, labels = make_faces(n_per_class, seed=seed, classes=classes)
    split = np.array([splits[i % len(splits)] for i in range(len(labels))])
    names = np.array([f"synth:{i}" for i in range(len(labels))], dtype=object)
    return FaceDataset(images, labels, split, names, source="synth")
