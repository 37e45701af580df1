"""Synthetic FER-like data for tests: learnable class patterns, written as CSV, folders or zips."""

from __future__ import annotations

import csv
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from ferkit.classes import CLASSES

USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


def class_patterns(seed: int = 0) -> np.ndarray:
    """One fixed smooth 48x48 pattern per class, so a small CNN can learn the labels fast."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((len(CLASSES), 6, 6))
    return np.kron(coarse, np.ones((8, 8)))  # (7, 48, 48) in [0, 1]


def make_faces(
    n_per_class: int, seed: int = 0, classes: tuple[int, ...] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 48, 48) uint8 images and int labels: class pattern plus noise, labels in class order."""
    rng = np.random.default_rng(seed + 1)
    patterns = class_patterns()
    wanted = classes if classes is not None else range(len(CLASSES))
    labels = np.repeat(np.array(wanted), n_per_class)
    noise = rng.normal(0, 20, (len(labels), 48, 48))
    images = np.clip(60 + 130 * patterns[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def write_csv(path: Path, images: np.ndarray, labels: np.ndarray, splits: list[str]) -> Path:
    """Kaggle fer2013.csv format: emotion,pixels,Usage."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["emotion", "pixels", "Usage"])
        for img, label, split in zip(images, labels, splits, strict=True):
            writer.writerow([int(label), " ".join(map(str, img.ravel().tolist())), USAGE[split]])
    return path


def _encode(img: np.ndarray, fmt: str) -> bytes:
    buf = BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return buf.getvalue()


def kaggle_entries(images: np.ndarray, labels: np.ndarray, splits: list[str], fmt: str = "PNG"
                   ) -> dict[str, bytes]:
    """Relative path -> encoded bytes in the Kaggle layout (train/<class>/Training_i.png)."""
    ext = "png" if fmt == "PNG" else "jpg"
    entries = {}
    for i, (img, label, split) in enumerate(zip(images, labels, splits, strict=True)):
        top = "train" if split == "train" else "test"
        entries[f"{top}/{CLASSES[label]}/{USAGE[split]}_{i}.{ext}"] = _encode(img, fmt)
    return entries


def write_folder(root: Path, entries: dict[str, bytes]) -> Path:
    for rel, data in entries.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in entries.items():
            zf.writestr(rel, data)
    return path


def make_csv_dataset(tmp_path: Path, n_per_class: int = 20, seed: int = 0) -> Path:
    """A small fer2013.csv with train/val/test rows (lossless, so tests can compare pixels)."""
    images, labels = make_faces(n_per_class, seed)
    splits = [("train", "train", "train", "val", "test")[i % 5] for i in range(len(labels))]
    return write_csv(tmp_path / "fer2013.csv", images, labels, splits)
