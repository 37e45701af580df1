"""Fitting a checkpoint's temperature on a --holdout slice of Training (`ferkit calibrate`).

The temperature itself, its fit and how a checkpoint stores it are ferkit.models.calibration's;
choosing the slice (the one training draws, ferkit.training.splits) and measuring the model on
it live here, above the training layer.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferkit.errors import ConfigError
from ferkit.models.calibration import KEY, fit_temperature, nll, scaled_probabilities

if TYPE_CHECKING:
    from ferkit.data.dataset import FaceDataset

DEFAULT_HOLDOUT = 0.1



def holdout_of(ckpt: dict[str, Any]) -> tuple[float, int] | None:
    """(fraction, seed) of the Training slice the checkpoint's run held out for validation, or
    None where its config records none (trained on all of Training, or unknown)."""
    config = ckpt.get("config") or {}
    fraction = config.get("holdout")
    if isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and fraction > 0:
        return float(fraction), int(config.get("holdout_seed") or 0)
    return None


def plan_holdout(ckpt: dict[str, Any], holdout: float | None, holdout_seed: int | None
                 ) -> tuple[float, int, bool | None]:
    """(fraction, seed, seen_in_training) of the slice to fit on.

    Unset options take the run's own holdout where it had one (faces it never trained on),
    else DEFAULT_HOLDOUT and seed 0. seen_in_training: False for exactly the run's own slice,
    True for a run that trained on all of Training (its config says holdout none or 0) or for
    another slice of a run that held one out, None where the config does not say (an ensemble).
    """
    own = holdout_of(ckpt)
    fraction = holdout if holdout is not None else (own[0] if own else DEFAULT_HOLDOUT)
    seed = holdout_seed if holdout_seed is not None else (own[1] if own else 0)
    if not (0 < fraction < 1):
        raise ConfigError(f"--holdout {fraction}: expected a fraction of Training between 0 and "
                          "1 (calibration never fits on the val or test split)")
    config = ckpt.get("config") or {}
    if own is not None:
        seen = (fraction, seed) != own
    elif "holdout" in config:
        seen = True  # the run's config records no holdout: it trained on every Training face
    else:
        seen = None
    return float(fraction), int(seed), seen


def model_logits(ckpt: dict[str, Any], faces: np.ndarray, batch_size: int = 256,
                 device: str = "cpu") -> np.ndarray:
    """(n, C) float64 logits (log-probabilities for an ensemble) of the checkpoint's raw,
    uncalibrated model on uint8 faces, in fp32 without TTA."""
    from ferkit.devices import resolve_device
    from ferkit.models.checkpoint import build_model
    from ferkit.models.inference import predict_logits

    model = build_model(ckpt).to(resolve_device(device))
    return predict_logits(model, faces, batch_size=batch_size).cpu().numpy().astype(np.float64)


def calibrate(ckpt: dict[str, Any], dataset: FaceDataset, holdout: float | None = None,
              holdout_seed: int | None = None, batch_size: int = 256, device: str = "cpu"
              ) -> dict[str, Any]:
    """Fit the temperature of checkpoint dict `ckpt` on a Training slice of `dataset`; returns
    the `calibration` entry (the checkpoint itself is not changed).

    The slice is the one training draws (ferkit.training.splits.split_train_val with the same
    fraction and seed). Any calibration already in the checkpoint is ignored: T is fitted on
    the raw logits.
    """
    from ferkit.evaluation.evaluate import map_labels
    from ferkit.evaluation.metrics import ECE_BINS, expected_calibration_error
    from ferkit.training.splits import split_train_val

    fraction, seed, seen = plan_holdout(ckpt, holdout, holdout_seed)
    split = split_train_val(dataset, holdout=fraction, holdout_seed=seed)
    where = str(ckpt.get("path") or "model")
    labels = map_labels(split.val_labels, tuple(ckpt["classes"]), where)
    logits = model_logits(ckpt, split.val_images, batch_size, device)
    t = fit_temperature(logits, labels)
    before, after = scaled_probabilities(logits, 1.0), scaled_probabilities(logits, t)
    seen_text = {True: "faces the model trained on", False: "faces the run held out (unseen)",
                 None: "whether the model trained on them is unknown"}[seen]
    return {
        "temperature": round(t, 6),
        "fitted_on": f"holdout {fraction:.0%} of train (seed {seed}) of "
                     f"{Path(dataset.source).name if dataset.source else 'the data'}: "
                     f"{len(labels):,} faces; {seen_text}",
        "data": str(dataset.source),
        "holdout": fraction,
        "holdout_seed": seed,
        "faces": int(len(labels)),
        "seen_in_training": seen,
        "nll_before": round(nll(logits, labels, 1.0), 6),
        "nll_after": round(nll(logits, labels, t), 6),
        "ece_before": round(expected_calibration_error(before, labels, ECE_BINS), 6),
        "ece_after": round(expected_calibration_error(after, labels, ECE_BINS), 6),
        "bins": ECE_BINS,
        "date": date.today().isoformat(),
    }


def calibrated_payload(ckpt: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """What save_checkpoint writes: the loaded checkpoint with its `calibration` entry replaced
    (every other entry kept: weights in their dtype, provenance, resume states), less the `path`
    load_checkpoint added."""
    return {**{k: v for k, v in ckpt.items() if k != "path"}, KEY: dict(entry)}
