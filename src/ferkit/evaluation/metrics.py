"""Classification metrics in plain numpy: confusion matrix, per-class precision/recall/F1, macro-F1.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


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
