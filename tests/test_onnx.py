"""ONNX export and the onnxruntime backend: the same probabilities as PyTorch, any batch size,
every TTA mode, the bundled model included; clear errors for files that are not ferkit exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_support import run_ferkit
from recognition_support import make_checkpoint

from ferkit.errors import ModelError
from ferkit.models import onnx_predictor
from ferkit.models.export import export_onnx
from ferkit.models.onnx_predictor import OnnxPredictor
from ferkit.models.predictor import Predictor
from ferkit.recognition.recognizer import Recognizer, load_classifier

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    ckpt = make_checkpoint(folder / "tiny.pt")
    return ckpt, export_onnx(ckpt, folder / "tiny.onnx").path


@pytest.fixture(scope="module")
def faces():
    return np.random.default_rng(1).integers(0, 256, (300, 48, 48), dtype=np.uint8)


@pytest.mark.parametrize("tta", ["none", "flip", "tencrop"])
def test_onnxruntime_matches_pytorch(tiny, faces, tta):
    ckpt, onnx_file = tiny
    reference = Predictor.load(ckpt, device="cpu").predict_proba(faces, tta=tta)
    exported = OnnxPredictor.load(onnx_file)
    assert exported.classes == Predictor.load(ckpt, device="cpu").classes
    for batch in ((1, 7, 256) if tta == "none" else (7, 256)):  # batch 1: one mode is enough
        got = exported.predict_proba(faces, tta=tta, batch_size=batch)
        assert np.abs(got - reference).max() < TOLERANCE, (tta, batch)


def test_the_bundled_model_exports_faithfully(tmp_path, monkeypatch, capsys, faces):
    code, out, err = run_ferkit(monkeypatch, capsys, "export", "default", "--out",
                                tmp_path / "default.onnx")
    assert code == 0, err
    assert "checked: onnxruntime matches PyTorch" in out
    got = OnnxPredictor.load(tmp_path / "default.onnx").predict_proba(faces)
    want = Predictor.load("default", device="cpu").predict_proba(faces)
    assert np.abs(got - want).max() < TOLERANCE
    meta = OnnxPredictor.load(tmp_path / "default.onnx").meta
    assert meta["backend"] == "onnxruntime" and meta["source"].endswith("default.pt")


def test_recognizer_runs_an_onnx_file(tiny):
    ckpt, onnx_file = tiny
    rec_torch = Recognizer(model=ckpt, device="cpu", backend="torch")
    rec_onnx = Recognizer(model=onnx_file)
    assert isinstance(rec_onnx.predictor, OnnxPredictor)
    gray = np.random.default_rng(2).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    assert np.abs(rec_onnx.classify(gray) - rec_torch.classify(gray)).max() < TOLERANCE


def test_backend_mismatches_are_clear_errors(tiny, tmp_path):
    ckpt, onnx_file = tiny
    with pytest.raises(ModelError, match="runs with --backend onnxruntime"):
        load_classifier(onnx_file, backend="torch")
    with pytest.raises(ModelError, match="no such ONNX file"):
        OnnxPredictor.load(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        OnnxPredictor.load(junk)


def test_an_onnx_file_without_ferkit_metadata_is_refused(tiny, tmp_path):
    import onnx

    _, onnx_file = tiny
    graph = onnx.load(str(onnx_file))
    del graph.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(graph, str(bare))
    with pytest.raises(ModelError, match="not a ferkit export"):
        OnnxPredictor.load(bare)


def test_export_help_has_examples_and_names_the_extra(monkeypatch, capsys):
    code, out, _ = run_ferkit(monkeypatch, capsys, "export", "--help")
    assert code == 0 and "Examples" in out and "ferkit[onnx]" in out


def test_int8_export_keeps_the_metadata_and_the_answers(tiny, tmp_path, faces):
    from ferkit.models.export import quantize_int8

    _, onnx_file = tiny
    out = quantize_int8(onnx_file, tmp_path / "int8.onnx", faces)
    fp32, int8 = OnnxPredictor.load(onnx_file), OnnxPredictor.load(out)
    assert int8.classes == fp32.classes and int8.arch == fp32.arch
    assert out.stat().st_size < onnx_file.stat().st_size / 2  # int8 weights
    p32, p8 = fp32.predict_proba(faces), int8.predict_proba(faces)
    assert np.abs(p8 - p32).max() < 0.05
    assert (p8.argmax(1) == p32.argmax(1)).mean() > 0.9


def test_int8_needs_calibration_data(monkeypatch, capsys):
    code, _, err = run_ferkit(monkeypatch, capsys, "export", "default", "--int8")
    assert code == 2 and "--calibration-data" in err


FER2013 = Path(__file__).resolve().parents[1].parent / "shared/datasets/fer2013.zip"


@pytest.mark.skipif(not FER2013.is_file(), reason=f"FER2013 zip not found at {FER2013}")
def test_int8_bundled_model_loses_at_most_0_3_points_on_publictest(tmp_path, monkeypatch,
                                                                    capsys):
    code, out, err = run_ferkit(monkeypatch, capsys, "export", "default", "--int8",
                                "--calibration-data", FER2013, "--out", tmp_path / "q.onnx")
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("val accuracy (3,589 faces)"))
    fp32, int8 = (float(part.split()[-1].rstrip("%,")) for part in
                  (line.split(", int8")[0], line.split(", int8")[1].split(" (")[0]))
    assert int8 >= fp32 - 0.3, line


def test_the_server_engine_runs_an_onnx_file(tiny, faces):
    from ferkit.serving.engine import Engine

    ckpt, onnx_file = tiny
    engine = Engine(onnx_file, batching=False)
    try:
        info = engine.info()
        assert info["arch"] == "shallow-cnn" and info["name"] == "tiny.onnx"
        got = engine.classify(faces[:8])
        want = Predictor.load(ckpt, device="cpu").predict_proba(faces[:8])
        assert np.abs(got - want).max() < TOLERANCE
    finally:
        engine.close()


def test_a_checkpoint_runs_in_onnxruntime_on_the_cpu_exported_once(tiny, faces, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))
    ckpt, _ = tiny
    auto = load_classifier(ckpt, device="cpu")
    assert isinstance(auto, OnnxPredictor) and auto.meta["path"] == str(ckpt)
    (cached,) = (tmp_path / "cache" / "onnx").glob("*.onnx")
    stamp = cached.stat().st_mtime_ns
    want = Predictor.load(ckpt, device="cpu").predict_proba(faces)
    assert np.abs(auto.predict_proba(faces) - want).max() < TOLERANCE
    again = load_classifier(ckpt, backend="onnxruntime")  # the cached export, not a new one
    assert isinstance(again, OnnxPredictor) and cached.stat().st_mtime_ns == stamp
    assert isinstance(load_classifier(ckpt, device="cpu", backend="torch"), Predictor)
    monkeypatch.setattr(onnx_predictor, "has_onnx_extra", lambda: False)
    assert isinstance(load_classifier(ckpt, device="cpu"), Predictor)  # no extra: PyTorch


def test_a_failed_export_falls_back_to_pytorch_unless_onnxruntime_was_asked_for(
        tiny, monkeypatch, caplog):
    ckpt, _ = tiny

    def broken(spec):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(onnx_predictor, "cached_export", broken)
    assert isinstance(load_classifier(ckpt, device="cpu"), Predictor)
    assert "ONNX export failed (unsupported operator)" in caplog.text
    with pytest.raises(ModelError, match="ONNX export failed"):
        load_classifier(ckpt, backend="onnxruntime")


def test_evaluate_takes_an_exported_onnx_file(tiny, tmp_path, monkeypatch, capsys):
    """`ferkit evaluate --model m.onnx` gives the checkpoint's metrics (the file users ship)."""
    import json

    from synth import make_csv_dataset

    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))
    ckpt, onnx_file = tiny
    csv = make_csv_dataset(tmp_path, n_per_class=6)
    reports = {}
    for name, model in (("onnx", onnx_file), ("checkpoint", ckpt)):
        code, out, err = run_ferkit(monkeypatch, capsys, "evaluate", "--model", model, "--data",
                                    csv, "--json", "--device", "cpu", "--tta", "flip")
        assert code == 0, err
        reports[name] = json.loads(out)
    onnx_report, torch_report = reports["onnx"], reports["checkpoint"]
    assert onnx_report["model"] == str(onnx_file) and onnx_report["arch"] == "shallow-cnn"
    assert onnx_report["confusion_matrix"] == torch_report["confusion_matrix"]
    assert onnx_report["accuracy"] == torch_report["accuracy"] and onnx_report["n"] == 8
    code, _, err = run_ferkit(monkeypatch, capsys, "evaluate", "--model", onnx_file, "--data",
                              csv, "--device", "cuda")
    assert code == 1 and "runs on the CPU" in err


