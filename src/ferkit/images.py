"""The image layer: the one decode that datasets, `ferkit predict` and `ferkit serve` share.

Every image file ferkit reads, a 48x48 FER2013 face in a zip, a phone photo on the command
line or an upload to the server, goes through `decode_image`, so they all follow one rule:

- Formats: IMAGE_FORMATS only (camera and web formats; no EPS or PDF, which would run
  Ghostscript), by content, whatever the name; folders are searched for IMAGE_EXTENSIONS.
- Limits (`PixelLimits`): the size is read from the header and an image over the caller's pixel
  limit is refused before any pixel is decoded (a 20000x20000 PNG is 388 KB on disk, 400 MB
  decoded). Pillow's own decompression-bomb guard is lifted for that one open, because this
  check comes first.
- Downscaling: a picture larger than the caller's working size (longest side and/or pixel
  count) is decoded reduced where the format allows it (JPEG draft mode: libjpeg decodes at
  1/2, 1/4 or 1/8 scale), then box-reduced in its own mode before any conversion or rotation,
  so the full-size picture is held once at most.
- EXIF orientation is applied; the first frame of a multi-frame file is used.
- Pixels: 8-bit RGB, or with `gray=True` 8-bit grey. Alpha is dropped (the colour channels
  are kept as they are, as OpenCV reads them), palettes expanded, 16-bit scaled to 8 bits,
  32-bit and float stretched to their range. Grey is ITU-R 601 luma, `to_gray` (for a colour
  JPEG libjpeg's own luma channel, the same up to rounding).
  Small grey decodes (dataset faces) go through OpenCV when nothing needs rotating or shrinking:
  faster than Pillow on FER's tiny JPEGs (docs/benchmarks.md), identical pixels, and its
  libjpeg reports corrupt-data warnings that the data loaders name per entry.

Coordinates: `DecodedImage.scale` is the number of original pixels one pixel of `array` spans
(>= 1; 1.0 when not downscaled), so `original = array_coordinate * scale`. Boxes that leave
ferkit (Face.box, the server's JSON) are always in original-image coordinates, i.e. those of
the upright (EXIF-rotated) picture at full size.

Errors are ImageDecodeError without the file name (the caller knows the name and how it is
shown: an entry in a zip, a path, an upload field); `kind` says which limit or fault it is.
"""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from ferkit.classes import FACE_SIZE

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
    ".pgm", ".ppm", ".pnm", ".pbm",
})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})

Image.init()
# The Pillow plugins any image is opened with: the formats of IMAGE_EXTENSIONS (MPO is how
# Pillow names a phone's multi-picture JPEG, DIB a headerless BMP).
IMAGE_FORMATS = tuple(f for f in ("JPEG", "MPO", "PNG", "BMP", "DIB", "GIF", "WEBP", "TIFF",
                                  "PPM", "JPEG2000") if f in Image.OPEN)
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})
# Formats OpenCV decodes to the same grey pixels, for the fast path (8-bit L or RGB only).
_OPENCV_FORMATS = frozenset({"JPEG", "PNG", "BMP"})
# Modes whose pixels Image.reduce() may average as they are (palette indices may not be).
_REDUCIBLE_MODES = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr",
                              "LAB", "I", "F"})
# EXIF orientation -> the transpose that makes the picture upright (as ImageOps.exif_transpose).
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
_EXIF_ORIENTATION = 0x0112
_PIL_LIMIT_LOCK = threading.Lock()

ErrorKind = Literal["empty", "unreadable", "corrupt", "too_large"]


class ImageDecodeError(Exception):
    """The bytes are not a usable image; the message says why (no file name), `kind` what."""

    def __init__(self, message: str, kind: ErrorKind = "unreadable") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class PixelLimits:
    """What a caller accepts, and the working size it wants big pictures shrunk to."""

    max_pixels: int = 40_000_000  # over this (from the header) the image is refused undecoded
    max_jpeg_pixels: int | None = None  # JPEGs decode drafted, so may be allowed more
    max_side: int | None = None  # longest side of the decoded array
    work_pixels: int | None = None  # pixels of the decoded array
    hint: str = ""  # appended to the too-large message: what the limit is for, how to change it

    def limit_for(self, fmt: str | None) -> int:
        if fmt in _JPEG_FORMATS and self.max_jpeg_pixels is not None:
            return self.max_jpeg_pixels
        return self.max_pixels

    def target(self, w: int, h: int) -> tuple[int, int] | None:
        """The size a w x h picture is shrunk to, or None when it fits."""
        ratio = 1.0
        if self.max_side is not None and max(w, h) > self.max_side:
            ratio = self.max_side / max(w, h)
        if self.work_pixels is not None and w * h > self.work_pixels:
            ratio = min(ratio, (self.work_pixels / (w * h)) ** 0.5)
        if ratio >= 1.0:
            return None
        return max(1, int(w * ratio)), max(1, int(h * ratio))


