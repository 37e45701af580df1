"""Temperature scaling: one number T that makes a model's confidence mean what it says.

The probabilities become softmax(logits / T) (Guo et al., 2017, "On Calibration of Modern Neural
Networks"). T > 1 softens them (an overconfident model), T < 1 sharpens them; the top class, hence
accuracy and every confusion matrix, never changes. For an ensemble, whose output is the
log of its averaged probabilities, softmax(log p / T) is the same scaling of that average.

T is fitted by minimising the negative log-likelihood of softmax(logits / T) on faces the
model's numbers are not reported on: a --holdout slice of Training (`ferkit calibrate`, fitted by
ferkit.evaluation.calibration), never the
val split (FER2013 PublicTest, where the README reports) or the test split. It is stored in the
checkpoint as plain values,

    calibration = {"temperature": T, "fitted_on": "...", "faces": n, "data": "...",
                   "holdout": 0.1, "holdout_seed": 0, "seen_in_training": bool or None,
                   "nll_before": ..., "nll_after": ..., "ece_before": ..., "ece_after": ...,
                   "date": "YYYY-MM-DD"}

and applied wherever the checkpoint classifies: Predictor (so `ferkit evaluate`, `predict`, the
Recognizer and `ferkit serve`), and the graph `ferkit export` writes (a division before its
softmax). A checkpoint without the entry has T = 1: exactly the probabilities it always gave.
The raw model (`build_model`) stays uncalibrated: training, distillation from a teacher and
saliency maps work on its logits.

A model trained on all of Training has seen the slice it is calibrated on, so its NLL there is
lower than on new faces and the fitted T is biased (usually towards sharpening); the entry says
so (`seen_in_training`). A run that held out a slice itself (`ferkit train --holdout`) is
calibrated on that very slice by default.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ferkit.errors import DataError, ModelError

KEY = "calibration"
# log T is searched in [log T_MIN, log T_MAX]; the NLL is unimodal in log T (convex in 1/T)
T_MIN, T_MAX = 0.05, 20.0


def checkpoint_temperature(ckpt: dict[str, Any], where: str = "checkpoint") -> float:
    """The temperature a checkpoint's `calibration` entry stores; 1.0 without one."""
    entry = ckpt.get(KEY)
    if entry is None:
        return 1.0
    try:
        t = float(entry["temperature"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{where}: malformed {KEY} entry ({exc!r})") from None
    if not (math.isfinite(t) and t > 0):
        raise ModelError(f"{where}: calibration temperature must be a positive number, got {t}")
    return t


# -- fitting ----------------------------------------------------------------------------------

def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / temperature) at the true labels."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    labels = np.asarray(labels, dtype=np.int64)
    return float(-_log_softmax(z)[np.arange(len(labels)), labels].mean())


def scaled_probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature), float64."""
    return np.exp(_log_softmax(np.asarray(logits, dtype=np.float64) / float(temperature)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, tol: float = 1e-6) -> float:
    """The T in [T_MIN, T_MAX] minimising nll(logits, labels, T): a golden-section search on
    log T (deterministic, no optimiser state; the NLL is convex in 1/T, so unimodal in log T).

    `logits` (n, C): logits or log-probabilities; `labels` (n,) indices into their columns.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise DataError(f"fit_temperature needs (n, C) logits and n labels, n > 0; got "
                        f"{logits.shape} and {labels.shape}")
    if not np.all(np.isfinite(logits)):
        raise DataError("fit_temperature: the logits hold NaN or infinite values")

    def f(log_t: float) -> float:
        return nll(logits, labels, math.exp(log_t))

    inv_phi = (math.sqrt(5) - 1) / 2
    a, b = math.log(T_MIN), math.log(T_MAX)
    c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - inv_phi * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + inv_phi * (b - a)
            fd = f(d)
    return float(math.exp((a + b) / 2))
