"""What the server accepts from a client, and the decoding that enforces it.

Every rejection is an ApiError with an HTTP status and a short machine-readable code; the app
turns it into `{"error": code, "detail": message}`. Nothing here touches the file system: uploads
are decoded from bytes in memory, and only the image formats listed in IMAGE_FORMATS are tried.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ferkit.classes import FACE_SIZE
from ferkit.data.images import to_face

# Formats PIL may open for a client. Camera and web formats only: no EPS (Ghostscript), no PDF.
Image.init()
IMAGE_FORMATS = tuple(f for f in ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO")
                      if f in Image.OPEN)
ACCEPTED_PART_TYPES = ("image/", "application/octet-stream")
T = TypeVar("T")
# Modes whose pixels Image.reduce() may average as they are (palette indices may not be).
_REDUCIBLE_MODES = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr",
                              "LAB", "I", "F"})
# EXIF orientation -> the transpose that makes the picture upright (as ImageOps.exif_transpose).
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


class ApiError(Exception):
    """A client error with its HTTP status: 413, 415, 422 ..."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Limits:
    """--max-upload-mb, --max-pixels and the working size that big photos are shrunk to."""

    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000  # larger images are rejected from their header, never decoded
    work_pixels: int = 2_000_000  # larger images are downscaled (boxes are mapped back)
    max_faces_per_classify: int = 64
    max_face_pixels: int = 4_000_000  # one already-cropped face sent to /v1/classify

    def as_dict(self) -> dict:
        return {"max_upload_mb": round(self.max_upload_bytes / 2**20, 3),
                "max_pixels": self.max_pixels, "work_pixels": self.work_pixels,
                "max_faces_per_classify": self.max_faces_per_classify}


@dataclass
class DecodedImage:
    rgb: np.ndarray  # (h, w, 3) uint8, possibly downscaled
    width: int  # of the upload, after EXIF rotation
    height: int
    scale: float  # rgb pixels per original pixel (1.0 when not downscaled)
    format: str


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


class DecodeGate:
    """Lets at most `slots` uploads be decoded at once, first come first served.

    A decode keeps a core busy and may hold a full-size picture (a 40 MP RGB photo is 120 MB),
    so 32 clients sending big photos at once must queue here rather than all decode together:
    memory stays at `slots` pictures, and each finished decode frees its core for detection.
    The counters (in /healthz) count threads inside a decode, so they show the bound holds.
    """

    def __init__(self, slots: int) -> None:
        self.slots = max(1, int(slots))
        self._sem = asyncio.Semaphore(self.slots)  # binds to the running loop on first use
        self._lock = threading.Lock()
        self._active = self._max_active = self._waiting = self._decodes = 0

    async def __aenter__(self) -> DecodeGate:
        with self._lock:
            self._waiting += 1
        try:
            await self._sem.acquire()
        finally:
            with self._lock:
                self._waiting -= 1
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._sem.release()

    def counted(self, fn: Callable[..., T]) -> Callable[..., T]:
        """fn, counting the threads that are inside it."""

        def run(*args: Any) -> T:
            with self._lock:
                self._active += 1
                self._decodes += 1
                self._max_active = max(self._max_active, self._active)
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self._active -= 1

        return run

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"slots": self.slots, "active": self._active, "waiting": self._waiting,
                    "max_active": self._max_active, "decodes": self._decodes}


def check_part_type(content_type: str | None, what: str = "image") -> None:
    """A multipart file part must be an image (or unlabelled bytes, which are sniffed)."""
    ctype = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    if not ctype.startswith(ACCEPTED_PART_TYPES):
        raise ApiError(415, "unsupported_media_type",
                       f"{what}: content type {ctype!r} is not an image (send image/jpeg, "
                       "image/png, image/webp ...)")


def _open(data: bytes, what: str, limits: Limits) -> Image.Image:
    if not data:
        raise ApiError(422, "empty_image", f"{what}: the upload is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check below
            img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "too_many_pixels", f"{what}: {exc}") from None
    except UnidentifiedImageError:
        raise ApiError(422, "undecodable_image",
                       f"{what}: not a readable image: {len(data):,} bytes starting with "
                       f"{data[:12]!r} are none of {', '.join(IMAGE_FORMATS)}") from None
    except Exception as exc:  # PIL raises SyntaxError, OSError ... on broken headers
        raise ApiError(422, "undecodable_image",
                       f"{what}: not a readable image ({exc.__class__.__name__}: {exc}); "
                       f"accepted formats: {', '.join(IMAGE_FORMATS)}") from None
    w, h = img.size
    if w < 1 or h < 1:
        raise ApiError(422, "undecodable_image", f"{what}: image has no pixels ({w}x{h})")
    if w * h > limits.max_pixels:
        raise ApiError(413, "too_many_pixels",
                       f"{what}: {w}x{h} = {w * h:,} pixels is above the server's limit of "
                       f"{limits.max_pixels:,} pixels (--max-pixels)")
    return img