@dataclass
class DecodedImage:
    """Decoded pixels and how they relate to the original picture (see the module docstring)."""

    array: np.ndarray  # (H, W, 3) uint8 RGB, or (H, W) uint8 grey; C-contiguous
    original_size: tuple[int, int]  # (width, height) of the original, after EXIF rotation
    scale: float = 1.0  # original pixels per pixel of `array` (>= 1 when downscaled)
    format: str = "?"
    name: str = "<array>"

    @property
    def width(self) -> int:
        return int(self.array.shape[1])

    @property
    def height(self) -> int:
        return int(self.array.shape[0])


def is_image_name(name: str | Path) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def is_video_name(name: str | Path) -> bool:
    return Path(name).suffix.lower() in VIDEO_EXTENSIONS


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W) uint8 luma (ITU-R 601); a 2-D array is returned as it is."""
    if rgb.ndim == 2:
        return rgb
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def to_face(gray: np.ndarray) -> np.ndarray:
    """Centre-crop a 2-D uint8 image to a square and resize it to FACE_SIZE (FER's framing:
    its faces are already square, so this is a no-op for them)."""
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


def shrink_to(array: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """An array shrunk to longest side `side` (itself when no larger, or side is 0) and the
    input pixels per output pixel (as DecodedImage.scale). Area-averaged by a whole factor
    first (OpenCV's INTER_AREA has a fast path for whole factors), the rest, under 2x, as a
    decode's (`_finish_shrink`, faster there than INTER_AREA); timings in docs/benchmarks.md."""
    import cv2

    h, w = array.shape[:2]
    longest = max(h, w)
    if side == 0 or longest <= side:
        return array, 1.0
    whole = int(longest / side)
    if whole >= 2:
        array = cv2.resize(array, (max(1, w // whole), max(1, h // whole)),
                           interpolation=cv2.INTER_AREA)
    factor = longest / side
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    if (array.shape[1], array.shape[0]) != size:
        array = _finish_shrink(array, size)
    return array, w / array.shape[1]


def enlarge_to(array: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """An array enlarged (bilinear) to longest side `side`, and the input pixels per output
    pixel (under 1), as shrink_to's: for a detector whose floor is in its input's pixels."""
    import cv2

    h, w = array.shape[:2]
    factor = max(h, w) / side
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    return cv2.resize(array, size, interpolation=cv2.INTER_LINEAR), w / size[0]


def jpeg_draft_side(path: Path, at_least: int) -> int | None:
    """Longest side of the smallest reduced decode libjpeg offers (1/8, 1/4 or 1/2 scale) that
    keeps at least `at_least` px, for a JPEG file larger than that; None for anything else
    (other formats, small or unreadable files: decode_image says what is wrong with them).
    Decoding at 1/4 scale instead of 1/2 takes about a quarter of the time."""
    try:
        with Image.open(path, formats=("JPEG",)) as im:  # the header only (MPO files too)
            longest = max(im.size)
    except Exception:  # not a JPEG, unreadable, absurd header: the full read reports it
        return None
    for divisor in (8, 4, 2):
        # Pillow's draft picks scale 1/d for a requested size of at most size // d (libjpeg then
        # decodes ceil(size / d), a pixel more where size is odd, which the decoder trims).
        side = longest // divisor
        if side >= at_least:
            return side
    return None


def _open(fp: io.BytesIO | Path) -> Image.Image:
    """Image.open (header only) without Pillow's bomb check: PixelLimits is checked instead."""
    try:
        with _PIL_LIMIT_LOCK:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    return Image.open(fp, formats=IMAGE_FORMATS)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except UnidentifiedImageError:
        raise ImageDecodeError("cannot decode image (not a readable image: unknown format or "
                               f"not an image; ferkit reads {', '.join(IMAGE_FORMATS)})"
                               ) from None
    except Exception as exc:  # plugins raise SyntaxError, OSError, struct.error ... on headers
        raise ImageDecodeError(f"cannot decode image (not a readable image: "
                               f"{exc.__class__.__name__}: {exc})") from None


def decode_image(source: bytes | Path, limits: PixelLimits = PixelLimits(), *,
                 gray: bool = False, name: str = "<image>") -> DecodedImage:
    """Encoded bytes or an image file -> DecodedImage; raises ImageDecodeError (no name)."""
    data: bytes | None = None
    if isinstance(source, Path):
        if not source.exists():
            raise ImageDecodeError("no such file", "unreadable")
        if source.is_dir():
            raise ImageDecodeError("is a directory, not an image", "unreadable")
        try:
            if source.stat().st_size == 0:
                raise ImageDecodeError("cannot decode image (empty file)", "empty")
            if gray:  # faces: small, and the OpenCV path wants the bytes
                data = source.read_bytes()
        except OSError as exc:
            raise ImageDecodeError(f"cannot read file ({exc.strerror or exc})") from None
    else:
        data = source
        if not data:
            raise ImageDecodeError("cannot decode image (empty file)", "empty")
    im = _open(io.BytesIO(data) if data is not None else source)
    with im:
        decoded = decode_pil(im, limits, gray=gray, data=data)
    decoded.name = name
    return decoded


def decode_pil(im: Image.Image, limits: PixelLimits = PixelLimits(), *, gray: bool = False,
               data: bytes | None = None) -> DecodedImage:
    """An opened (not yet loaded) or in-memory PIL image -> DecodedImage under `limits`.

    `data`: the encoded bytes, if at hand, which lets a small grey decode use OpenCV."""
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageDecodeError(f"cannot decode image (zero size: {w}x{h})", "empty")
    limit = limits.limit_for(im.format)
    if w * h > limit:
        raise ImageDecodeError(f"image too large: {w}x{h} = {w * h:,} pixels, over the limit "
                               f"of {limit:,} pixels{limits.hint}", "too_large")
    fmt = im.format or "?"
    orientation = _orientation(im, data)
    target = limits.target(w, h)
    if (gray and data is not None and target is None and orientation == 1
            and fmt in _OPENCV_FORMATS and im.mode in ("L", "RGB")):
        arr = _decode_opencv_gray(data)
        if arr is not None and arr.shape == (h, w):
            return DecodedImage(arr, (w, h), 1.0, fmt)
    try:
        if fmt in _JPEG_FORMATS:
            # libjpeg decodes at 1/2, 1/4 or 1/8 scale, never below the requested size, and
            # straight to grey when asked (its luma channel, as OpenCV's path gives).
            im.draft("L" if gray else "RGB", target or (w, h))
        im.load()
        if orientation is None:
            orientation = _exif_orientation(im)
        im = _shrink(im, target)  # the one full-size decode happens in here
        arr = np.asarray(_to_8bit(im), dtype=np.uint8)
        if target is not None and arr.shape[0] * arr.shape[1] > target[0] * target[1]:
            arr = _finish_shrink(arr, target)
        if orientation in _TRANSPOSE:
            arr = np.asarray(Image.fromarray(arr).transpose(_TRANSPOSE[orientation]))
    except ImageDecodeError:
        raise
    except Exception as exc:  # truncated or corrupt data shows up here, on load
        raise ImageDecodeError(f"cannot decode image (corrupt or truncated {fmt} data: "
                               f"{exc.__class__.__name__}: {exc})", "corrupt") from None
    original = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    if gray:
        arr = to_gray(arr)
    elif arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.size == 0:
        raise ImageDecodeError(f"cannot decode image (decoded to shape {arr.shape})", "corrupt")
    return DecodedImage(np.ascontiguousarray(arr), original, original[0] / arr.shape[1], fmt)


def _orientation(im: Image.Image, data: bytes | None) -> int | None:
    """The EXIF orientation tag (1 = upright as stored), or None if only known once loaded."""
    if im.format == "PNG" and "exif" not in im.info:
        # Pillow decodes the whole PNG to look for an eXIf chunk after the pixels.
        return 1 if data is not None and b"eXIf" not in data else None
    return _exif_orientation(im)


def _exif_orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block: the picture is still usable as stored
        return 1


def _decode_opencv_gray(data: bytes) -> np.ndarray | None:
    import cv2

    flags = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    return arr if arr is not None and arr.ndim == 2 and arr.size else None


def _shrink(im: Image.Image, target: tuple[int, int] | None) -> Image.Image:
    """Box-reduce by the whole factor that keeps at least `target` (one pass over the pixels,
    in the file's own mode: a grey PNG stays 1 byte a pixel)."""
    if target is None:
        return im
    factor = min(im.width // target[0], im.height // target[1])
    if factor < 2:
        return im
    if im.mode not in _REDUCIBLE_MODES:  # palette, 1-bit, 16-bit ...: convert at full size
        im = _to_8bit(im)
    return im.reduce(factor)


def _finish_shrink(arr: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """The shrink left after the whole-factor reduce, always under 2x: OpenCV's bilinear, which
    at under 2x still reads nearly every source pixel, is several times faster than Pillow's
    antialiased resize (timings in docs/benchmarks.md)."""
    import cv2

    return cv2.resize(np.ascontiguousarray(arr), target, interpolation=cv2.INTER_LINEAR)


def _to_8bit(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit L or RGB (alpha dropped, high bit depths rescaled)."""
    if im.mode in ("L", "RGB"):
        return im
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im).astype(np.float64)
        if im.mode.startswith("I;16"):
            arr = arr / 257.0  # 16-bit images use the full 0..65535 range
        elif im.mode == "I" and arr.min(initial=0) >= 0 and arr.max(initial=0) > 255:
            arr = arr / 257.0  # Pillow opens 16-bit PNGs as "I"
        elif im.mode == "F" or arr.min(initial=0) < 0:  # float or signed: stretch the range
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(np.clip(np.nan_to_num(arr) + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode in ("1", "LA", "La"):
        return im.convert("L")
    return im.convert("RGB")  # P, RGBA (alpha dropped), CMYK, YCbCr, LAB, HSV
