"""ferkit.evaluation.metrics: confusion matrix, per-class scores and macro-F1, checked by hand."""

import numpy as np
import pytest

from ferkit.evaluation.metrics import classification_metrics, confusion_matrix


def test_confusion_matrix_rows_are_true_columns_predicted():
    labels = np.array([0, 0, 1, 2, 2, 2])
    preds = np.array([0, 1, 1, 2, 0, 2])
    cm = confusion_matrix(labels, preds, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert cm.dtype == np.int64


def test_hand_computed_example():
    labels = np.array([0, 0, 1, 2, 2, 2])
    preds = np.array([0, 1, 1, 2, 0, 2])
    m = classification_metrics(labels, preds, 3, ["a", "b", "c"])
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    a, b, c = (m["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"], a["support"]) == (pytest.approx(0.5), 0.5, 2)
    assert (b["precision"], b["recall"], b["support"]) == (pytest.approx(0.5), 1.0, 1)
    assert (c["precision"], c["recall"], c["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert b["f1"] == pytest.approx(2 / 3)
    assert c["f1"] == pytest.approx(0.8)
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)


def _reference(labels, preds, n):
    """Straight from the definitions, one class at a time."""
    f1s, out = [], {}
    for k in range(n):
        tp = sum(1 for t, p in zip(labels, preds, strict=True) if t == k and p == k)
        fp = sum(1 for t, p in zip(labels, preds, strict=True) if t != k and p == k)
        fn = sum(1 for t, p in zip(labels, preds, strict=True) if t == k and p != k)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else None
        f1 = None if rec is None else (2 * prec * rec / (prec + rec) if prec + rec else 0.0)
        out[k] = (prec, rec, f1)
        if tp + fn:
            f1s.append(f1)
    return out, sum(f1s) / len(f1s)


@pytest.mark.parametrize("seed", range(5))
def test_matches_the_definitions_on_random_predictions(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, 300)
    preds = np.where(rng.random(300) < 0.5, labels, rng.integers(0, 7, 300))
    m = classification_metrics(labels, preds, 7)
    ref, macro = _reference(labels.tolist(), preds.tolist(), 7)
    assert m["accuracy"] == pytest.approx(float(np.mean(labels == preds)))
    assert m["macro_f1"] == pytest.approx(macro)
    for k, (prec, rec, f1) in ref.items():
        entry = m["per_class"][str(k)]
        assert entry["precision"] == pytest.approx(prec)
        assert entry["recall"] == pytest.approx(rec)
        assert entry["f1"] == pytest.approx(f1)
    assert m["confusion_matrix"].sum() == 300
    assert m["confusion_matrix"].sum(axis=1).tolist() == np.bincount(labels, minlength=7).tolist()


def test_macro_f1_counts_only_classes_present_in_the_labels():
    labels = np.array([3, 3, 3, 6, 6])
    preds = np.array([3, 3, 3, 6, 6])
    m = classification_metrics(labels, preds, 7)
    assert m["macro_f1"] == 1.0 and m["accuracy"] == 1.0
    absent = m["per_class"]["0"]
    assert absent == {"precision": None, "recall": None, "f1": None, "support": 0}


def test_absent_class_predicted_gets_precision_zero_and_hurts_present_recall():
    labels = np.array([3, 3, 3, 3])
    preds = np.array([3, 3, 0, 0])  # class 0 is not in the data but gets predicted
    m = classification_metrics(labels, preds, 7)
    assert m["per_class"]["0"]["precision"] == 0.0
    assert m["per_class"]["0"]["f1"] is None  # undefined without support; not in the macro mean
    assert m["per_class"]["3"]["recall"] == 0.5
    assert m["macro_f1"] == pytest.approx(2 * 1 * 0.5 / 1.5)


def test_present_class_never_predicted_counts_as_f1_zero():
    labels = np.array([0, 0, 1, 1])
    preds = np.array([0, 0, 0, 0])
    m = classification_metrics(labels, preds, 2)
    assert m["per_class"]["1"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert m["macro_f1"] == pytest.approx((2 * 0.5 * 1 / 1.5 + 0.0) / 2)


def test_empty_input_and_bad_input():
    m = classification_metrics(np.array([], dtype=int), np.array([], dtype=int), 7)
    assert m["n"] == 0 and m["accuracy"] == 0.0 and m["macro_f1"] == 0.0
    with pytest.raises(ValueError, match="outside"):
        classification_metrics(np.array([0, 7]), np.array([0, 1]), 7)
    with pytest.raises(ValueError, match="length"):
        classification_metrics(np.array([0, 1]), np.array([0]), 7)
    with pytest.raises(ValueError, match="integer"):
        classification_metrics(np.array([0.5]), np.array([0]), 7)
    with pytest.raises(ValueError, match="names"):
        classification_metrics(np.array([0]), np.array([0]), 7, ["a"])