def test_commands_that_need_the_checkpoint_say_so_for_an_onnx_file(tiny, tmp_path, monkeypatch,
                                                                   capsys):
    """ensemble and train --teacher need the weights: a clear error, not an unpickling one."""
    from synth import make_csv_dataset

    from ferkit.models.checkpoint import load_checkpoint

    _, onnx_file = tiny
    with pytest.raises(ModelError, match="ONNX models are not supported here: use the checkpoint"):
        load_checkpoint(onnx_file)
    csv = make_csv_dataset(tmp_path, n_per_class=4)
    for args in (["ensemble", onnx_file, "default", "--out", tmp_path / "ens.pt"],
                 ["train", "--data", csv, "--teacher", onnx_file, "--epochs", "1",
                  "--device", "cpu", "--threads", "1", "--amp", "off", "--out", tmp_path / "run"]):
        code, _, err = run_ferkit(monkeypatch, capsys, *args)
        assert code == 1 and "ONNX models are not supported here: use the checkpoint" in err, err
        assert str(onnx_file) in err


def test_serve_with_several_workers_checks_an_onnx_file_in_the_parent(tiny, monkeypatch, capsys):
    """--workers > 1 loads the model in the parent first (to fail fast): an .onnx file too."""
    pytest.importorskip("uvicorn", reason="the serve extra is not installed")
    import uvicorn

    from ferkit.serving.app import ENV_CONFIG

    _, onnx_file = tiny
    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: started.update(kw, target=target))
    monkeypatch.setattr("ferkit.cli.serve._check_port", lambda host, port: None)
    monkeypatch.setenv(ENV_CONFIG, "")  # serve sets it for its workers: restored afterwards
    code, out, err = run_ferkit(monkeypatch, capsys, "serve", "--model", onnx_file, "--workers",
                                "2", "--device", "cpu")
    assert code == 0, err
    assert started["workers"] == 2 and "(shallow-cnn)" in out
