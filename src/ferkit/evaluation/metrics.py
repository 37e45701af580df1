"""Classification metrics in plain numpy: confusion matrix, per-class precision/recall/F1, macro-F1,
and how well the confidence matches the accuracy (expected calibration error, reliability bins).

Conventions (the same as ``ferkit evaluate`` reports):

* The confusion matrix has one row per *true* class and one column per *predicted* class.
* Per-class entries exist for every class of the model, present in the data or not.
  A ratio whose denominator is zero is undefined and reported as ``None`` (``null`` in JSON):
  recall and F1 of a class with no faces in the data (support 0), and precision of a class
  that is neither present nor ever predicted. Precision of a class that is present but never
  predicted is 0 (as scikit-learn's ``zero_division=0``), so its F1 is 0 too.
* Macro-F1 is the unweighted mean of F1 over the classes *present in the true labels*.
  Classes absent from the data are left out rather than counted as 0, so evaluating on a
  dataset that holds only some of the classes still gives a meaningful number; a present
  class the model never predicts counts as F1 = 0.
* Calibration (Guo et al., 2017): the confidence of a face is its top probability, and it is
  correct when the top class is the true one. The faces are put into ECE_BINS equal-width
  confidence bins (i/B, (i+1)/B] (a confidence of exactly 0 goes into the first); the expected
  calibration error is the mean over faces of |accuracy - mean confidence| of their bin, i.e.
  sum_b (n_b / n) |acc_b - conf_b|. 0 means "0.8 is right 80% of the time" in every bin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ECE_BINS = 15


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts: rows are true classes, columns predicted classes."""
    labels = _as_index_array(labels, n_classes, "labels")
    preds = _as_index_array(preds, n_classes, "preds")
    if labels.shape != preds.shape:
        raise ValueError(f"labels and preds differ in length ({len(labels)} vs {len(preds)})")
    flat = labels * n_classes + preds
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_metrics(labels: np.ndarray, preds: np.ndarray, n_classes: int,
                           class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    ``labels`` and ``preds`` are integer class indices in ``range(n_classes)``. Returns a dict
    with ``accuracy`` (float), ``macro_f1`` (float), ``per_class`` ({name: {precision, recall,
    f1, support}}, names from ``class_names`` or "0", "1", ...), ``confusion_matrix``
    (int64 array, rows true) and ``n``. See the module docstring for the zero-division rules.
    """
    if class_names is None:
        class_names = [str(i) for i in range(n_classes)]
    if len(class_names) != n_classes:
        raise ValueError(f"{len(class_names)} class names for {n_classes} classes")
    cm = confusion_matrix(labels, preds, n_classes)
    n = int(cm.sum())
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)

    per_class: dict[str, dict[str, float | int | None]] = {}
    f1_present = []
    for k, name in enumerate(class_names):
        precision = tp[k] / predicted[k] if predicted[k] else (0.0 if support[k] else None)
        recall = tp[k] / support[k] if support[k] else None
        if recall is None:
            f1 = None
        elif precision + recall > 0:
            f1 = 2 * precision * recall / (precision + recall)
        else:
            f1 = 0.0
        per_class[name] = {
            "precision": _float(precision),
            "recall": _float(recall),
            "f1": _float(f1),
            "support": int(support[k]),
        }
        if support[k]:
            f1_present.append(f1)

    return {
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(np.mean(f1_present)) if f1_present else 0.0,
        "per_class": per_class,
        "confusion_matrix": cm,
        "n": n,
    }


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _as_index_array(values: np.ndarray, n_classes: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must be integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(f"{what} hold class indices outside 0..{n_classes - 1}")
    return arr


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS
                     ) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin: `edges` (n_bins + 1,), `count`, mean `confidence` and
    `accuracy` (n_bins,); confidence and accuracy are NaN in an empty bin.

    `probabilities` (n, C) rows summing to 1, `labels` (n,) true class indices in their order.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be (n, classes), got shape {probs.shape}")
    labels = _as_index_array(labels, probs.shape[1], "labels")
    if len(labels) != len(probs):
        raise ValueError(f"probabilities and labels differ in length ({len(probs)} vs "
                         f"{len(labels)})")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(axis=1) == labels) if len(probs) else np.zeros(0, dtype=bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin b holds (edges[b], edges[b + 1]]; 0 joins the first bin, anything above 1 the last
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(index, weights=correct.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
        accuracy = np.where(count > 0, acc_sum / np.maximum(count, 1), np.nan)
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": accuracy}


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray,
                               n_bins: int = ECE_BINS) -> float:
    """ECE over `n_bins` equal-width confidence bins (see the module docstring); 0.0 for no
    faces."""
    bins = reliability_bins(probabilities, labels, n_bins)
    n = int(bins["count"].sum())
    if n == 0:
        return 0.0
    full = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][full] - bins["confidence"][full])
    return float(np.sum(bins["count"][full] * gaps) / n)


def calibration_summary(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS
                        ) -> dict[str, Any]:
    """`ece`, `bins`, `mean_confidence` and `accuracy` (of the top class) of a set of
    predictions, plus the per-bin `reliability` (lists; None in an empty bin)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    bins = reliability_bins(probs, labels, n_bins)
    n = len(probs)
    labels = np.asarray(labels)
    return {
        "ece": expected_calibration_error(probs, labels, n_bins),
        "bins": n_bins,
        "mean_confidence": float(probs.max(axis=1).mean()) if n else 0.0,
        "accuracy": float(np.mean(probs.argmax(axis=1) == labels)) if n else 0.0,
        "reliability": {
            "count": [int(c) for c in bins["count"]],
            "confidence": [None if np.isnan(v) else float(v) for v in bins["confidence"]],
            "accuracy": [None if np.isnan(v) else float(v) for v in bins["accuracy"]],
        },
    }
