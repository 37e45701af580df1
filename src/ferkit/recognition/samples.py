"""The sample photo shipped with ferkit (see ferkit/assets/NOTICE.md for sources and status)."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SAMPLE_PHOTO = ASSETS / "sample.jpg"
# Where each public-domain photograph sits in the composite: (x, y, w, h).
SAMPLE_PANELS: dict[str, tuple[int, int, int, int]] = {
    "grace_hopper": (0, 0, 341, 400),
    "astronaut": (349, 0, 400, 400),
    "cameraman": (757, 0, 400, 400),
}


def sample_photo() -> Path:
    """Path of the bundled sample photo (three faces, public domain)."""
    return SAMPLE_PHOTO
