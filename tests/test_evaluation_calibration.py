"""Calibration: ECE and reliability bins by hand, temperature scaling recovered on synthetic
logits, a checkpoint's temperature applied by every inference path (Predictor, ONNX export,
the server engine, the Recognizer's Face.score) and absent from uncalibrated checkpoints,
`ferkit calibrate` fitting on a Training slice only, and the reliability diagram."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_support import run_ferkit as ferkit
from PIL import Image
from synth import make_csv_dataset
from test_evaluation_helpers import make_checkpoint, make_face_dataset

from ferkit.errors import ModelError
from ferkit.evaluation import calibration
from ferkit.evaluation.calibration import calibrate, calibrated_payload, plan_holdout
from ferkit.evaluation.metrics import (
    ECE_BINS,
    calibration_summary,
    expected_calibration_error,
    reliability_bins,
)
from ferkit.models.calibration import checkpoint_temperature, fit_temperature, nll
from ferkit.models.checkpoint import build_model, load_checkpoint, save_checkpoint
from ferkit.models.inference import predict_logits
from ferkit.models.predictor import Predictor

TOLERANCE = 1e-4


def _two_class(confidence: float, n: int, n_correct: int) -> tuple[np.ndarray, np.ndarray]:
    """n faces whose top class (0) has probability `confidence`; the first n_correct are
    class 0 (right), the others class 1 (wrong)."""
    probs = np.tile([confidence, 1 - confidence], (n, 1))
    labels = np.array([0] * n_correct + [1] * (n - n_correct))
    return probs, labels


# -- ECE by hand ------------------------------------------------------------------------------

def test_perfectly_calibrated_predictions_have_zero_ece():
    parts = [_two_class(0.6, 50, 30), _two_class(0.8, 100, 80), _two_class(0.95, 40, 38)]
    probs = np.concatenate([p for p, _ in parts])
    labels = np.concatenate([y for _, y in parts])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    summary = calibration_summary(probs, labels)
    assert summary["mean_confidence"] == pytest.approx(summary["accuracy"])
    assert summary["bins"] == ECE_BINS == 15


def test_overconfident_predictions_have_the_known_ece():
    probs, labels = _two_class(0.9, 10, 6)  # says 0.9, right 6 times in 10
    assert expected_calibration_error(probs, labels) == pytest.approx(0.3)
    # two bins: 0.9 right 6/10 (gap 0.3), 0.6 right 2/10 (gap 0.4): weighted 0.35
    p2, y2 = _two_class(0.6, 10, 2)
    both = expected_calibration_error(np.concatenate([probs, p2]), np.concatenate([labels, y2]))
    assert both == pytest.approx(0.35)
    # underconfidence counts as much: says 0.6, always right
    assert expected_calibration_error(*_two_class(0.6, 5, 5)) == pytest.approx(0.4)


def test_reliability_bins_are_equal_width_and_right_closed():
    probs = np.array([[1.0, 0.0], [2 / 3, 1 / 3], [0.7, 0.3], [0.5, 0.5]])
    labels = np.array([0, 0, 1, 0])
    bins = reliability_bins(probs, labels, 3)
    np.testing.assert_allclose(bins["edges"], [0, 1 / 3, 2 / 3, 1])
    assert bins["count"].tolist() == [0, 2, 2]  # 2/3 belongs to (1/3, 2/3], 1.0 to the last
    assert np.isnan(bins["accuracy"][0]) and np.isnan(bins["confidence"][0])
    np.testing.assert_allclose(bins["accuracy"][1:], [1.0, 0.5])
    np.testing.assert_allclose(bins["confidence"][1:], [(2 / 3 + 0.5) / 2, 0.85])
    summary = calibration_summary(probs, labels, 3)
    assert summary["reliability"]["accuracy"][0] is None  # JSON null, not NaN
    assert expected_calibration_error(np.zeros((0, 2)), np.zeros(0, dtype=int)) == 0.0


# -- fitting T --------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [2.5, 0.5])
def test_fitting_recovers_a_known_temperature(k):
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2.0, (20000, 7))
    p = np.exp(true_logits - true_logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = (p.cumsum(1) > rng.random((len(p), 1))).argmax(1)  # drawn from the true softmax
    logits = true_logits * k  # over- (k > 1) or under- (k < 1) confident by a factor k
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(k, rel=0.04)
    assert nll(logits, labels, t) < nll(logits, labels, 1.0)
    assert nll(logits, labels, t) <= min(nll(logits, labels, t * f) for f in (0.97, 1.03))


def test_checkpoint_temperature_defaults_to_one_and_refuses_nonsense():
    assert checkpoint_temperature({}) == 1.0
    assert checkpoint_temperature({"calibration": {"temperature": 1.7}}) == 1.7
    for bad in ({"calibration": {}}, {"calibration": {"temperature": 0}},
                {"calibration": {"temperature": float("nan")}}, {"calibration": "x"}):
        with pytest.raises(ModelError):
            checkpoint_temperature(bad)


def test_the_slice_is_the_runs_own_holdout_when_it_had_one():
    assert plan_holdout({"config": {"holdout": 0.2, "holdout_seed": 3}}, None, None) == \
        (0.2, 3, False)
    assert plan_holdout({"config": {"holdout": 0.2, "holdout_seed": 3}}, 0.1, None) == \
        (0.1, 3, True)
    assert plan_holdout({"config": {"holdout": None, "holdout_seed": 0}}, None, None) == \
        (0.1, 0, True)  # trained on all of Training: the slice was seen
    assert plan_holdout({"config": {"ensemble": {}}}, None, 5) == (0.1, 5, None)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(Exception, match="--holdout"):
            plan_holdout({}, bad, None)


# -- a calibrated checkpoint in every inference path -------------------------------------------

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A briefly trained checkpoint and its copy calibrated with T = 2.5 (softer)."""
    folder = tmp_path_factory.mktemp("calibration")
    plain = make_checkpoint(folder / "plain.pt", steps=4, seed=3)
    ckpt = load_checkpoint(plain)
    calibrated = folder / "calibrated.pt"
    save_checkpoint(calibrated, calibrated_payload(ckpt, {"temperature": 2.5,
                                                          "fitted_on": "a test"}))
    return plain, calibrated


