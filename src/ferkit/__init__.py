"""ferkit: facial expression recognition on FER2013."""

from ferkit.classes import CLASSES
from ferkit.version import __version__

__all__ = ["CLASSES", "Recognizer", "__version__", "load_dataset"]


def __getattr__(name: str):
    # Lazy, so `import ferkit` and `ferkit --help` stay fast (no torch import).
    if name == "Recognizer":
        from ferkit.recognition.recognizer import Recognizer

        return Recognizer
    if name == "load_dataset":
        from ferkit.data import load_dataset

        return load_dataset
    raise AttributeError(f"module 'ferkit' has no attribute {name!r}")
