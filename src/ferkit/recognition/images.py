"""Inputs of the Recognizer: a path, a PIL image or an array -> ferkit.images.DecodedImage (RGB).

Files are decoded by the shared image layer (`ferkit.images.decode_image`: EXIF orientation,
JPEG draft-mode downscaling, pixel limits checked from the header, every mode converted to 8-bit
RGB), under the limits below; every unusable input raises InputError naming the file. PIL
images and numpy arrays from the Python API get the same conversion and limits.

Coordinates follow the image layer's one convention: `DecodedImage.scale` original pixels per
array pixel, boxes reported in the original (EXIF-rotated) picture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ferkit.errors import InputError
from ferkit.images import (
    DecodedImage,
    ImageDecodeError,
    PixelLimits,
    decode_image,
    decode_pil,
    shrink_to,
)

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


def limits(max_side: int = MAX_SIDE) -> PixelLimits:
    """What `ferkit predict` and the Recognizer accept (read at call time, so tests can lower
    MAX_PIXELS)."""
    return PixelLimits(max_pixels=MAX_PIXELS, max_jpeg_pixels=MAX_JPEG_PIXELS, max_side=max_side,
                       hint=f"; downscale it first (e.g. to {MAX_SIDE} px on the longest side)")


def read_image(path: str | Path, max_side: int = MAX_SIDE) -> DecodedImage:
    """Read an image file into RGB, EXIF-rotated, downscaled to max_side; InputError if unusable."""
    path = Path(path)
    try:
        return decode_image(path, limits(max_side), name=str(path))
    except ImageDecodeError as exc:
        raise InputError(f"{path}: {exc}") from None


def from_pil(image: Image.Image, name: str = "<PIL image>",
             max_side: int = MAX_SIDE) -> DecodedImage:
    """A PIL image (any mode; EXIF orientation applied if it carries one) -> DecodedImage."""
    try:
        decoded = decode_pil(image, limits(max_side))
    except ImageDecodeError as exc:
        raise InputError(f"{name}: {exc}") from None
    decoded.name = name
    return decoded


def from_array(array: np.ndarray, name: str = "<array>", max_side: int = MAX_SIDE) -> DecodedImage:
    """(H, W, 3) RGB, (H, W, 4) RGBA (alpha dropped) or (H, W) gray array (uint8; other dtypes
    rescaled)."""
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
        arr = arr[:, :, :3]  # alpha dropped, as in files (ferkit.images)
    h, w = arr.shape[:2]
    arr, scale = shrink_to(arr, max_side)
    return DecodedImage(np.ascontiguousarray(arr), (int(w), int(h)), scale, "array", name)


def load_image(image: str | Path | Image.Image | np.ndarray | DecodedImage,
               max_side: int = MAX_SIDE) -> DecodedImage:
    """Dispatch on the input type: path, PIL image, numpy array, or an already DecodedImage."""
    if isinstance(image, DecodedImage):
        return image
    if isinstance(image, (str, Path)):
        return read_image(image, max_side)
    if isinstance(image, Image.Image):
        return from_pil(image, max_side=max_side)
    if isinstance(image, np.ndarray):
        return from_array(image, max_side=max_side)
    raise TypeError(f"expected a path, PIL image or numpy array, got {type(image).__name__}")
