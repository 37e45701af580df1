"""Face: one detected face and its predicted expression."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Face:
    """A face found in an image: box in pixels of the original image, and the expression on it.

    flags name quality problems that make the prediction less trustworthy ("small", "blurry"),
    so callers can filter; such faces are still reported, never silently dropped.
    """

    box: tuple[int, int, int, int]  # x, y, w, h
    expression: str
    score: float  # probability of `expression`
    probabilities: dict[str, float]
    detection_score: float = 1.0
    landmarks: list[tuple[int, int]] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    # The aligned 48x48 uint8 grayscale crop that was classified (None when not kept).
    crop: Any = field(default=None, repr=False, compare=False)

    @property
    def area(self) -> int:
        return int(self.box[2]) * int(self.box[3])

    def to_dict(self) -> dict:
        return {
            "box": [int(v) for v in self.box],
            "expression": self.expression,
            "score": round(float(self.score), 4),
            "probabilities": {k: round(float(v), 4) for k, v in self.probabilities.items()},
            "detection_score": round(float(self.detection_score), 4),
            "flags": list(self.flags),
        }
