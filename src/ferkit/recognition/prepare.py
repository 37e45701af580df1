"""The half of recognition before the classifier: read a picture, detect its faces, align them.

`Preparer` holds only what that needs (the detector and the decode size), so it pickles, and
this module imports no torch: `ferkit predict` on a folder runs it in worker processes, because
YuNet (`yuface`) holds the GIL and two detections in threads never overlap (see
ferkit.recognition.pipeline). Recognizer runs the same Preparer in its own process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ferkit.classes import FACE_SIZE
from ferkit.errors import FerkitError
from ferkit.images import DecodedImage, to_gray
from ferkit.recognition.align import align_face
from ferkit.recognition.detector import Detection, Detector
from ferkit.recognition.images import load_image


@dataclass
class Prepared:
    """An image after detection and alignment, before classification."""

    loaded: DecodedImage
    detections: list[Detection]  # in pixels of loaded.array, left to right
    crops: np.ndarray  # (N, 48, 48) uint8 aligned faces


@dataclass(frozen=True)
class Preparer:
    detector: Detector  # anything with detect(rgb) -> list[Detection]
    decode_side: int  # files are decoded at most this large (the finer detection pass's size)

    def load(self, image) -> DecodedImage:
        return load_image(image, self.decode_side)

    def detect(self, loaded: DecodedImage) -> list[Detection]:
        """Detections in pixels of loaded.array, left to right."""
        found = list(self.detector.detect(loaded.array))
        found.sort(key=lambda d: (d.box[0], d.box[1]))
        return found

    def detect_and_align(self, loaded: DecodedImage) -> tuple[list[Detection], np.ndarray]:
        """Detections in pixels of loaded.array (left to right) and their aligned crops."""
        found = self.detect(loaded)
        if not found:
            return [], np.zeros((0, FACE_SIZE, FACE_SIZE), np.uint8)
        gray = to_gray(loaded.array)
        return found, np.stack([align_face(gray, d) for d in found])

    def prepare(self, image) -> Prepared:
        loaded = self.load(image)
        return Prepared(loaded, *self.detect_and_align(loaded))

    def prepare_or_error(self, image) -> Prepared | str:
        """prepare(), with a bad file's error (which names it) as the result instead."""
        try:
            return self.prepare(image)
        except FerkitError as exc:
            return str(exc)


_worker: Preparer | None = None  # this worker process's Preparer (set by init_worker)


def init_worker(preparer: Preparer) -> None:
    global _worker
    _worker = preparer


def prepare_in_worker(path) -> Prepared | str:
    """A worker process's task: its Preparer on one path."""
    assert _worker is not None, "init_worker was not called in this process"
    return _worker.prepare_or_error(path)