@pytest.fixture(scope="module")
def faces():
    return np.random.default_rng(4).integers(0, 256, (40, 48, 48), dtype=np.uint8)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_predictor_applies_the_temperature_and_only_where_stored(checkpoints, faces):
    plain, calibrated = checkpoints
    raw = Predictor.load(plain, device="cpu")
    cal = Predictor.load(calibrated, device="cpu")
    assert raw.temperature == 1.0 and "calibration" not in raw.meta
    assert cal.temperature == 2.5 and cal.meta["calibration"]["fitted_on"] == "a test"
    logits = predict_logits(build_model(load_checkpoint(plain)), faces).numpy()
    # uncalibrated: exactly the softmax of the logits, as before calibration existed
    np.testing.assert_allclose(raw.predict_proba(faces), _softmax(logits), atol=1e-6)
    got = cal.predict_proba(faces)
    np.testing.assert_allclose(got, _softmax(logits / 2.5), atol=1e-6)
    assert (got.argmax(1) == raw.predict_proba(faces).argmax(1)).all()  # accuracy unchanged
    assert (got.max(1) < raw.predict_proba(faces).max(1)).all()  # softened
    flip = cal.predict_proba(faces, tta="flip")  # per view, then averaged
    mirrored = faces[:, :, ::-1].copy()
    expected = (cal.predict_proba(faces) + cal.predict_proba(mirrored)) / 2
    np.testing.assert_allclose(flip, expected, atol=1e-6)


