"""Reading images for recognition: the one place that turns a path, PIL image or array into RGB.

Everything a user may throw at `ferkit predict` is handled here, so the rest of the code only
ever sees an (H, W, 3) uint8 RGB array:

- EXIF orientation is applied (phone photos come out upright);
- grayscale, RGBA / LA (composited on white), palette, CMYK, 16-bit and float images are
  converted to 8-bit RGB; multi-frame files (GIF, TIFF) give their first frame;
- empty files, zero-size images, non-images and truncated / corrupt files raise InputError
  naming the file;
- huge images are read downscaled without decoding them at full size where the format allows
  it (JPEG: `Image.draft` lets libjpeg decode at 1/2, 1/4 or 1/8 scale), and are refused with a
  clear message above MAX_PIXELS. PIL's decompression-bomb guard is lifted for the single open
  call only, because ferkit applies its own limit before any pixel is decoded.

`LoadedImage.scale` says how many original pixels one pixel of `array` spans, so face boxes
can be reported in the coordinates of the original (EXIF-rotated) image.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ferkit.data.images import IMAGE_EXTENSIONS
from ferkit.errors import InputError

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})

# Largest image (in pixels, as stored in the file) that is decoded at full size. Above it a JPEG
# is still read through a reduced-scale draft if that brings it under the limit; anything else
# is refused. 200 MP decodes to 600 MB of RGB, affordable on any machine that runs torch.
MAX_PIXELS = 200_000_000
# JPEGs are read through libjpeg's DCT scaling, which never holds the full-size picture; their
# limit only guards against absurd headers.
MAX_JPEG_PIXELS = 4_000_000_000
# Longest side kept in memory after reading; larger images are downscaled (faces stay large
# enough to classify at 48x48, and detection runs on an even smaller copy).
MAX_SIDE = 4096

_PIL_LIMIT_LOCK = threading.Lock()


@dataclass
class LoadedImage:
    """An RGB picture ready for detection, and how it relates to the original file."""

    array: np.ndarray  # (H, W, 3) uint8 RGB, C-contiguous
    original_size: tuple[int, int]  # (width, height) of the original image after EXIF rotation
    scale: float = 1.0  # original pixels per pixel of `array` (>= 1 when downscaled)
    name: str = "<array>"

    @property
    def width(self) -> int:
        return int(self.array.shape[1])

    @property
    def height(self) -> int:
        return int(self.array.shape[0])


def is_image_path(path: Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video_path(path: Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _open_unlimited(path: Path) -> Image.Image:
    """Image.open without PIL's decompression-bomb check (ferkit checks the size itself)."""
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _megapixels(w: int, h: int) -> str:
    return f"{w}x{h} ({w * h / 1e6:.0f} megapixels)"


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (alpha composited on white, high bit depths rescaled)."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im).astype(np.float64)
        if im.mode.startswith("I;16"):
            arr = arr / 257.0  # 16-bit images use the full 0..65535 range
        else:  # 32-bit int or float: stretch the actual range
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        gray = np.clip(np.nan_to_num(arr) + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _fit(im: Image.Image, max_side: int) -> Image.Image:
    """Downscale so the longest side is at most max_side (reduce() first: fast, low memory)."""
    longest = max(im.size)
    if longest <= max_side:
        return im
    factor = longest // max_side
    if factor >= 2:
        im = im.reduce(factor)
    if max(im.size) > max_side:
        ratio = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * ratio)), max(1, round(im.height * ratio))),
                       Image.Resampling.LANCZOS)
    return im


