"""The model side of the server: one Recognizer per process, its classifier behind a MicroBatcher.

Requests call Engine.predict / Engine.classify from worker threads (never on the event loop).
Face detection runs in those threads in parallel; the classification of the detected faces goes
through the batcher, so faces from concurrent requests share one model run.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.classes import FACE_SIZE
from ferkit.images import DecodedImage
from ferkit.run_files import CHECKPOINTS
from ferkit.serving.batching import MicroBatcher
from ferkit.serving.config import DEFAULTS, ServeConfig

log = logging.getLogger("ferkit.serve")

def model_name(spec: str | Path) -> str:
    """'default', or a checkpoint file's / run directory's name."""
    if str(spec) == "default":
        return "default"
    path = Path(spec)
    if path.is_dir():
        return path.resolve().name
    if path.stem in {Path(n).stem for n in CHECKPOINTS} and path.parent.name:
        return f"{path.resolve().parent.name}/{path.name}"
    return path.name


class Engine:
    """Loads the model once; thread-safe predict() for photos and classify() for cropped faces.
    The settings' defaults are ServeConfig's (`from_config` takes a whole one)."""

    def __init__(self, model: str | Path = DEFAULTS.model, *, device: str = DEFAULTS.device,
                 min_confidence: float = DEFAULTS.min_confidence,
                 detect_size: int = DEFAULTS.detect_size, batching: bool = DEFAULTS.batching,
                 max_batch: int = DEFAULTS.max_batch,
                 max_wait_ms: float = DEFAULTS.max_wait_ms) -> None:
        from ferkit.recognition.recognizer import Recognizer

        start = time.perf_counter()
        self.spec = str(model)
        self.name = model_name(model)
        # The recognizer classifies the faces predict() and explain() find through the batcher,
        # whose model call is the recognizer's own classify(): faces of concurrent requests
        # share one model run.
        self.recognizer = Recognizer(model=model, device=device, min_confidence=min_confidence,
                                     detect_size=detect_size, classify_with=self._batched)
        self._meta = self._read_meta()
        self._direct_classify = self.recognizer.classify
        self.batcher = MicroBatcher(self._direct_classify, enabled=batching, max_batch=max_batch,
                                    max_wait_ms=max_wait_ms)
        self.load_seconds = time.perf_counter() - start
        self._started = time.time()
        self._requests = {"predict": 0, "classify": 0, "explain": 0}
        self._lock = threading.Lock()
        self.warm_up()

    @classmethod
    def from_config(cls, config: ServeConfig) -> Engine:
        return cls(config.model, device=config.device, min_confidence=config.min_confidence,
                   detect_size=config.detect_size, batching=config.batching,
                   max_batch=config.max_batch, max_wait_ms=config.max_wait_ms)

    def _batched(self, faces: np.ndarray) -> np.ndarray:
        """The recognizer's `classify_with`: its faces go through the batcher (made after the
        recognizer, whose classify() it calls)."""
        return self.batcher.classify(faces)

    # -- metadata --------------------------------------------------------------------------------

    def _read_meta(self) -> dict[str, Any]:
        """arch, classes, metrics ... from the recognizer, or from the checkpoint file itself."""
        rec = self.recognizer
        predictor = getattr(rec, "predictor", None)
        meta: dict[str, Any] = {}
        if predictor is not None and getattr(predictor, "classes", None):
            meta = {"arch": predictor.arch, "classes": list(predictor.classes),
                    "device": str(predictor.device), **(predictor.meta or {})}
        else:
            from ferkit.models.checkpoint import load_checkpoint

            ckpt = load_checkpoint(self.spec)
            meta = {"arch": ckpt.get("arch"), "classes": list(ckpt.get("classes", [])),
                    "device": str(getattr(rec, "device", "cpu")),
                    **{k: ckpt.get(k) for k in ("path", "epoch", "metrics")}}
        if getattr(rec, "classes", None):
            meta["classes"] = list(rec.classes)
        return meta

    @property
    def classes(self) -> list[str]:
        return list(self._meta.get("classes") or [])

    def info(self) -> dict[str, Any]:
        from ferkit.models.checkpoint import accuracy_metric  # one metric naming (v1 converted)

        metrics = self._meta.get("metrics") or {}
        key, acc = accuracy_metric(metrics)
        path = self._meta.get("path")
        return {
            "name": self.name,
            "arch": self._meta.get("arch"),
            "classes": self.classes,
            "input_size": [FACE_SIZE, FACE_SIZE],
            "input_channels": 1,
            "accuracy": acc,
            "accuracy_metric": key,
            "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
            "epoch": self._meta.get("epoch"),
            "checkpoint": Path(path).name if path else None,
            "device": self._meta.get("device"),
            "batching": {**self.batcher.config(), **self.batcher.stats.as_dict()},
        }

    def stats(self) -> dict[str, Any]:
        with self._lock:
            requests = dict(self._requests)
        return {"uptime_s": round(time.time() - self._started, 1), "requests": requests,
                "batching": {**self.batcher.config(), **self.batcher.stats.as_dict()}}

    def _count(self, kind: str) -> None:
        with self._lock:
            self._requests[kind] += 1

    # -- inference -------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """One run on blank faces, so the first client does not pay for lazy initialisation."""
        try:
            self._direct_classify(np.full((1, FACE_SIZE, FACE_SIZE), 128, dtype=np.uint8))
        except Exception:  # noqa: BLE001 - a warm-up failure shows on the first real request
            log.exception("model warm-up failed")

    def predict(self, image: DecodedImage) -> list[dict[str, Any]]:
        """Faces in a decoded upload, boxes in the upload's own pixel coordinates (the
        Recognizer maps them from the shrunk copy it detected on)."""
        self._count("predict")
        return [face.to_dict() for face in self.recognizer.predict(image)]

    def explain(self, image: DecodedImage, method: str = "auto") -> list[dict[str, Any]]:
        """predict()'s faces, each with its saliency map (ferkit.recognition.explain): the
        48x48 numbers and a PNG of the aligned face beside its map. An ONNX model, which has
        no gradients, is a 501."""
        from ferkit.errors import ModelError
        from ferkit.recognition.explain import png_data_url
        from ferkit.serving.limits import ApiError

        self._count("explain")
        try:
            explanations = self.recognizer.explain(image, method)
        except ModelError as exc:
            raise ApiError(501, "not_explainable", str(exc)) from None
        return [{**e.to_dict(), "image": png_data_url(e.face_image(3 * FACE_SIZE))}
                for e in explanations]

    def classify(self, faces: np.ndarray) -> np.ndarray:
        """(n, 48, 48) uint8 -> (n, classes) probabilities, through the batcher (blocking)."""
        self._count("classify")
        return self.batcher.classify(faces)

    def submit(self, faces: np.ndarray) -> Future:
        """Non-blocking classify(): a future of the probabilities (batching enabled only)."""
        self._count("classify")
        return self.batcher.submit(faces)

    def close(self) -> None:
        self.batcher.close()