def test_the_rest_of_the_checkpoint_is_kept(checkpoints):
    plain, calibrated = checkpoints
    a, b = load_checkpoint(plain), load_checkpoint(calibrated)
    assert set(b) == set(a) | {"calibration"}
    for key in ("arch", "arch_kwargs", "classes", "normalization", "config", "epoch", "metrics"):
        assert a[key] == b[key]
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]) and tensor.dtype == \
            b["state_dict"][key].dtype


def test_ensemble_log_probabilities_are_scaled_like_logits(checkpoints, faces, tmp_path):
    from ferkit.models.ensemble import build_ensemble

    plain, _ = checkpoints
    other = make_checkpoint(tmp_path / "other.pt", steps=2, seed=8)
    payload = build_ensemble([plain, other])
    save_checkpoint(tmp_path / "ens.pt", {**payload, "calibration": {"temperature": 1.5}})
    cal = Predictor.load(tmp_path / "ens.pt", device="cpu")
    logp = predict_logits(cal.model, faces).numpy()  # log of the averaged probabilities
    np.testing.assert_allclose(np.exp(logp).sum(1), 1.0, atol=1e-5)
    want = np.exp(logp / 1.5) / np.exp(logp / 1.5).sum(1, keepdims=True)  # p^(1/T), renormalised
    np.testing.assert_allclose(cal.predict_proba(faces), want, atol=1e-6)


def test_onnx_export_bakes_the_temperature_in(checkpoints, faces, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from ferkit.models.export import export_onnx
    from ferkit.models.onnx_predictor import OnnxPredictor

    plain, calibrated = checkpoints
    for ckpt, t in ((plain, 1.0), (calibrated, 2.5)):
        onnx_file = export_onnx(ckpt, tmp_path / f"{ckpt.stem}.onnx").path
        exported = OnnxPredictor.load(onnx_file)
        assert exported.temperature == t
        assert ("calibration" in exported.meta) == (t != 1.0)
        for tta in ("none", "flip"):
            want = Predictor.load(ckpt, device="cpu").predict_proba(faces, tta=tta)
            got = exported.predict_proba(faces, tta=tta)
            assert np.abs(got - want).max() < TOLERANCE, (ckpt.name, tta)
    softer = OnnxPredictor.load(tmp_path / "calibrated.onnx").predict_proba(faces)
    sharper = OnnxPredictor.load(tmp_path / "plain.onnx").predict_proba(faces)
    assert (softer.max(1) < sharper.max(1)).all()


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_the_server_engine_and_the_recognizer_give_calibrated_scores(checkpoints, faces,
                                                                    monkeypatch, tmp_path,
                                                                    backend):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from ferkit.models.onnx_predictor import OnnxPredictor
    from ferkit.recognition import recognizer
    from ferkit.recognition.samples import SAMPLE_PHOTO
    from ferkit.serving.engine import Engine

    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))
    original = recognizer.load_classifier
    monkeypatch.setattr(recognizer, "load_classifier",  # the engine's model, in `backend`
                        lambda model, *args, **kwargs: original(model, "cpu", backend))
    _, calibrated = checkpoints
    want = Predictor.load(calibrated, device="cpu")
    engine = Engine(calibrated, batching=False)
    try:
        predictor = engine.recognizer.predictor
        assert isinstance(predictor, OnnxPredictor) == (backend == "onnxruntime")
        assert predictor.temperature == 2.5
        assert np.abs(engine.classify(faces[:8]) - want.predict_proba(faces[:8])).max() \
            < TOLERANCE
        found = engine.recognizer.predict(SAMPLE_PHOTO)
        assert found
        crops = np.stack([f.crop for f in found])
        probs = want.predict_proba(crops)
        for face, p in zip(found, probs, strict=True):  # Face.score: the calibrated probability
            assert face.score == pytest.approx(float(p.max()), abs=TOLERANCE)
    finally:
        engine.close()


# -- fitting on a Training slice only, and `ferkit calibrate` ----------------------------------

