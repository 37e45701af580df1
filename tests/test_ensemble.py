"""Ensembles: one checkpoint averaging several models' probabilities, loadable like any other."""

import numpy as np
import pytest
import torch
from test_evaluation_helpers import make_checkpoint, make_face_dataset

from ferkit.classes import CLASSES
from ferkit.errors import ModelError
from ferkit.evaluation.evaluate import evaluate
from ferkit.models.checkpoint import build_model, load_checkpoint
from ferkit.models.ensemble import Ensemble, build_ensemble, save_ensemble
from ferkit.models.predictor import Predictor


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two models that differ in weights, dropout setting and normalisation."""
    d = tmp_path_factory.mktemp("members")
    a = make_checkpoint(d / "a.pt", seed=1, steps=1)
    b = make_checkpoint(d / "b.pt", seed=2, mean=0.0, std=1.0, arch_kwargs={"dropout": 0.1})
    return a, b


@pytest.fixture(scope="module")
def faces():
    return make_face_dataset(3, seed=9).images


def _proba(spec, faces, tta="none"):
    return Predictor.load(spec, device="cpu").predict_proba(faces, tta=tta)


def test_ensemble_equals_the_mean_of_its_members(members, faces, tmp_path):
    out = save_ensemble(members, tmp_path / "ensemble.pt")
    assert out["arch"] == "ensemble"
    pa, pb = _proba(members[0], faces), _proba(members[1], faces)
    assert np.abs(pa - pb).max() > 1e-3  # the members really differ
    pe = _proba(tmp_path / "ensemble.pt", faces)
    np.testing.assert_allclose(pe, (pa + pb) / 2, atol=1e-5)
    pe_flip = _proba(tmp_path / "ensemble.pt", faces, tta="flip")
    expected = (_proba(members[0], faces, "flip") + _proba(members[1], faces, "flip")) / 2
    np.testing.assert_allclose(pe_flip, expected, atol=1e-5)


def test_weights_are_normalised_and_applied(members, faces, tmp_path):
    save_ensemble(members, tmp_path / "w.pt", weights=[3, 1])
    pa, pb = _proba(members[0], faces), _proba(members[1], faces)
    np.testing.assert_allclose(_proba(tmp_path / "w.pt", faces), 0.75 * pa + 0.25 * pb, atol=1e-5)
    ckpt = load_checkpoint(tmp_path / "w.pt")
    assert ckpt["arch_kwargs"]["weights"] == [0.75, 0.25]
    save_ensemble(members, tmp_path / "only_a.pt", weights=[1, 0])
    np.testing.assert_allclose(_proba(tmp_path / "only_a.pt", faces), pa, atol=1e-5)


def test_round_trip_is_an_ordinary_checkpoint(members, tmp_path):
    save_ensemble(members, tmp_path / "e.pt")
    ckpt = load_checkpoint(tmp_path / "e.pt")
    assert ckpt["format"] == "ferkit-checkpoint"
    assert ckpt["classes"] == list(CLASSES)
    assert ckpt["normalization"] == {"mean": 0.0, "std": 1.0}
    specs = ckpt["arch_kwargs"]["members"]
    assert [s["arch"] for s in specs] == ["shallow-cnn", "shallow-cnn"]
    assert specs[1]["normalization"] == {"mean": 0.0, "std": 1.0}
    assert specs[1]["arch_kwargs"] == {"dropout": 0.1}
    assert [m["path"] for m in ckpt["config"]["ensemble"]["members"]] == [str(p) for p in members]
    model = build_model(ckpt)
    assert isinstance(model.net, Ensemble) and len(model.net.members) == 2
    original = load_checkpoint(members[0])["state_dict"]
    for key, value in original.items():
        torch.testing.assert_close(model.state_dict()[f"net.members.0.{key}"], value)
    # and saving what was loaded gives the same predictions again (run dirs work as members too)
    (tmp_path / "run").mkdir()
    (tmp_path / "e.pt").rename(tmp_path / "run" / "best.pt")
    assert Predictor.load(tmp_path / "run", device="cpu").arch == "ensemble"


def test_evaluate_works_on_an_ensemble(members, tmp_path):
    save_ensemble(members, tmp_path / "e.pt")
    ds = make_face_dataset(2, splits=("test",))
    report = evaluate(Predictor.load(tmp_path / "e.pt", device="cpu"), ds, tta="tencrop")
    assert report.n == 14 and report.confusion_matrix.sum() == 14
    np.testing.assert_allclose(report.probabilities.sum(1), 1.0, atol=1e-5)


def test_an_ensemble_can_be_a_member(members, faces, tmp_path):
    save_ensemble(members, tmp_path / "inner.pt")
    save_ensemble([tmp_path / "inner.pt", members[0]], tmp_path / "outer.pt")
    pa, pb = _proba(members[0], faces), _proba(members[1], faces)
    np.testing.assert_allclose(_proba(tmp_path / "outer.pt", faces), 0.75 * pa + 0.25 * pb,
                               atol=1e-5)


def test_members_with_different_classes_are_rejected(members, tmp_path):
    reordered = make_checkpoint(tmp_path / "r.pt", classes=tuple(reversed(CLASSES)))
    with pytest.raises(ModelError, match="different classes"):
        build_ensemble([members[0], reordered])
    six = make_checkpoint(tmp_path / "six.pt", classes=CLASSES[:6])
    with pytest.raises(ModelError, match="different classes"):
        save_ensemble([members[0], six], tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


def test_bad_weights_and_missing_members_are_model_errors(members, tmp_path):
    with pytest.raises(ModelError, match="3 ensemble weights given for 2 models"):
        build_ensemble(members, weights=[1, 1, 1])
    with pytest.raises(ModelError, match="non-negative"):
        build_ensemble(members, weights=[1, -1])
    with pytest.raises(ModelError, match="non-negative"):
        build_ensemble(members, weights=[0, 0])
    with pytest.raises(ModelError, match="no such checkpoint"):
        build_ensemble([members[0], tmp_path / "missing.pt"])
    with pytest.raises(ModelError, match="at least one"):
        build_ensemble([])
