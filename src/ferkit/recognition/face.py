"""Face: one detected face and its predicted expression."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Face:
    """A face found in an image: box in pixels of the original image, and the expression on it.

    flags name quality problems that make the prediction less trustworthy ("small", "blurry"),
    so callers can filter; such faces are still reported, never silently dropped.

    In a video or from a camera (ferkit.recognition.tracking), `track` names the person from
    frame to frame and `smoothed` holds the probabilities averaged along the track; the label
    drawn is then the smoothed one (`shown_expression`), steadier than the raw `expression`.
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
    track: int | None = None  # track id in a video or camera stream (1, 2, ...)
    smoothed: dict[str, float] | None = None  # probabilities averaged along the track

    @property
    def shown_expression(self) -> str:
        """The label to show: the smoothed one where there is one, else the raw one."""
        if not self.smoothed:
            return self.expression
        return max(self.smoothed, key=self.smoothed.__getitem__)

    @property
    def shown_score(self) -> float:
        """The probability of `shown_expression` (smoothed where there is smoothing)."""
        if not self.smoothed:
            return self.score
        return float(self.smoothed[self.shown_expression])

    @property
    def area(self) -> int:
        return int(self.box[2]) * int(self.box[3])

    def to_dict(self) -> dict:
        """JSON-ready; `track` and `smoothed` only where tracking set them."""
        record: dict = {
            "box": [int(v) for v in self.box],
            "expression": self.expression,
            "score": round(float(self.score), 4),
            "probabilities": {k: round(float(v), 4) for k, v in self.probabilities.items()},
            "detection_score": round(float(self.detection_score), 4),
            "flags": list(self.flags),
        }
        if self.track is not None:
            record["track"] = self.track
        if self.smoothed is not None:
            record["smoothed"] = {
                "expression": self.shown_expression,
                "score": round(self.shown_score, 4),
                "probabilities": {k: round(float(v), 4) for k, v in self.smoothed.items()}}
        return record
