"""The one inference function: (model, faces, tta, precision) -> probabilities.

Validation during training (`ferkit.training.trainer._validate`), Predictor (hence `ferkit
evaluate`, Recognizer, `ferkit predict` and serving) and ensembles of any of these all classify
through `predict_proba`, so a validation accuracy and an evaluation of the same weights on the
same faces differ only by the precision they are asked to run in (training validates in its
training precision, for speed; Predictor runs fp32 unless told otherwise).

Models take faces as floats in [0, 1] (their normalisation is inside them, see
ferkit.models.normalize); uint8 faces are divided by 255 here. The TTA views are made here
only (OnnxPredictor uses the same); their names and check are ferkit.tta's, which the CLI
reads without importing torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ferkit.precision import Precision
from ferkit.tta import check_tta

FP32 = Precision(None, False, "fp32")
_CROP_PAD = 4  # ten-crop: pad 4 px, take the 4 corner and the centre 48x48 crops, each also flipped


def tta_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The augmented copies of a (B, 1, 48, 48) batch whose predictions are averaged."""
    check_tta(mode)
    if mode == "none":
        return [x]
    if mode == "flip":
        return [x, x.flip(-1)]
    h, w = x.shape[-2:]
    padded = F.pad(x, (_CROP_PAD,) * 4, mode="replicate")
    offsets = [(0, 0), (0, 2 * _CROP_PAD), (2 * _CROP_PAD, 0), (2 * _CROP_PAD, 2 * _CROP_PAD),
               (_CROP_PAD, _CROP_PAD)]
    crops = [padded[..., i:i + h, j:j + w] for i, j in offsets]
    return crops + [c.flip(-1) for c in crops]


def to_pixels(faces, device: torch.device | str | None = None) -> torch.Tensor:
    """(N, 48, 48) or (N, 1, 48, 48) faces, uint8 or floats in [0, 1] -> float (N, 1, 48, 48)."""
    x = torch.as_tensor(faces)
    if device is not None:
        x = x.to(device)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def model_device(model: nn.Module) -> torch.device:
    """Where the model's weights are (CPU for a model without any)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


@torch.inference_mode()
def predict_proba(model: nn.Module, faces, tta: str = "none", precision: Precision | None = None,
                  batch_size: int = 256, temperature: float = 1.0) -> torch.Tensor:
    """(N, C) float32 probabilities on the model's device, averaged over the TTA views.

    `faces`: uint8 (0..255) or float ([0, 1]) arrays or tensors, (N, 48, 48) or (N, 1, 48, 48).
    The model runs in eval mode (its previous mode is restored) and in `precision` (fp32 if
    None): the autocast dtype and, where it says so, channels_last. `temperature` T: each
    view's probabilities are softmax(logits / T) (a checkpoint's calibration, see
    ferkit.models.calibration); 1 leaves the logits untouched.
    """
    check_tta(tta)
    precision = precision or FP32
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        out = []
        for start in range(0, len(faces), batch_size):
            views = tta_views(to_pixels(faces[start:start + batch_size], device), tta)
            probs = sum(_scaled(_logits(model, v, precision, device), temperature).softmax(dim=1)
                        for v in views)
            out.append(probs / len(views))
    finally:
        model.train(was_training)
    if not out:
        raise ValueError("predict_proba needs at least one face")
    return torch.cat(out)


@torch.inference_mode()
def predict_logits(model: nn.Module, faces, precision: Precision | None = None,
                   batch_size: int = 256) -> torch.Tensor:
    """(N, C) float32 logits (log-probabilities for an ensemble) on the model's device, one
    view (no TTA), in eval mode: what a temperature is fitted to."""
    precision = precision or FP32
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        out = [_logits(model, to_pixels(faces[start:start + batch_size], device), precision,
                       device) for start in range(0, len(faces), batch_size)]
    finally:
        model.train(was_training)
    if not out:
        raise ValueError("predict_logits needs at least one face")
    return torch.cat(out)


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits if temperature == 1.0 else logits / temperature


def _logits(model: nn.Module, x: torch.Tensor, precision: Precision, device: torch.device
            ) -> torch.Tensor:
    if precision.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with precision.autocast(device):
        return model(x).float()
