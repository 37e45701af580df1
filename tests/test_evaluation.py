"""ferkit.evaluation.evaluate: split choice, class mapping, TTA and the report's outputs."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_evaluation_helpers import make_checkpoint, make_face_dataset
from torch import nn

from ferkit.classes import CLASSES
from ferkit.errors import DataError, FerkitError, ModelError
from ferkit.evaluation.evaluate import EvaluationReport, default_split, evaluate
from ferkit.models.predictor import Predictor

REQUIRED_KEYS = {"accuracy", "macro_f1", "per_class", "confusion_matrix", "n"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", steps=2)


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return Predictor.load(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def dataset():
    return make_face_dataset(n_per_class=6)


def test_report_agrees_with_the_predictor(predictor, dataset):
    report = evaluate(predictor, dataset)
    test = dataset.split("test")
    probs = predictor.predict_proba(test.images)
    assert isinstance(report, EvaluationReport)
    assert report.split == "test" and report.n == len(test) == 14
    np.testing.assert_allclose(report.probabilities, probs, atol=1e-6)
    assert report.labels.tolist() == test.labels.tolist()
    assert report.accuracy == pytest.approx(float(np.mean(probs.argmax(1) == test.labels)))
    assert report.confusion_matrix.shape == (7, 7)
    assert report.confusion_matrix.sum() == 14
    assert list(report.per_class) == list(CLASSES)
    assert 0.0 <= report.macro_f1 <= 1.0


def test_to_dict_is_json_with_the_promised_keys(predictor, dataset):
    d = evaluate(predictor, dataset, split="val").to_dict()
    assert set(d) >= REQUIRED_KEYS
    assert set(d) - REQUIRED_KEYS <= {"model", "split", "tta", "data", "classes", "arch", "ece",
                                      "mean_confidence", "calibration"}
    assert 0.0 <= d["ece"] <= 1.0 and 0.0 <= d["mean_confidence"] <= 1.0
    again = json.loads(json.dumps(d))
    assert again["confusion_matrix"] == d["confusion_matrix"]
    assert set(again["per_class"]["happy"]) == {"precision", "recall", "f1", "support"}
    assert d["split"] == "val" and d["n"] == 14


def test_default_split_prefers_test_then_val_then_the_only_one():
    assert default_split(make_face_dataset(1, splits=("train", "val", "test"))) == "test"
    assert default_split(make_face_dataset(1, splits=("train", "val"))) == "val"
    assert default_split(make_face_dataset(1, splits=("train",))) == "train"


def test_unknown_split_lists_the_available_ones(predictor):
    ds = make_face_dataset(1, splits=("train", "val"))
    with pytest.raises(DataError, match="no split 'test'.*available splits: train, val"):
        evaluate(predictor, ds, split="test")


def test_unknown_tta_is_a_ferkit_error(predictor, dataset):
    with pytest.raises(FerkitError, match="unknown TTA mode 'mirror'.*none, flip, tencrop"):
        evaluate(predictor, dataset, tta="mirror")


def test_dataset_with_a_subset_of_the_classes(predictor):
    ds = make_face_dataset(4, classes=(3, 6), splits=("test",))
    report = evaluate(predictor, ds)
    assert len(report.per_class) == 7
    assert report.per_class["angry"]["support"] == 0
    assert report.per_class["angry"]["recall"] is None
    present_f1 = [report.per_class[c]["f1"] for c in ("happy", "neutral")]
    assert report.macro_f1 == pytest.approx(np.mean(present_f1))
    assert report.confusion_matrix[[0, 1, 2, 4, 5]].sum() == 0  # rows of absent classes


class _Permute(nn.Module):
    def __init__(self, model, perm):
        super().__init__()
        self.model, self.perm = model, perm

    def forward(self, x):
        return self.model(x)[:, self.perm]


def test_model_classes_in_another_order_or_spelling_are_mapped_by_name(predictor, dataset):
    perm = [6, 5, 4, 3, 2, 1, 0]
    spelled = {"angry": "anger", "happy": "happiness", "surprise": "surprised"}
    classes = tuple(spelled.get(CLASSES[i], CLASSES[i]) for i in perm)
    permuted = Predictor(_Permute(predictor.model, perm), classes, predictor.device)
    a, b = evaluate(predictor, dataset), evaluate(permuted, dataset)
    assert b.accuracy == pytest.approx(a.accuracy)
    assert b.macro_f1 == pytest.approx(a.macro_f1)
    assert list(b.per_class)[0] == "neutral"
    for name in CLASSES:
        assert b.per_class[spelled.get(name, name)] == a.per_class[name]
    np.testing.assert_array_equal(b.confusion_matrix, a.confusion_matrix[np.ix_(perm, perm)])


def test_model_lacking_a_class_of_the_data_is_rejected(tmp_path, dataset):
    six = tuple(c for c in CLASSES if c != "disgust")
    p = Predictor.load(make_checkpoint(tmp_path / "six.pt", classes=six), device="cpu")
    with pytest.raises(ModelError, match=r"cannot classify disgust \(2 faces\)"):
        evaluate(p, dataset)
    ok = evaluate(p, make_face_dataset(2, classes=(0, 3, 6), splits=("test",)))
    assert ok.confusion_matrix.shape == (6, 6) and ok.n == 6


def test_tta_gives_valid_probabilities_that_differ_from_none(predictor, dataset):
    base = evaluate(predictor, dataset, tta="none").probabilities
    for mode in ("flip", "tencrop"):
        probs = evaluate(predictor, dataset, tta=mode).probabilities
        assert probs.shape == base.shape
        assert np.all(probs >= 0) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
        assert np.abs(probs - base).max() > 1e-4, f"{mode} changed nothing"


def test_flip_tta_averages_the_mirror_image(predictor, dataset):
    faces = dataset.split("test").images
    mirrored = faces[:, :, ::-1].copy()
    expected = (predictor.predict_proba(faces) + predictor.predict_proba(mirrored)) / 2
    np.testing.assert_allclose(predictor.predict_proba(faces, tta="flip"), expected, atol=1e-5)


def test_mistakes_are_wrong_and_most_confident_first(predictor, dataset):
    report = evaluate(predictor, dataset, split="train")
    idx = report.mistakes()
    assert len(idx) == int(np.sum(report.predictions != report.labels))
    assert np.all(report.predictions[idx] != report.labels[idx])
    assert np.all(np.diff(report.scores[idx]) <= 0)
    assert len(report.mistakes(3)) == min(3, len(idx))


def test_save_writes_metrics_predictions_and_figures(predictor, dataset, tmp_path):
    report = evaluate(predictor, dataset)
    files = report.save(tmp_path / "out")
    assert set(files) == {"metrics", "predictions", "confusion_matrix", "reliability",
                          "mistakes"}
    assert json.loads(files["metrics"].read_text()) == json.loads(json.dumps(report.to_dict()))
    rows = files["predictions"].read_text().splitlines()
    assert rows[0].startswith("name,true,predicted,score,p_angry") and len(rows) == report.n + 1
    for key in ("confusion_matrix", "reliability", "mistakes"):
        with Image.open(files[key]) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200


def test_perfect_model_has_no_mistakes_and_the_grid_says_so(dataset, tmp_path):
    class Oracle(nn.Module):  # reads the class back from the synthetic face's pattern
        def __init__(self, faces, labels):
            super().__init__()
            self.lookup = {f.tobytes(): int(y) for f, y in zip(faces, labels, strict=True)}

        def forward(self, x):
            raw = (x * 255).round().clamp(0, 255).to(torch.uint8).squeeze(1).numpy()
            ys = torch.tensor([self.lookup[f.tobytes()] for f in raw])
            return nn.functional.one_hot(ys, 7).float() * 20

    test = dataset.split("test")
    p = Predictor(Oracle(test.images, test.labels), CLASSES, torch.device("cpu"))
    report = evaluate(p, dataset)
    assert report.accuracy == 1.0 and report.macro_f1 == 1.0 and len(report.mistakes()) == 0
    assert report.save(tmp_path)["mistakes"].exists()


def test_evaluate_accepts_a_checkpoint_path(checkpoint, dataset, predictor):
    a = evaluate(checkpoint, dataset)
    b = evaluate(predictor, dataset)
    assert a.accuracy == b.accuracy and a.model == str(checkpoint)
