"""FaceDataset: the one in-memory form every data source is read into."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ferkit.classes import CLASSES, FACE_SIZE, NUM_CLASSES

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class SkippedItem:
    """An input entry left out under --skip-bad, with the reason it was bad."""

    entry: str  # e.g. "fer2013.csv:line 17" or "train/happy/x.jpg"
    reason: str


@dataclass(frozen=True)
class LoadWarning:
    """An entry that was loaded, but whose decoder complained (e.g. libjpeg's "Corrupt JPEG
    data: 12 extraneous bytes before marker 0xd9"): worth a look, not worth dropping."""

    entry: str
    message: str


@dataclass
class FaceDataset:
    """Faces as uint8 (N, 48, 48), labels 0..6 in CLASSES order, a split name per face.

    `names` holds where each face came from (file path inside the source, or "file:line N"),
    so reports such as the audit can point at the exact entry.
    """

    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    names: np.ndarray
    source: str = ""
    skipped: list[SkippedItem] = field(default_factory=list)
    warnings: list[LoadWarning] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.shape[1:] != (FACE_SIZE, FACE_SIZE):
            raise ValueError(f"images must be uint8 (N, 48, 48), got {self.images.dtype} "
                             f"{self.images.shape}")
        if not (len(self.labels) == len(self.splits) == len(self.names) == n):
            raise ValueError("images, labels, splits and names must have the same length")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def classes(self) -> tuple[str, ...]:
        return CLASSES

    @property
    def split_names(self) -> list[str]:
        """Splits present, in train/val/test order."""
        present = set(np.unique(self.splits).tolist())
        return [s for s in SPLITS if s in present]

    def subset(self, index: np.ndarray) -> FaceDataset:
        return FaceDataset(self.images[index], self.labels[index], self.splits[index],
                           self.names[index], self.source, [])

    def split(self, name: str) -> FaceDataset:
        """The faces of one split (empty if the source has none)."""
        return self.subset(np.flatnonzero(self.splits == name))

    def class_counts(self) -> np.ndarray:
        """Number of faces per class, length 7."""
        return np.bincount(self.labels, minlength=NUM_CLASSES)


@dataclass
class DecodedFaces:
    """What a source's reader (csvio.read_csv, imagefolders.read_images) hands back: the faces it
    decoded, as arrays, the entries it left out and those whose decoder warned."""

    images: np.ndarray  # uint8 (N, 48, 48)
    labels: np.ndarray  # int64, 0..6 in CLASSES order
    splits: np.ndarray  # "train", "val" or "test" per face
    names: np.ndarray  # where each face came from (entry name or "file line N")
    skipped: list[SkippedItem] = field(default_factory=list)
    warnings: list[LoadWarning] = field(default_factory=list)

    def to_dataset(self, source: str) -> FaceDataset:
        """The FaceDataset of these faces, `source` being how messages name where they came."""
        return FaceDataset(self.images, self.labels, self.splits.astype(str),
                           self.names.astype(str), source, self.skipped, self.warnings)