def read_image(path: str | Path, max_side: int = MAX_SIDE) -> LoadedImage:
    """Read an image file into RGB, EXIF-rotated, downscaled to max_side; InputError if unusable."""
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise InputError(f"{name}: no such file")
    if path.is_dir():
        raise InputError(f"{name}: is a directory, not an image")
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{name}: file is empty (0 bytes)")
        im = _open_unlimited(path)
    except InputError:
        raise
    except UnidentifiedImageError as exc:
        raise InputError(f"{name}: not an image, or a format PIL cannot read") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{name}: unreadable image ({exc})") from exc

    try:
        with im:
            w, h = im.size
            if w <= 0 or h <= 0:
                raise InputError(f"{name}: image has zero size ({w}x{h})")
            is_jpeg = im.format == "JPEG"
            if w * h > (MAX_JPEG_PIXELS if is_jpeg else MAX_PIXELS):
                limit = MAX_JPEG_PIXELS if is_jpeg else MAX_PIXELS
                raise InputError(
                    f"{name}: image is {_megapixels(w, h)}, above ferkit's limit of "
                    f"{limit / 1e6:.0f} megapixels for {im.format or 'this'} files; "
                    "downscale it first (e.g. to 4096 px on the longest side)")
            if is_jpeg and max(w, h) > max_side:
                # DCT-domain downscaling: decodes at 1/2, 1/4 or 1/8 scale, never at full size.
                ratio = max_side / max(w, h)
                im.draft("RGB", (max(1, int(w * ratio)), max(1, int(h * ratio))))
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            orientation = im.getexif().get(0x0112, 1)
            im.load()
            im = ImageOps.exif_transpose(im) if orientation != 1 else im
            original = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
            im = _fit(_to_rgb(im), max_side)
            array = np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
    except InputError:
        raise
    except Image.DecompressionBombError as exc:  # pragma: no cover - the limit above comes first
        raise InputError(f"{name}: {exc}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InputError(f"{name}: unreadable image, truncated or corrupt ({exc})") from exc
    except MemoryError as exc:
        raise InputError(f"{name}: image too large to decode in memory") from exc
    scale = original[0] / array.shape[1]
    return LoadedImage(array, (int(original[0]), int(original[1])), float(scale), name)


def from_pil(image: Image.Image, name: str = "<PIL image>",
             max_side: int = MAX_SIDE) -> LoadedImage:
    """A PIL image (any mode; EXIF orientation applied if it carries one) -> LoadedImage."""
    w, h = image.size
    if w <= 0 or h <= 0:
        raise InputError(f"{name}: image has zero size ({w}x{h})")
    orientation = image.getexif().get(0x0112, 1) if hasattr(image, "getexif") else 1
    im = ImageOps.exif_transpose(image) if orientation != 1 else image
    original = im.size
    im = _fit(_to_rgb(im), max_side)
    array = np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
    return LoadedImage(array, (int(original[0]), int(original[1])),
                       original[0] / array.shape[1], name)


def from_array(array: np.ndarray, name: str = "<array>", max_side: int = MAX_SIDE) -> LoadedImage:
    """(H, W, 3) RGB, (H, W, 4) RGBA or (H, W) gray array (uint8; other dtypes rescaled)."""
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InputError(f"{name}: expected an (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) gray "
                         f"array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name}: image has zero size ({arr.shape[1]}x{arr.shape[0]})")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = (arr.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        scale = 255.0 if float(np.nanmax(arr)) <= 1.0 else 1.0  # [0, 1] floats or [0, 255] floats
        arr = np.clip(np.nan_to_num(arr.astype(np.float32)) * scale + 0.5, 0, 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = (arr[:, :, :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    h, w = arr.shape[:2]
    if max(h, w) > max_side:
        return from_pil(Image.fromarray(arr), name, max_side)
    return LoadedImage(np.ascontiguousarray(arr), (int(w), int(h)), 1.0, name)


def load_image(image: str | Path | Image.Image | np.ndarray | LoadedImage,
               max_side: int = MAX_SIDE) -> LoadedImage:
    """Dispatch on the input type: path, PIL image, numpy array, or an already LoadedImage."""
    if isinstance(image, LoadedImage):
        return image
    if isinstance(image, (str, Path)):
        return read_image(image, max_side)
    if isinstance(image, Image.Image):
        return from_pil(image, max_side=max_side)
    if isinstance(image, np.ndarray):
        return from_array(image, max_side=max_side)
    raise TypeError(f"expected a path, PIL image or numpy array, got {type(image).__name__}")
