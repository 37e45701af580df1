"""What the server accepts from a client, and the decoding that enforces it.

Every rejection is an ApiError with an HTTP status and a short machine-readable code; the app
turns it into `{"error": code, "detail": message}`. Nothing here touches the file system: uploads
are decoded from bytes in memory by the shared image layer (ferkit.images: its formats only,
no EPS or PDF), under the server's own limits.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

import ferkit.images
from ferkit.classes import FACE_SIZE
from ferkit.images import DecodedImage, ImageDecodeError, PixelLimits, to_face
from ferkit.serving.config import DEFAULTS, ServeConfig

ACCEPTED_PART_TYPES = ("image/", "application/octet-stream")
T = TypeVar("T")


class ApiError(Exception):
    """A client error with its HTTP status: 413, 415, 422 ..."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Limits:
    """--max-upload-mb, --max-pixels and the working size that big photos are shrunk to
    (defaults: ServeConfig's)."""

    max_upload_bytes: int = DEFAULTS.max_upload_bytes
    max_pixels: int = DEFAULTS.max_pixels  # larger images are refused from their header
    work_pixels: int = DEFAULTS.work_pixels  # larger images are downscaled (boxes mapped back)
    max_faces_per_classify: int = 64
    max_face_pixels: int = 4_000_000  # one already-cropped face sent to /v1/classify

    @classmethod
    def from_config(cls, config: ServeConfig) -> Limits:
        return cls(max_upload_bytes=config.max_upload_bytes, max_pixels=config.max_pixels,
                   work_pixels=config.work_pixels)

    def as_dict(self) -> dict:
        return {"max_upload_mb": round(self.max_upload_bytes / 2**20, 3),
                "max_pixels": self.max_pixels, "work_pixels": self.work_pixels,
                "max_faces_per_classify": self.max_faces_per_classify}


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


def _image_error(exc: ImageDecodeError, what: str) -> ApiError:
    if exc.kind == "too_large":
        return ApiError(413, "too_many_pixels", f"{what}: {exc}")
    if exc.kind == "empty":
        return ApiError(422, "empty_image", f"{what}: {exc}")
    return ApiError(422, "undecodable_image", f"{what}: {exc}")


def decode_image(data: bytes, limits: Limits, what: str = "image") -> DecodedImage:
    """Bytes of an upload -> RGB DecodedImage, EXIF-rotated, shrunk to limits.work_pixels at
    most by the shared image layer (a big photo is reduced while it is decoded, before any
    conversion or rotation copies it)."""
    pixel_limits = PixelLimits(max_pixels=limits.max_pixels, work_pixels=limits.work_pixels,
                               hint=" for the server (--max-pixels)")
    try:
        return ferkit.images.decode_image(data, pixel_limits, name=what)
    except ImageDecodeError as exc:
        raise _image_error(exc, what) from None


def decode_face(data: bytes, limits: Limits, what: str) -> np.ndarray:
    """An already-cropped face of any size and format -> (48, 48) uint8 grey, decoded and framed
    as dataset faces are."""
    pixel_limits = PixelLimits(max_pixels=min(limits.max_pixels, limits.max_face_pixels),
                               hint=" per face crop")
    try:
        gray = ferkit.images.decode_image(data, pixel_limits, gray=True, name=what).array
    except ImageDecodeError as exc:
        raise _image_error(exc, what) from None
    return to_face(gray)


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
