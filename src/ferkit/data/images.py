"""Dataset entries -> 48x48 faces: the data layer's limits on the shared decode (ferkit.images).

A dataset face is decoded grey by `ferkit.images.decode_image` (EXIF applied, any format, size
checked from the header first) and turned into FER's framing by `ferkit.images.to_face`
(centre square, area-resized to 48x48). What is particular to datasets lives here: the limits
(no face needs more than a few megapixels, and a file over MAX_IMAGE_FILE_BYTES is not read at
all), the names archivers leave behind, and keeping OpenCV's own warnings off stderr.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ferkit.images import PixelLimits, decode_image, to_face

# Larger images are rejected from their header, before any decoding (as in `ferkit serve`).
MAX_FACE_PIXELS = 40_000_000
# Larger image files are not read at all (a face image has no business being bigger). Zip
# members are checked against their declared size before anything is inflated.
MAX_IMAGE_FILE_BYTES = 50_000_000

# Files that operating systems and archivers leave behind; never treated as data.
JUNK_DIRS = frozenset({"__macosx"})
JUNK_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})


def is_junk(relpath: str) -> bool:
    """True for __MACOSX/ entries, .DS_Store, Thumbs.db, desktop.ini and AppleDouble '._x' files."""
    parts = relpath.split("/")
    if any(p.lower() in JUNK_DIRS for p in parts[:-1]):
        return True
    base = parts[-1].lower()
    return base in JUNK_FILES or base.startswith("._")


FACE_LIMITS = PixelLimits(max_pixels=MAX_FACE_PIXELS, hint=" for a face (not decoded)")


def decode_face(data: bytes) -> np.ndarray:
    """Encoded image bytes -> uint8 (48, 48) face. Raises ferkit.images.ImageDecodeError."""
    return to_face(decode_image(data, FACE_LIMITS, gray=True).array)


@contextmanager
def quiet_opencv():
    """Keep OpenCV's own warnings about corrupt files off stderr while decoding (we report
    them ourselves, with the entry name); the previous log level is restored afterwards."""
    try:
        from cv2.utils import logging as cv_logging

        previous = cv_logging.getLogLevel()
        cv_logging.setLogLevel(cv_logging.LOG_LEVEL_SILENT)
    except Exception:  # pragma: no cover - OpenCV without the logging module
        yield
        return
    try:
        yield
    finally:
        cv_logging.setLogLevel(previous)
