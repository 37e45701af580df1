"""OnnxPredictor: a `ferkit export` ONNX file run with onnxruntime, in place of Predictor.

It has Predictor's interface (classes, arch, meta, device, predict_proba with the same TTA
views, from ferkit.models.inference), so Recognizer, `ferkit predict` and `ferkit serve` take
either. The graph takes 0..255 grey levels and holds the model's normalisation; class names
and provenance come from the file's metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferkit.devices import cpu_count
from ferkit.errors import ModelError, printable
from ferkit.models.export import INPUT, META_PREFIX
from ferkit.models.inference import tta_views
from ferkit.tta import check_tta

# Bump when export_onnx changes the graph: cached exports are keyed by it. (Calibration did not
# need a bump: a checkpoint without it exports the same graph, and one with it is a new file.)
EXPORT_VERSION = "1"


def is_onnx_file(spec: str | Path) -> bool:
    return str(spec).lower().endswith(".onnx")


@lru_cache(maxsize=1)
def has_onnx_extra() -> bool:
    """Both packages of the onnx extra (export and runtime) are importable. Cached: the
    detector asks on every frame, and the search for an unimported package takes 0.1 ms."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def cached_export(spec: str | Path) -> Path:
    """The `ferkit export` file of checkpoint `spec`, kept in ferkit's cache dir per checkpoint
    content: only the first use of a checkpoint pays the export (about 3 s with `import onnx`)."""
    import hashlib
    import os

    from ferkit.data.cache import cache_dir, file_fingerprint
    from ferkit.models.checkpoint import resolve_checkpoint_path
    from ferkit.models.export import OPSET, export_onnx

    path = resolve_checkpoint_path(spec)
    key = f"{file_fingerprint(path)}/{EXPORT_VERSION}/{OPSET}".encode()
    out = cache_dir() / "onnx" / f"{path.stem}-{hashlib.sha256(key).hexdigest()[:16]}.onnx"
    if not out.is_file():
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        export_onnx(path, tmp)
        tmp.replace(out)
    return out


@dataclass
class OnnxPredictor:
    session: Any  # onnxruntime.InferenceSession
    classes: tuple[str, ...]
    arch: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def load(cls, path: str | Path, threads: int = 0) -> OnnxPredictor:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelError("the onnxruntime backend needs the onnx extra: "
                             "pip install 'ferkit[onnx]'") from exc
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: no such ONNX file (write one with ferkit export)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(torch.get_num_threads(), cpu_count())
        # onnxruntime's threads spin after each run by default, stealing the cores the face
        # detector needs next: a 3-face 640x480 photo took 83 ms with spinning, 38-54 without.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{path}: not a loadable ONNX model ({printable(exc)})") from exc
        props = session.get_modelmeta().custom_metadata_map
        if META_PREFIX + "classes" not in props:
            raise ModelError(f"{path}: not a ferkit export (no {META_PREFIX}classes metadata); "
                             "write it with ferkit export")
        meta = {k[len(META_PREFIX):]: v for k, v in props.items() if k.startswith(META_PREFIX)}
        metrics = json.loads(meta.get("metrics") or "{}")
        info = {"path": str(path), "metrics": metrics, "backend": "onnxruntime",
                "source": meta.get("source")}
        if meta.get("calibration"):  # already applied in the graph; recorded for reports
            info["calibration"] = json.loads(meta["calibration"])
        return cls(session, tuple(json.loads(meta["classes"])), meta.get("arch", ""), info)

    @property
    def temperature(self) -> float:
        """The calibration temperature the exported graph applies (1.0 without one)."""
        return float((self.meta.get("calibration") or {}).get("temperature", 1.0))

    def predict_proba(self, faces: np.ndarray, tta: str = "none", batch_size: int = 256
                      ) -> np.ndarray:
        """(N, 48, 48) uint8 faces -> (N, n_classes) probabilities, averaged over TTA views."""
        check_tta(tta)
        out = np.zeros((len(faces), len(self.classes)), dtype=np.float32)
        for start in range(0, len(faces), batch_size):
            x = torch.from_numpy(np.asarray(faces[start:start + batch_size], np.float32))
            views = tta_views(x.unsqueeze(1), tta)
            probs = sum(self.session.run(None, {INPUT: v.contiguous().numpy()})[0]
                        for v in views) / len(views)
            out[start:start + len(x)] = probs
        return out
