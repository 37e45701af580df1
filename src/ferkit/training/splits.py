"""Which faces a run trains and validates on.

Validation is the source's "val" split (FER2013 PublicTest) unless a holdout fraction is given (or
the source has no val split): then a fixed, stratified slice of Training, drawn with its own seed,
is held out. Hyper-parameters chosen on that slice never see PublicTest or PrivateTest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from ferkit.classes import NUM_CLASSES
from ferkit.data.dataset import FaceDataset
from ferkit.errors import DataError

DEFAULT_HOLDOUT = 0.1


@dataclass
class TrainValSplit:
    train_images: np.ndarray  # uint8 (N, 48, 48)
    train_labels: np.ndarray  # int64 (N,)
    val_images: np.ndarray
    val_labels: np.ndarray
    val_source: str  # "val split" or "holdout 10% of train"
    notes: list[str] = field(default_factory=list)  # what the caller should tell the user

    @property
    def class_counts(self) -> np.ndarray:
        return np.bincount(self.train_labels, minlength=NUM_CLASSES)

    def digests(self) -> dict[str, str]:
        """Content digests of the training and validation faces and labels: a resumed run must
        continue on exactly the data it started on."""
        return {"train": faces_digest(self.train_images, self.train_labels),
                "val": faces_digest(self.val_images, self.val_labels)}


def faces_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """blake2b of the pixels, labels and shape (about 0.1 s for all of FER2013)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((images.shape, str(images.dtype))).encode())
    h.update(np.ascontiguousarray(images).data)
    h.update(np.ascontiguousarray(labels, dtype=np.int64).data)
    return h.hexdigest()


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted positions (into `labels`) of a per-class `fraction` slice; same inputs, same slice.

    Each class contributes round(fraction * count) faces, and at least one when it has two or more,
    so a rare class (FER2013 disgust) is still measured.
    """
    rng = np.random.default_rng(seed)
    held = []
    for c in range(int(labels.max(initial=-1)) + 1):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        k = int(round(fraction * len(members)))
        if fraction > 0 and len(members) >= 2:
            k = min(max(k, 1), len(members) - 1)
        held.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)


def split_train_val(dataset: FaceDataset, holdout: float | None = None, holdout_seed: int = 0,
                    limit: int = 0) -> TrainValSplit:
    """Training faces and validation faces of a dataset.

    limit: keep N training faces, a fixed random subset (so the class mix is kept even when the
    source lists faces class by class); the holdout is drawn before, so it does not move.
    """
    train_pos = np.flatnonzero(dataset.splits == "train")
    if len(train_pos) == 0:
        present = ", ".join(dataset.split_names) or "none"
        raise DataError(f"{dataset.source or 'dataset'}: no training faces (splits present: "
                        f"{present}); training needs a 'train' split (FER2013 Usage=Training or "
                        "a train/ folder)")
    labels = np.asarray(dataset.labels, dtype=np.int64)
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DataError(f"{dataset.source or 'dataset'}: labels must be 0..{NUM_CLASSES - 1}")
    val_pos = np.flatnonzero(dataset.splits == "val")
    if holdout is None:
        holdout = 0.0 if len(val_pos) else DEFAULT_HOLDOUT
    if holdout > 0:
        held = stratified_holdout(labels[train_pos], holdout, holdout_seed)
        keep = np.ones(len(train_pos), dtype=bool)
        keep[held] = False
        val_pos, train_pos = train_pos[held], train_pos[keep]
        val_source = f"holdout {holdout:.0%} of train (seed {holdout_seed})"
    else:
        val_source = "val split"
    if len(val_pos) == 0:
        raise DataError(f"{dataset.source or 'dataset'}: no validation faces: the source has no "
                        "val split and --holdout is 0; set --holdout 0.1")
    notes = []
    if limit and limit >= len(train_pos):
        notes.append(f"--limit {limit}: the data has only {len(train_pos):,} training faces; "
                     "training on all of them")
    if limit and limit < len(train_pos):
        # Image folders list faces class by class, so the literal first N would all be "angry":
        # take the first N of a fixed shuffle instead (same faces for every run and seed).
        order = np.random.default_rng(holdout_seed).permutation(len(train_pos))
        train_pos = np.sort(train_pos[order[:limit]])
    if len(train_pos) == 0:
        raise DataError(f"{dataset.source or 'dataset'}: no training faces left after the holdout")
    return TrainValSplit(dataset.images[train_pos], labels[train_pos], dataset.images[val_pos],
                         labels[val_pos], val_source, notes)


def normalization_stats(images: np.ndarray) -> tuple[float, float]:
    """Mean and std of the training pixels on the [0, 1] scale (as ferkit Predictor expects)."""
    hist = np.bincount(np.asarray(images, dtype=np.uint8).ravel(), minlength=256).astype(np.float64)
    values = np.arange(256) / 255.0
    total = max(hist.sum(), 1.0)
    mean = float((hist * values).sum() / total)
    std = float(np.sqrt((hist * (values - mean) ** 2).sum() / total))
    return mean, max(std, 1e-3)