def decode_image(data: bytes, limits: Limits, what: str = "image") -> DecodedImage:
    """Bytes of an upload -> RGB array, EXIF-rotated, downscaled to limits.work_pixels at most.

    A big photo is shrunk while it is decoded (JPEG) or right after (other formats), before any
    conversion or rotation copies it: a 36 MP PNG otherwise costs three more full-size copies.
    """
    img = _open(data, what, limits)
    fmt = img.format or "?"
    try:
        ow, oh = img.size
        if img.format in ("JPEG", "MPO") and ow * oh > limits.work_pixels:
            # libjpeg decodes at 1/2, 1/4 or 1/8 scale, never below the requested size.
            ratio = (limits.work_pixels / (ow * oh)) ** 0.5
            img.draft("RGB", (max(1, int(ow * ratio)), max(1, int(oh * ratio))))
        orientation = img.getexif().get(0x0112, 1)  # 5-8: rotated by 90 degrees
        width, height = (oh, ow) if orientation in (5, 6, 7, 8) else (ow, oh)
        img = _shrink(img, limits.work_pixels)  # the one full-size decode happens in here
        if orientation in _TRANSPOSE:
            img = img.transpose(_TRANSPOSE[orientation])
        if img.mode != "RGB":
            img = img.convert("RGB")
        if img.width * img.height > limits.work_pixels:
            ratio = (limits.work_pixels / (img.width * img.height)) ** 0.5
            img = img.resize((max(1, int(img.width * ratio)), max(1, int(img.height * ratio))),
                             Image.Resampling.BILINEAR)
        rgb = np.asarray(img, dtype=np.uint8)
    except ApiError:
        raise
    except Exception as exc:  # truncated or corrupt data shows up here, on load
        raise ApiError(422, "undecodable_image",
                       f"{what}: the {fmt} data is corrupt or truncated "
                       f"({exc.__class__.__name__}: {exc})") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ApiError(422, "undecodable_image", f"{what}: could not convert to RGB")
    scale = rgb.shape[1] / width
    return DecodedImage(np.ascontiguousarray(rgb), width, height, scale, fmt)


def _shrink(img: Image.Image, work_pixels: int) -> Image.Image:
    """Load the image and box-reduce it by a whole factor that keeps >= work_pixels.

    Image.reduce() averages k x k blocks in one pass over the decoded pixels, in the file's own
    mode (a gray PNG stays 1 byte a pixel), so the full-size picture is read once and dropped.
    """
    img.load()
    factor = int((img.width * img.height / work_pixels) ** 0.5)
    if factor < 2:
        return img
    if img.mode not in _REDUCIBLE_MODES:  # palette, 1-bit, 16-bit ...: convert at full size
        img = img.convert("L" if img.mode == "1" else "RGB")
    return img.reduce(factor)


def decode_face(data: bytes, limits: Limits, what: str) -> np.ndarray:
    """An already-cropped face of any size and format -> (48, 48) uint8 gray."""
    img = _open(data, what, limits)
    if img.width * img.height > limits.max_face_pixels:
        raise ApiError(413, "too_many_pixels",
                       f"{what}: a {img.width}x{img.height} face crop is above the limit of "
                       f"{limits.max_face_pixels:,} pixels per face")
    try:
        gray = np.asarray(ImageOps.exif_transpose(img).convert("L"), dtype=np.uint8)
        return to_face(gray)  # the same centre-crop + resize as faces in a dataset
    except Exception as exc:
        raise ApiError(422, "undecodable_image",
                       f"{what}: the image data is corrupt or truncated "
                       f"({exc.__class__.__name__}: {exc})") from None


def face_from_json(item: object, limits: Limits, what: str) -> np.ndarray:
    """One entry of /v1/classify's JSON `faces`: a base64 image (or data: URL), or 48x48 ints."""
    if isinstance(item, str):
        payload = item.split(",", 1)[1] if item.startswith("data:") and "," in item else item
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(422, "bad_base64",
                           f"{what}: not valid base64 (send a PNG/JPEG as base64 or a data: URL)"
                           ) from None
        return decode_face(data, limits, what)
    if isinstance(item, list):
        if len(item) != FACE_SIZE or not all(isinstance(r, list) and len(r) == FACE_SIZE
                                             for r in item):
            raise ApiError(422, "bad_face_array",
                           f"{what}: a pixel array must be {FACE_SIZE} rows of {FACE_SIZE} "
                           "integers 0-255")
        if not all(type(v) is int and 0 <= v <= 255 for r in item for v in r):
            raise ApiError(422, "bad_face_array",
                           f"{what}: pixel values must be integers 0-255")
        return np.asarray(item, dtype=np.uint8)
    raise ApiError(422, "bad_face",
                   f"{what}: expected a base64 image string or a {FACE_SIZE}x{FACE_SIZE} array "
                   f"of integers, got {type(item).__name__}")
