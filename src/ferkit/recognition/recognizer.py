"""Recognizer: find the faces in a picture and name the expression on each.

    import ferkit
    rec = ferkit.Recognizer()             # bundled model, best available device
    faces = rec.predict("photo.jpg")      # path, PIL image, (H, W, 3) RGB or (H, W) gray array
    for f in faces:
        print(f.box, f.expression, f.score, f.flags)
    probs = rec.classify(crops)           # (N, 48, 48) uint8 faces -> (N, 7) probabilities

Steps per image: read (ferkit.recognition.images; a file at the finer pass's size, so a phone
JPEG decodes through libjpeg's reduced scales), detect (YuNet on a copy of
`detect_size` px, with a finer pass where small faces may hide, ferkit.recognition.detector),
align each face to a 48x48 FER2013-style crop (ferkit.recognition.align), and classify all
faces of the image in one batch (onnxruntime or PyTorch, see load_classifier).

Faces are cropped from the decoded picture, which holds every face the detector can find at
at least twice its size in the detection copy (YuNet's floor of about 24 px there becomes 48 px,
the crop's own size), so decoding no larger costs no detail the 48x48 crop could keep.

A big JPEG file is read small first: at libjpeg's smallest reduced scale that still covers
`detect_size` (a 4032x3024 photo at 1/4: 1008x756, about a quarter of the decode time of the
1/2 scale the finer size needs; a phone photo's first pass, at the finer size, runs on it
enlarged to 1280 px). When detection there gives no hint of smaller faces and every face's crop
is downsampled to 48x48, not upsampled, that read is kept; otherwise the file is read again at
the finer size and detected as above.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ferkit.classes import FACE_SIZE
from ferkit.images import DecodedImage, jpeg_draft_side, to_face, to_gray
from ferkit.recognition.align import align_face, crop_is_downsampled, quality_flags
from ferkit.recognition.detector import Detection, Detector, YuNetDetector
from ferkit.recognition.face import Face
from ferkit.recognition.images import MAX_SIDE, load_image
from ferkit.recognition.sizes import DETECT_SIZE, MIN_CONFIDENCE, finer_side
from ferkit.tta import check_tta

log = logging.getLogger(__name__)

ImageInput = str | Path | Image.Image | np.ndarray | DecodedImage


@dataclass
class Prepared:
    """An image after detection and alignment, before classification."""

    loaded: DecodedImage
    detections: list[Detection]  # in pixels of loaded.array, left to right
    crops: np.ndarray  # (N, 48, 48) uint8 aligned faces


BACKENDS = ("auto", "torch", "onnxruntime")


def load_classifier(model: str | Path, device: str = "auto", backend: str = "auto"):
    """A Predictor (PyTorch) or an OnnxPredictor (onnxruntime) for `model`.

    auto: onnxruntime for an .onnx file, and for a checkpoint that runs on the CPU where the
    onnx extra is installed (exported once, `cached_export`): a photo's few faces classify
    faster there than in PyTorch (measured in docs/benchmarks.md, bench/pipeline_speed.py).
    PyTorch otherwise, or if the export fails (logged)."""
    from ferkit.devices import resolve_device
    from ferkit.errors import ConfigError, ModelError
    from ferkit.models.onnx_predictor import (
        OnnxPredictor,
        cached_export,
        has_onnx_extra,
        is_onnx_file,
    )
    from ferkit.models.predictor import Predictor

    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if is_onnx_file(model):
        if backend == "torch":
            raise ModelError(f"{model}: an ONNX file runs with --backend onnxruntime (or auto)")
        return OnnxPredictor.load(model)
    if backend == "onnxruntime" or (backend == "auto" and has_onnx_extra()
                                    and resolve_device(device).type == "cpu"):
        try:
            predictor = OnnxPredictor.load(cached_export(model))
        except ModelError:
            raise
        except Exception as exc:  # an architecture the exporter cannot write, a full disk ...
            if backend == "onnxruntime":
                raise ModelError(f"{model}: ONNX export failed ({exc})") from exc
            log.warning("%s: runs in PyTorch, the ONNX export failed (%s)", model, exc)
        else:
            predictor.meta["path"] = str(model)
            return predictor
    return Predictor.load(model, device)


class Recognizer:
    """Face detection + expression classification.

    model: "default" (the bundled weights), a training run directory, a checkpoint file, or an
        already loaded ferkit.models.predictor.Predictor.
    device: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:N" or "mps".
    min_confidence: detector confidence (0..1) below which a face is ignored; it also applies
        to a given `detector`'s detections (a detector with a lower threshold of its own
        needs a min_confidence as low to report its weaker faces).
    tta: test-time augmentation for classification, one of ferkit.tta.TTA_MODES.
    detector: any object with detect(rgb) -> list[Detection]; YuNet by default.
    backend: "auto" (onnxruntime for a .onnx file from `ferkit export`, and for a checkpoint
        on the CPU where the onnx extra is installed; else PyTorch), "torch" or "onnxruntime"
        (a checkpoint is exported first, once: see load_classifier).
    detect_size: longest side of the copy faces are detected on (0: the picture as decoded,
        up to MAX_SIDE); ignored when `detector` is given.
    classify_with: what classifies the faces predict() and explain() find (default: classify);
        a server passes its micro-batcher, which runs classify() on the faces of concurrent
        requests together.
    """

    def __init__(self, model=None, device: str = "auto", min_confidence: float = MIN_CONFIDENCE,
                 tta: str = "none", detector: Detector | None = None,
                 detect_size: int = DETECT_SIZE, backend: str = "auto",
                 classify_with: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        from ferkit.models.predictor import Predictor

        check_tta(tta)  # a ConfigError, which is a ValueError
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        if model is None:
            model = "default"
        if isinstance(model, Predictor) or hasattr(model, "predict_proba"):
            self.predictor = model
        else:
            self.predictor = load_classifier(model, device, backend)
        self.tta = tta
        self.detector = detector or YuNetDetector(min_confidence, detect_size=detect_size)
        size = finer_side(getattr(self.detector, "detect_size", 0))
        self.decode_side = min(MAX_SIDE, size or MAX_SIDE)
        self.min_confidence = float(min_confidence)
        self.classify_with = classify_with

    @property
    def classes(self) -> tuple[str, ...]:
        return self.predictor.classes

    @property
    def device(self):
        return self.predictor.device

    def __repr__(self) -> str:
        path = self.predictor.meta.get("path", "")
        return (f"Recognizer(model={path!r}, arch={self.predictor.arch!r}, "
                f"device={str(self.device)!r}, tta={self.tta!r})")

    # -- classification -------------------------------------------------------------------
    def classify(self, crops: np.ndarray) -> np.ndarray:
        """(N, 48, 48) uint8 grayscale faces (or one (48, 48) face) -> (N, 7) probabilities.

        Crops of another size are centre-cropped and resized to 48x48; rows sum to 1.
        """
        arr = np.asarray(crops)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim == 4 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 3:
            raise ValueError(f"expected (N, 48, 48) grayscale faces, got shape {arr.shape}")
        if len(arr) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        if arr.shape[1:] != (FACE_SIZE, FACE_SIZE):
            arr = np.stack([to_face(a) for a in arr])  # FER's framing, as for dataset faces
        return self.predictor.predict_proba(np.ascontiguousarray(arr), tta=self.tta)

    # -- detection and alignment ----------------------------------------------------------
    def _read_and_detect(self, image: ImageInput) -> tuple[DecodedImage, list[Detection]]:
        """The decoded picture and its detections in pixels of loaded.array, left to right."""
        small_side = self._small_first_side(image)
        if small_side is None:
            loaded = load_image(image, self.decode_side)
            found = self._detect(loaded)
        else:
            loaded, found = self._read_small_first(image, small_side)
        # YuNet's own threshold is min_confidence already; a given detector may have another
        found = [d for d in found if d.score >= self.min_confidence]
        return loaded, sorted(found, key=lambda d: (d.box[0], d.box[1]))

    def _small_first_side(self, image: ImageInput) -> int | None:
        """The side to read a big JPEG file at first (see the module docstring), or None."""
        if not (isinstance(image, (str, Path)) and isinstance(self.detector, Detector)
                and 0 < self.detector.detect_size < self.decode_side):
            return None
        small_side = jpeg_draft_side(Path(image), self.detector.detect_size)
        return small_side if small_side is not None and small_side < self.decode_side else None

    def _read_small_first(self, image: str | Path, small_side: int
                          ) -> tuple[DecodedImage, list[Detection]]:
        """Detect on the small read; keep it if that is enough, else read the file again at
        decode_side and go on from the small read's first pass (not run twice)."""
        detector = self.detector
        small = load_image(image, small_side)
        found, factor = detector.first_pass(small.array, small.scale)
        if not detector.wants_finer_pass(found, factor, small.scale):
            sure = detector.sure(found, small.width, small.height)
            if all(crop_is_downsampled(d) for d in sure):
                return small, sure
        loaded = load_image(image, self.decode_side)
        to_loaded = small.scale / loaded.scale
        return loaded, detector.detect(loaded.array, [d.scaled(to_loaded) for d in found],
                                       loaded.scale)

    def _detect(self, loaded: DecodedImage) -> list[Detection]:
        """Detections in loaded.array; a Detector is told how much the decode was reduced (a
        plain `detect(rgb)` object is not)."""
        if isinstance(self.detector, Detector):
            return self.detector.detect(loaded.array, scale=loaded.scale)
        return self.detector.detect(loaded.array)

    def detect(self, image: ImageInput) -> list[Detection]:
        """Faces in the image, boxes in pixels of the original image, sorted left to right."""
        loaded, found = self._read_and_detect(image)
        return [d.scaled(loaded.scale) for d in found] if loaded.scale != 1.0 else found

    def crops(self, image: ImageInput) -> tuple[list[Detection], np.ndarray]:
        """Detections (pixels of the original image) and their (N, 48, 48) aligned crops."""
        p = self.prepare(image)
        s = p.loaded.scale
        return ([d.scaled(s) for d in p.detections] if s != 1.0 else p.detections), p.crops

    # -- the whole pipeline ---------------------------------------------------------------
    def prepare(self, image: ImageInput) -> Prepared:
        """Read, detect and align (no classification): the part that runs in worker threads
        when many images go through `ferkit.recognition.pipeline`."""
        loaded, found = self._read_and_detect(image)
        if not found:
            return Prepared(loaded, [], np.zeros((0, FACE_SIZE, FACE_SIZE), np.uint8))
        gray = to_gray(loaded.array)
        return Prepared(loaded, found, np.stack([align_face(gray, d) for d in found]))

    def faces(self, prepared: Prepared, probs: np.ndarray) -> list[Face]:
        """Face records for a prepared image from its crops' (N, 7) probabilities; boxes and
        landmarks in pixels of the original image."""
        s = prepared.loaded.scale
        width, height = prepared.loaded.original_size
        faces = []
        for det, crop, p in zip(prepared.detections, prepared.crops, probs, strict=True):
            best = int(np.argmax(p))
            x, y, w, h = (v * s for v in det.box)
            # Clipped to the picture: a detector may reach past the edge of a face it cuts.
            x0, y0 = max(0, round(x)), max(0, round(y))
            x1, y1 = min(width, round(x + w)), min(height, round(y + h))
            faces.append(Face(
                box=(x0, y0, max(0, x1 - x0), max(0, y1 - y0)),
                expression=self.classes[best],
                score=float(p[best]),
                probabilities={c: float(v) for c, v in zip(self.classes, p, strict=True)},
                detection_score=det.score,
                landmarks=[(round(px * s), round(py * s)) for px, py in det.landmarks],
                flags=quality_flags(w, h, crop),
                crop=crop,
            ))
        return faces

    def predict_prepared(self, prepared: list[Prepared]) -> list[list[Face]]:
        """Classify the faces of several prepared images in one batch (one forward pass)."""
        crops = [p.crops for p in prepared if len(p.crops)]
        if not crops:
            return [[] for _ in prepared]
        probs = (self.classify_with or self.classify)(np.concatenate(crops))
        out, start = [], 0
        for p in prepared:
            out.append(self.faces(p, probs[start:start + len(p.crops)]))
            start += len(p.crops)
        return out

    def predict(self, image: ImageInput) -> list[Face]:
        """Detect, align and classify every face; a list of Face sorted left to right.

        image: a path, a PIL image, an (H, W, 3) uint8 RGB array or an (H, W) gray array.
        Boxes and landmarks are in pixels of the original image (after EXIF rotation).
        Small or blurry faces are kept and carry "small" / "blurry" in Face.flags.
        """
        return self.predict_prepared([self.prepare(image)])[0]

    # -- explanation ----------------------------------------------------------------------
    def explain(self, image: ImageInput, method: str = "auto") -> list:
        """predict(), and for each face a saliency map of its predicted class: a list of
        ferkit.recognition.explain.Explanation (`.face`, `.map` 48x48 in [0, 1], `.photo_map()`).

        method: "auto" (Grad-CAM on the last conv block, else the smoothed input gradient),
        "gradcam", "gradient" or "gradient-x-input"; see ferkit.models.saliency.
        """
        return self.explain_prepared(self.prepare(image), method)

    def explain_prepared(self, prepared: Prepared, method: str = "auto") -> list:
        """explain() of an image already read, detected and aligned by prepare()."""
        from ferkit.recognition.explain import explain_prepared

        return explain_prepared(self, prepared, method)

    def __call__(self, image: ImageInput) -> list[Face]:
        return self.predict(image)
