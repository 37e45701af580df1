"""Batched inference on 48x48 faces, with optional flip or ten-crop test-time augmentation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ferkit.devices import resolve_device
from ferkit.models.checkpoint import build_model, load_checkpoint

TTA_MODES = ("none", "flip", "tencrop")
_CROP_PAD = 4  # ten-crop: pad 4 px, take the 4 corner and the centre 48x48 crops, each also flipped


def tta_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The augmented copies of a (B, 1, 48, 48) batch whose predictions are averaged."""
    if mode == "none":
        return [x]
    if mode == "flip":
        return [x, x.flip(-1)]
    if mode == "tencrop":
        h, w = x.shape[-2:]
        padded = F.pad(x, (_CROP_PAD,) * 4, mode="replicate")
        offsets = [(0, 0), (0, 2 * _CROP_PAD), (2 * _CROP_PAD, 0), (2 * _CROP_PAD, 2 * _CROP_PAD),
                   (_CROP_PAD, _CROP_PAD)]
        crops = [padded[..., i:i + h, j:j + w] for i, j in offsets]
        return crops + [c.flip(-1) for c in crops]
    raise ValueError(f"tta must be one of {TTA_MODES}, got {mode!r}")


@dataclass
class Predictor:
    """A trained model with its normalisation and class names, ready to classify uint8 faces."""

    model: nn.Module
    classes: tuple[str, ...]
    mean: float
    std: float
    device: torch.device
    arch: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, spec: str | Path = "default", device: str = "auto") -> Predictor:
        """From 'default' (bundled weights), a run directory or a checkpoint file."""
        dev = resolve_device(device)
        ckpt = load_checkpoint(spec)
        model = build_model(ckpt).to(dev)
        norm = ckpt["normalization"]
        meta = {k: ckpt.get(k) for k in ("path", "config", "epoch", "metrics")}
        return cls(model, tuple(ckpt["classes"]), float(norm["mean"]), float(norm["std"]), dev,
                   ckpt["arch"], meta)

    def to_input(self, faces: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (N, 48, 48) -> normalised float (N, 1, 48, 48) on the model's device."""
        x = torch.as_tensor(faces).to(self.device)
        if x.ndim == 3:
            x = x.unsqueeze(1)
        return (x.float() / 255.0 - self.mean) / self.std

    @torch.inference_mode()
    def predict_proba(
        self, faces: np.ndarray, tta: str = "none", batch_size: int = 256
    ) -> np.ndarray:
        """(N, 48, 48) uint8 faces -> (N, n_classes) probabilities, averaged over the TTA views."""
        if tta not in TTA_MODES:
            raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
        self.model.eval()
        out = np.zeros((len(faces), len(self.classes)), dtype=np.float32)
        for start in range(0, len(faces), batch_size):
            x = self.to_input(faces[start:start + batch_size])
            views = tta_views(x, tta)
            probs = sum(self.model(v).float().softmax(dim=1) for v in views) / len(views)
            out[start:start + len(x)] = probs.cpu().numpy()
        return out
