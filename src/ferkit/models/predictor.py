"""A loaded checkpoint ready to classify uint8 faces, with optional flip or ten-crop TTA."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ferkit.devices import resolve_device
from ferkit.models.calibration import KEY as CALIBRATION
from ferkit.models.calibration import checkpoint_temperature
from ferkit.models.checkpoint import build_model, load_checkpoint
from ferkit.models.inference import predict_proba, to_pixels, tta_views
from ferkit.precision import Precision
from ferkit.tta import TTA_MODES, check_tta

__all__ = ["TTA_MODES", "Predictor", "tta_views"]  # TTA_MODES, tta_views: for older imports


@dataclass
class Predictor:
    """A model (its normalisation inside it) with its class names, on a device.

    `model` maps (B, 1, 48, 48) faces in [0, 1] to logits (or log-probabilities), as every model
    `build_model` returns does. `temperature` is the checkpoint's calibration (1.0 without one,
    see ferkit.models.calibration): probabilities are softmax(logits / temperature).
    """

    model: nn.Module
    classes: tuple[str, ...]
    device: torch.device
    arch: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    precision: Precision | None = None  # None: fp32
    temperature: float = 1.0

    @classmethod
    def load(cls, spec: str | Path = "default", device: str = "auto") -> Predictor:
        """From 'default' (bundled weights), a run directory or a checkpoint file."""
        dev = resolve_device(device)
        ckpt = load_checkpoint(spec)
        model = build_model(ckpt).to(dev)
        meta = {k: ckpt.get(k) for k in ("path", "config", "epoch", "metrics")}
        if ckpt.get(CALIBRATION) is not None:
            meta[CALIBRATION] = ckpt[CALIBRATION]
        return cls(model, tuple(ckpt["classes"]), dev, ckpt["arch"], meta,
                   temperature=checkpoint_temperature(ckpt, str(ckpt.get("path") or spec)))

    def to_input(self, faces: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (N, 48, 48) -> float (N, 1, 48, 48) pixels in [0, 1] on the model's device."""
        return to_pixels(faces, self.device)

    def predict_proba(
        self, faces: np.ndarray, tta: str = "none", batch_size: int = 256
    ) -> np.ndarray:
        """(N, 48, 48) uint8 faces -> (N, n_classes) probabilities (calibrated where the
        checkpoint holds a temperature), averaged over the TTA views."""
        if len(faces) == 0:
            check_tta(tta)
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        probs = predict_proba(self.model, faces, tta, self.precision, batch_size,
                              temperature=self.temperature)
        return probs.cpu().numpy().astype(np.float32, copy=False)
