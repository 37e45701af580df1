"""Why the model named an expression: saliency maps per face, over the crop and the photo.

    rec = ferkit.Recognizer()
    for e in rec.explain("photo.jpg"):
        print(e.face.expression, e.method, e.map.shape)    # (48, 48) floats in [0, 1]
        heat = e.photo_map()                                # (H, W) over the original photo

The maps come from ferkit.models.saliency (Grad-CAM on the last conv block, the smoothed input
gradient for models without one) on the aligned 48x48 crops the classifier saw; the face's
alignment matrix carries each map back onto the photo. Explaining needs the PyTorch model:
a Recognizer that classifies through onnxruntime loads its checkpoint once more, on the CPU.
Nothing here runs unless asked, so recognition costs the same as before.
"""

from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from ferkit.classes import FACE_SIZE
from ferkit.errors import ModelError
from ferkit.images import DecodedImage
from ferkit.recognition.align import alignment_matrix
from ferkit.recognition.face import Face

if TYPE_CHECKING:
    from ferkit.recognition.recognizer import Prepared, Recognizer

log = logging.getLogger(__name__)

COLORMAP = "jet"  # blue (little) to red (much): the usual saliency palette, readable on skin
ALPHA = 0.55  # strongest opacity of the heat drawn over a picture
_LOCK = threading.Lock()  # the explaining model gets hooks for each call: one call at a time


