"""Decoding one image file (any size, mode or format) into a 48x48 grayscale face.

Conversion rule, the same for every source:

1. Decode to 8-bit grayscale. EXIF orientation is applied; colour is turned into luma
   (ITU-R 601: 0.299 R + 0.587 G + 0.114 B); an alpha channel is dropped (colour channels only);
   palette images are expanded first; 16-bit images are scaled to 8 bits (value >> 8).
2. Crop the largest centred square (FER faces are already square, so this is a no-op for them).
3. Resize to 48x48 with area interpolation (no-op for 48x48 input).

OpenCV does the decoding (about 5x faster than Pillow on FER's tiny JPEGs, identical pixels on
them); Pillow is the fallback for anything OpenCV cannot read, and supplies the error message
when neither can.

Nothing is decoded before its size is known: the width and height are read from the header
(by hand for JPEG and PNG, by Pillow's format plugins for the rest, without decoding), and an
image over MAX_FACE_PIXELS is rejected. A 20000x20000 PNG is 388 KB on disk but 400 MB once
decoded; no face needs more than a few megapixels.
"""

from __future__ import annotations

import io
import struct
from contextlib import contextmanager

import numpy as np

from ferkit.classes import FACE_SIZE

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
    ".pgm", ".ppm", ".pnm", ".pbm",
})

# Larger images are rejected from their header, before any decoding (as in `ferkit serve`).
MAX_FACE_PIXELS = 40_000_000
# Larger image files are not read at all (a face image has no business being bigger). Zip
# members are checked against their declared size before anything is inflated.
MAX_IMAGE_FILE_BYTES = 50_000_000

# Pillow plugins that may read a header here: the formats of IMAGE_EXTENSIONS (OpenCV sniffs
# the content, not the name, so any of them can hide behind any extension).
PILLOW_FORMATS = ("JPEG", "PNG", "BMP", "DIB", "GIF", "WEBP", "TIFF", "PPM", "JPEG2000")

# Files that operating systems and archivers leave behind; never treated as data.
JUNK_DIRS = frozenset({"__macosx"})
JUNK_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})


class ImageDecodeError(Exception):
    """The bytes are not a readable image; the message says why (no file name)."""


def is_junk(relpath: str) -> bool:
    """True for __MACOSX/ entries, .DS_Store, Thumbs.db, desktop.ini and AppleDouble '._x' files."""
    parts = relpath.split("/")
    if any(p.lower() in JUNK_DIRS for p in parts[:-1]):
        return True
    base = parts[-1].lower()
    return base in JUNK_FILES or base.startswith("._")


def is_image_name(relpath: str) -> bool:
    dot = relpath.rfind(".")
    return dot >= 0 and relpath[dot:].lower() in IMAGE_EXTENSIONS


def to_face(gray: np.ndarray) -> np.ndarray:
    """Centre-crop a 2-D uint8 image to a square and resize it to 48x48."""
    h, w = gray.shape
    if h == w == FACE_SIZE:
        return gray
    if h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        gray = gray[top:top + side, left:left + side]
    if gray.shape[0] == FACE_SIZE:
        return np.ascontiguousarray(gray)
    import cv2

    interp = cv2.INTER_AREA if gray.shape[0] > FACE_SIZE else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(gray), (FACE_SIZE, FACE_SIZE), interpolation=interp)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG markers that carry the frame size: SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the SOF segment, walking the markers as libjpeg does (about 2 us
    for a FER face: SOI, APP0, DQT, SOF0)."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:  # stray bytes between segments: libjpeg skips them too (warning)
            i = data.find(b"\xff", i)
            if i < 0:
                return None
            continue
        marker = data[i + 1]
        if marker in _SOF_MARKERS:
            if i + 9 > n:
                return None
            return (data[i + 7] << 8) | data[i + 8], (data[i + 5] << 8) | data[i + 6]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
        elif marker in (0xD8, 0xD9, 0xDA):  # SOI, EOI or scan data before any frame header
            return None
        else:
            i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return None


def _pillow_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from Pillow's header parser (no pixel data is read, no bomb warning)."""
    from PIL import Image

    Image.init()
    prefix = data[:16]
    for fmt in PILLOW_FORMATS:
        factory, accept = Image.OPEN.get(fmt, (None, None))
        if factory is None:
            continue
        try:
            accepted = True if accept is None else accept(prefix)
            if not accepted or isinstance(accepted, str):  # a str says why it cannot be read
                continue
            with factory(io.BytesIO(data), "") as im:
                return im.size
        except Exception:  # plugins raise SyntaxError, OSError, struct.error ...: try the next
            continue
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the header without decoding, or None if it cannot be read."""
    if data[:3] == b"\xff\xd8\xff":
        size = _jpeg_size(data)
        if size is not None:
            return size
    elif data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    return _pillow_size(data)


def check_size(data: bytes) -> None:
    """Raise ImageDecodeError unless the header gives a size within MAX_FACE_PIXELS."""
    size = image_size(data)
    if size is None:
        raise ImageDecodeError("cannot decode image (unknown format or not an image: no "
                               "readable image header)")
    w, h = size
    if w * h > MAX_FACE_PIXELS:
        raise ImageDecodeError(f"image too large: {w}x{h} = {w * h:,} pixels, over the limit of "
                               f"{MAX_FACE_PIXELS:,} pixels for a face (not decoded)")


def _decode_pillow(data: bytes) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode.startswith("I;16") or mode == "I":
                arr = np.asarray(im).astype(np.int64)
                if mode == "I" and arr.max(initial=0) <= 255:
                    return arr.clip(0, 255).astype(np.uint8)
                return (arr.clip(0, 65535) >> 8).astype(np.uint8)
            if mode == "F":
                return np.asarray(im).clip(0, 255).astype(np.uint8)
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA").convert("RGB")  # drop alpha, like the OpenCV path
            return np.asarray(im.convert("L"))
    except UnidentifiedImageError:
        raise ImageDecodeError("cannot decode image (unknown format or not an image)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageDecodeError(f"cannot decode image (corrupt or truncated: {exc})") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"cannot decode image (too large: {exc})") from None


def decode_gray(data: bytes) -> np.ndarray:
    """Encoded image bytes -> 2-D uint8 grayscale array (see the module docstring)."""
    if not data:
        raise ImageDecodeError("cannot decode image (empty file)")
    check_size(data)
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if arr is None or arr.ndim != 2 or arr.size == 0:
        arr = _decode_pillow(data)
    if arr.ndim != 2 or arr.size == 0:
        raise ImageDecodeError(f"unexpected decoded shape {arr.shape}")
    return arr


def decode_face(data: bytes) -> np.ndarray:
    """Encoded image bytes -> uint8 (48, 48) face. Raises ImageDecodeError."""
    return to_face(decode_gray(data))


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