def test_calibrate_fits_on_training_faces_only(checkpoints, monkeypatch):
    plain, _ = checkpoints
    dataset = make_face_dataset(n_per_class=20)
    seen = []
    original = calibration.model_logits

    def record(ckpt, faces, *args, **kwargs):
        seen.append(faces)
        return original(ckpt, faces, *args, **kwargs)

    monkeypatch.setattr(calibration, "model_logits", record)
    ckpt = {**load_checkpoint(plain), "config": {"holdout": 0.25, "holdout_seed": 1}}
    entry = calibrate(ckpt, dataset, device="cpu")
    train = {f.tobytes() for f in dataset.split("train").images}
    (faces,) = seen
    assert len(faces) == entry["faces"] > 0 and all(f.tobytes() in train for f in faces)
    assert entry["holdout"] == 0.25 and entry["holdout_seed"] == 1
    assert entry["seen_in_training"] is False and "unseen" in entry["fitted_on"]
    assert entry["nll_after"] <= entry["nll_before"] + 1e-9
    assert entry["temperature"] > 0 and 0 <= entry["ece_after"] <= 1


def test_calibrate_command_writes_a_loadable_calibrated_copy(checkpoints, monkeypatch, capsys,
                                                             tmp_path):
    plain, _ = checkpoints
    csv = make_csv_dataset(tmp_path, n_per_class=10)
    out = tmp_path / "cal.pt"
    code, stdout, err = ferkit(monkeypatch, capsys, "calibrate", "--model", plain, "--data", csv,
                               "--holdout", "0.3", "--out", out, "--device", "cpu", "--json")
    assert code == 0, err
    entry = json.loads(stdout)["calibration"]
    assert entry["holdout"] == 0.3 and entry["faces"] == 14  # round(0.3 * 6) of each class
    assert entry["seen_in_training"] is None and "note:" in err  # config {}: unknown
    stored = load_checkpoint(out)["calibration"]
    assert stored == entry
    assert Predictor.load(out, device="cpu").temperature == pytest.approx(entry["temperature"])
    code, stdout, err = ferkit(monkeypatch, capsys, "calibrate", "--model", plain, "--data", csv,
                               "--out", out, "--device", "cpu")
    assert code == 0, err
    assert "temperature" in stdout and "ferkit evaluate --model" in stdout
    code, _, err = ferkit(monkeypatch, capsys, "calibrate", "--model", plain, "--data", csv,
                          "--holdout", "0", "--out", out)
    assert code == 2 and "never fits on the val or test split" in err


# -- `ferkit evaluate`: ECE in the report, the reliability diagram -----------------------------

def test_evaluate_reports_ece_and_writes_the_reliability_diagram(checkpoints, monkeypatch,
                                                                 capsys, tmp_path):
    plain, calibrated = checkpoints
    csv = make_csv_dataset(tmp_path, n_per_class=10)
    code, out, err = ferkit(monkeypatch, capsys, "evaluate", "--model", calibrated, "--data",
                            csv, "--out", tmp_path / "report", "--device", "cpu")
    assert code == 0, err
    assert "ECE (15 bins, temperature 2.500)" in out and "mean confidence" in out
    with Image.open(tmp_path / "report" / "reliability.png") as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 300
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert saved["calibration"]["temperature"] == 2.5 and saved["calibration"]["bins"] == 15
    assert sum(saved["calibration"]["count"]) == saved["n"]
    code, out, _ = ferkit(monkeypatch, capsys, "evaluate", "--model", plain, "--data", csv,
                          "--json", "--device", "cpu")
    result = json.loads(out)
    assert result["calibration"]["temperature"] == 1.0
    probs = Predictor.load(plain, device="cpu")
    from ferkit.data import load_dataset

    test = load_dataset(csv).split("test")
    p = probs.predict_proba(test.images)
    assert result["ece"] == pytest.approx(expected_calibration_error(p, test.labels), abs=1e-6)
    assert result["mean_confidence"] == pytest.approx(float(p.max(1).mean()), abs=1e-6)
