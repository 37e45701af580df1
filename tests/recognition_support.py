"""Shared helpers for the recognition tests: a small checkpoint, sample faces, a tiny video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ferkit.classes import CLASSES
from ferkit.models.checkpoint import DEFAULT_WEIGHTS
from ferkit.recognition.samples import SAMPLE_PANELS, SAMPLE_PHOTO


def grace_hopper_path() -> Path:
    """matplotlib's public-domain grace_hopper.jpg (matplotlib is a ferkit dependency)."""
    import matplotlib.cbook as cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def panel(name: str) -> np.ndarray:
    """One photograph of the bundled sample composite, as an RGB array."""
    x, y, w, h = SAMPLE_PANELS[name]
    rgb = np.asarray(Image.open(SAMPLE_PHOTO).convert("RGB"))
    return np.ascontiguousarray(rgb[y:y + h, x:x + w])


def shared_checkpoint(tmp_path_factory) -> Path:
    """One fixture checkpoint per test session, shared by the recognition test modules."""
    path = tmp_path_factory.getbasetemp() / "recognition-fixture" / "model.pt"
    return path if path.exists() else make_checkpoint(path)


def make_checkpoint(path: Path, train_steps: int = 2) -> Path:
    """A shallow-cnn checkpoint, trained a few SGD steps on synthetic faces (about a second)."""
    import torch
    from synth import make_faces

    from ferkit.models.checkpoint import save_checkpoint
    from ferkit.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("shallow-cnn")
    images, labels = make_faces(8, seed=3)
    mean, std = float(images.mean() / 255), float(images.std() / 255)
    x = (torch.as_tensor(images).float().unsqueeze(1) / 255 - mean) / std
    y = torch.as_tensor(labels)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(train_steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    save_checkpoint(path, {"arch": "shallow-cnn", "arch_kwargs": {}, "classes": list(CLASSES),
                           "normalization": {"mean": mean, "std": std}, "config": {},
                           "epoch": 1, "metrics": {}, "state_dict": model.state_dict()})
    return path


def model_for_tests(fixture_checkpoint: Path) -> str:
    """The bundled model when this install has one, else the fixture checkpoint."""
    return "default" if DEFAULT_WEIGHTS.exists() else str(fixture_checkpoint)


def write_clip(path: Path, frames: int = 12, size: tuple[int, int] = (320, 240),
               fps: float = 10.0) -> Path:
    """A short mp4v clip of the astronaut panel, shifted a few pixels per frame."""
    import cv2

    w, h = size
    face = panel("astronaut")
    face = cv2.resize(face, (h, h), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for i in range(frames):
        canvas = np.full((h, w, 3), 90, np.uint8)
        x0 = 4 * i
        canvas[:, x0:x0 + h] = face[:, : w - x0] if x0 + h > w else face
        writer.write(np.ascontiguousarray(canvas[:, :, ::-1]))
    writer.release()
    return path
