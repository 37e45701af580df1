"""Reading FER datasets (CSV, image folders, zips) into one in-memory form, and exploring them."""

from ferkit.classes import FACE_SIZE
from ferkit.data.dataset import SPLITS, FaceDataset, LoadWarning, SkippedItem

__all__ = ["FACE_SIZE", "SPLITS", "FaceDataset", "LoadWarning", "SkippedItem", "load_dataset"]


def load_dataset(path, *, skip_bad: bool = False, use_cache: bool = True,
                 progress=None) -> FaceDataset:
    """Load a CSV, image folder or zip (see ferkit.data.loading).

    progress: optional callback progress(done, total), called while decoding on a cache miss.
    """
    from ferkit.data.loading import load_dataset as _load

    return _load(path, skip_bad=skip_bad, use_cache=use_cache, progress=progress)
