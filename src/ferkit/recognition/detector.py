"""Face detection behind a small interface, so another detector can be plugged in.

The default is YuNet through the `yuface` package (libfacedetection, CPU, no weights to
download): about 30-60 ms per 640x480 image, five landmarks per face. A detector is any object
with `detect(rgb) -> list[Detection]`; subclass `Detector` to get the downscaling of large
images for free by implementing `_detect_bgr`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np


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


class Detector:
    """Base class: runs `_detect_bgr` on a copy whose longest side is at most `max_side`."""

    name = "base"

    def __init__(self, min_confidence: float = 0.5, max_side: int = 1280) -> None:
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        self.min_confidence = float(min_confidence)
        self.max_side = int(max_side)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """(H, W, 3) uint8 RGB -> detections, boxes and landmarks in the input's pixels."""
        import cv2

        h, w = rgb.shape[:2]
        factor = 1.0
        longest = max(h, w)
        if longest > self.max_side:
            factor = longest / self.max_side
            small = cv2.resize(rgb, (max(1, round(w / factor)), max(1, round(h / factor))),
                               interpolation=cv2.INTER_AREA)
        else:
            small = rgb
        bgr = np.ascontiguousarray(small[:, :, ::-1])
        found = self._detect_bgr(bgr)
        if factor != 1.0:
            found = [d.scaled(factor) for d in found]
        return [_clip(d, w, h) for d in found]

    def _detect_bgr(self, bgr: np.ndarray) -> list[Detection]:
        raise NotImplementedError


class YuNetDetector(Detector):
    """YuNet (libfacedetection) via the `yuface` package."""

    name = "yunet"

    def _detect_bgr(self, bgr: np.ndarray) -> list[Detection]:
        import yuface

        if min(bgr.shape[:2]) < 8:
            return []
        with warnings.catch_warnings():  # yuface warns above 960 px: only slower, still right
            warnings.simplefilter("ignore", UserWarning)
            scores, boxes, landmarks = yuface.detect(bgr, conf=self.min_confidence)
        out = []
        for score, box, lm in zip(scores, boxes, landmarks, strict=True):
            out.append(Detection(tuple(float(v) for v in box), float(score) / 100.0,
                                 np.asarray(lm, np.float32).reshape(5, 2)))
        return out


def _clip(d: Detection, width: int, height: int) -> Detection:
    """Clip the box to the image (detectors may return boxes that cross the border)."""
    x, y, w, h = d.box
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(width), x + w), min(float(height), y + h)
    return Detection((x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0)), d.score, d.landmarks)


DETECTORS = {"yunet": YuNetDetector}


def create_detector(name: str = "yunet", **kwargs) -> Detector:
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    return DETECTORS[name](**kwargs)