@dataclass
class Explanation:
    """One face: its prediction, and the saliency map of the class it was given.

    map: (48, 48) float32 in [0, 1] over `face.crop`; method: "gradcam", "gradient" or
    "gradient-x-input"; matrix: 2x3 affine from original-photo pixels to crop pixels (the
    alignment), so `photo_map()` can lay the map over the photo; image_size: the original
    photo's (width, height)."""

    face: Face
    map: np.ndarray
    method: str
    matrix: np.ndarray
    image_size: tuple[int, int]
    layer: str | None = None  # Grad-CAM's module in the model

    @property
    def target(self) -> str:
        """The class explained: the face's predicted expression."""
        return self.face.expression

    def photo_map(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """The map over a picture of the photo `size` = (width, height) (default: the
        original), (height, width) float32 in [0, 1], zero outside the face's crop."""
        import cv2

        width, height = size or self.image_size
        factor = self.image_size[0] / max(1, width)  # original pixels per pixel drawn on
        m = np.array(self.matrix, dtype=np.float64)
        m[:, :2] *= factor
        return cv2.warpAffine(self.map.astype(np.float32), m, (int(width), int(height)),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)

    def face_image(self, size: int = 4 * FACE_SIZE) -> np.ndarray:
        """(size, 2 * size, 3) RGB: the aligned face as the model saw it | the map over it."""
        crop = self.face.crop if self.face.crop is not None else np.zeros((FACE_SIZE,) * 2,
                                                                          np.uint8)
        gray = _rgb(np.asarray(Image.fromarray(crop).resize((size, size), Image.BICUBIC)))
        heat = np.asarray(Image.fromarray((self.map * 255).astype(np.uint8))
                          .resize((size, size), Image.BICUBIC), dtype=np.float32) / 255
        return np.concatenate([gray, overlay(gray, heat)], axis=1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the face's record, the method and the 48x48 map (3 decimals)."""
        return {**self.face.to_dict(), "explained": self.target, "method": self.method,
                "map": np.round(self.map, 3).tolist()}


def heat_colors(values: np.ndarray) -> np.ndarray:
    """(H, W) floats in [0, 1] -> (H, W, 3) uint8 RGB through COLORMAP."""
    from matplotlib import colormaps  # matplotlib's colour tables only: no figure, no pyplot

    rgba = colormaps[COLORMAP](np.clip(values, 0.0, 1.0))
    return (rgba[..., :3] * 255).astype(np.uint8)


def _rgb(picture: np.ndarray) -> np.ndarray:
    return np.repeat(picture[..., None], 3, axis=2) if picture.ndim == 2 else picture[..., :3]


def overlay(picture: np.ndarray, heat: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """RGB copy of `picture` with `heat` ((H, W) in [0, 1]) drawn over it, each pixel's
    opacity growing with its heat, so the cold parts of the picture stay as they are."""
    rgb = _rgb(np.asarray(picture)).astype(np.float32)
    a = (alpha * np.clip(heat, 0.0, 1.0))[..., None]
    return (rgb * (1 - a) + heat_colors(heat).astype(np.float32) * a).round().astype(np.uint8)


def torch_model_of(rec: Recognizer):
    """A private copy of the recognizer's PyTorch model, made on first use and kept: hooks on
    it cannot meet a prediction running in another thread. An onnxruntime classifier is
    replaced by its checkpoint's model (on the CPU); a bare .onnx file cannot be explained."""
    cached = rec.__dict__.get("_explain_model")
    if cached is not None:
        return cached
    from torch import nn

    predictor = rec.predictor
    model = getattr(predictor, "model", None)
    if not isinstance(model, nn.Module):
        from ferkit.models.onnx_predictor import is_onnx_file
        from ferkit.models.predictor import Predictor

        path = (predictor.meta or {}).get("path")
        if not path or is_onnx_file(path):
            raise ModelError(f"{path or 'this model'}: explaining needs the PyTorch checkpoint "
                             "(an ONNX file has no gradients); give the checkpoint or run "
                             "directory it was exported from")
        log.info("explain: loading the PyTorch model of %s", path)
        model = Predictor.load(path, device="cpu").model
    else:
        model = copy.deepcopy(model)
    rec.__dict__["_explain_model"] = model
    return model


def original_matrix(detection, scale: float) -> np.ndarray:
    """The alignment matrix of a detection in pixels of a picture read at 1/scale, as a map
    from the original photo's pixels (original = read pixel * scale)."""
    m = alignment_matrix(detection).copy()
    m[:, :2] /= scale
    return m


def explain_prepared(rec: Recognizer, prepared: Prepared, method: str = "auto"
                     ) -> list[Explanation]:
    """Classify a prepared image's faces and explain each face's predicted class."""
    from ferkit.models.saliency import SaliencyConfig, saliency

    config = SaliencyConfig(method=method)  # a bad method fails before any model work
    faces = rec.predict_prepared([prepared])[0]
    if not faces:
        return []
    targets = [rec.classes.index(f.expression) for f in faces]
    with _LOCK:
        result = saliency(torch_model_of(rec), prepared.crops, targets, config)
    s = prepared.loaded.scale
    return [Explanation(face, m, result.method, original_matrix(det, s),
                        prepared.loaded.original_size, result.layer)
            for face, m, det in zip(faces, result.maps, prepared.detections, strict=True)]


# -- pictures ---------------------------------------------------------------------------------

@dataclass
class ExplainOutputs:
    """What `write_explanations` wrote: the photo overlay and one picture per face."""

    overlay: Path
    faces: list[Path] = field(default_factory=list)


def photo_overlay(picture: DecodedImage, explanations: list[Explanation]) -> np.ndarray:
    """The photo with every face's map over it (the strongest where faces overlap) and the
    boxes and labels of ferkit.recognition.draw.annotate."""
    from ferkit.recognition.draw import annotate

    rgb = _rgb(picture.array)
    height, width = rgb.shape[:2]
    heat = np.zeros((height, width), np.float32)
    for e in explanations:
        heat = np.maximum(heat, e.photo_map((width, height)))
    shown = DecodedImage(overlay(rgb, heat), picture.original_size, picture.scale)
    return annotate(shown, [e.face for e in explanations])


def _caption(image: np.ndarray, text: str) -> np.ndarray:
    """`image` with a line of text in a dark band above it."""
    from ferkit.recognition.draw import _font

    font = _font(max(12, image.shape[1] // 24))
    band = Image.new("RGB", (image.shape[1], round(font.size * 1.8)), (13, 18, 32))
    ImageDraw.Draw(band).text((8, band.height // 2), text, fill=(255, 255, 255), font=font,
                              anchor="lm")
    return np.concatenate([np.asarray(band), image], axis=0)


def face_caption(index: int, e: Explanation) -> str:
    name = "Grad-CAM" if e.method == "gradcam" else e.method
    return f"face {index}: {e.face.expression} {e.face.score:.2f} ({name})"


def explanation_sheet(picture: DecodedImage, explanations: list[Explanation],
                      max_side: int = 1200) -> np.ndarray:
    """One picture: the photo overlay above a row of faces (the crop | its map)."""
    photo = photo_overlay(picture, explanations)
    if max(photo.shape[:2]) > max_side:  # a phone photo: the faces row sets the useful size
        k = max_side / max(photo.shape[:2])
        photo = np.asarray(Image.fromarray(photo).resize(
            (round(photo.shape[1] * k), round(photo.shape[0] * k)), Image.LANCZOS))
    if not explanations:
        return photo
    gap = 8
    # faces in one row under the photo where they fit at 96 px or more, 192 px at most
    side = min(4 * FACE_SIZE, max(2 * FACE_SIZE,
                                  ((photo.shape[1] + gap) // len(explanations) - gap) // 2))
    tiles = [_caption(e.face_image(side), face_caption(i, e))
             for i, e in enumerate(explanations, 1)]
    per_row = max(1, (photo.shape[1] + gap) // (tiles[0].shape[1] + gap))
    rows = []
    for start in range(0, len(tiles), per_row):
        row = tiles[start:start + per_row]
        strip = np.full((row[0].shape[0], len(row) * (row[0].shape[1] + gap) - gap, 3), 255,
                        np.uint8)
        for i, tile in enumerate(row):
            x = i * (tile.shape[1] + gap)
            strip[:, x:x + tile.shape[1]] = tile
        rows.append(strip)
    width = max(photo.shape[1], *(r.shape[1] for r in rows))
    parts = []
    for part in [photo, *rows]:
        padded = np.full((part.shape[0] + gap, width, 3), 255, np.uint8)
        padded[:part.shape[0], :part.shape[1]] = part
        parts.append(padded)
    return np.concatenate(parts, axis=0)[:-gap]


def write_explanations(picture: DecodedImage, explanations: list[Explanation], out: Path,
                       stem: str) -> ExplainOutputs:
    """Write `<stem>.explain.png` (explanation_sheet) and `<stem>.face<i>.png` per face (the
    crop | its map, with a caption) into `out`."""
    from ferkit.recognition.draw import save_image

    out = Path(out)
    sheet = save_image(explanation_sheet(picture, explanations), out / f"{stem}.explain.png")
    faces = [save_image(_caption(e.face_image(), face_caption(i, e)),
                        out / f"{stem}.face{i}.png")
             for i, e in enumerate(explanations, 1)]
    return ExplainOutputs(sheet, faces)


def png_data_url(rgb: np.ndarray) -> str:
    """A data: URL of an RGB picture as PNG (the web page shows it without a second request)."""
    import base64
    import io

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
