"""Saliency maps (`ferkit explain`, Recognizer.explain, POST /v1/explain): they point where the
model looks. A model trained on faces whose class is given only by a bright marker in the
top-left corner must have its maps' mass there, by Grad-CAM and by the gradient fallback."""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import run_ferkit as run
from PIL import Image
from test_training_helpers import tiny_config

from ferkit.classes import CLASSES
from ferkit.data.dataset import FaceDataset
from ferkit.errors import ModelError
from ferkit.models.predictor import Predictor
from ferkit.models.saliency import METHODS, SaliencyConfig, feature_layer, saliency
from ferkit.recognition.samples import SAMPLE_PHOTO

MARKED, PLAIN = CLASSES.index("angry"), CLASSES.index("happy")


def corner_faces(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise faces; every other one (class MARKED) has a white 10x10 square in the top-left
    corner, the others (PLAIN) have none: the marker is the only thing that tells them apart."""
    rng = np.random.default_rng(seed)
    images = rng.normal(128, 40, (n, 48, 48))
    labels = np.where(np.arange(n) % 2 == 0, MARKED, PLAIN)
    images[labels == MARKED, 2:12, 2:12] = 255
    return np.clip(images, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def corner_run(tmp_path_factory) -> Path:
    from ferkit.training.trainer import train

    images, labels = corner_faces(200, seed=0)
    splits = np.array(["train"] * len(labels), dtype=object)
    splits[::5] = "val"  # both classes in val
    names = np.array([f"corner:{i}" for i in range(len(labels))])
    dataset = FaceDataset(images, labels, splits.astype(str), names, "corner")
    # no augmentation: a flip would move the marker to the other corner
    result = train(tiny_config(tmp_path_factory.mktemp("corner") / "run", epochs=4,
                               augment="none"), dataset)
    assert result.best_val_accuracy == 1.0
    return result.run_dir


@pytest.fixture(scope="module")
def marked_faces() -> np.ndarray:
    images, labels = corner_faces(24, seed=1)
    return images[labels == MARKED]


def quadrant_shares(maps: np.ndarray) -> np.ndarray:
    """(N, 4) share of each map's mass in the top-left, top-right, bottom-left, bottom-right
    24x24 quadrants (a map spread evenly gives 0.25 each)."""
    q = maps.reshape(len(maps), 2, 24, 2, 24).sum(axis=(2, 4)).reshape(len(maps), 4)
    return q / q.sum(axis=1, keepdims=True)


def assert_mass_in_marked_corner(maps: np.ndarray) -> None:
    shares = quadrant_shares(maps)
    assert shares[:, 0].min() > 0.35, shares[:, 0]
    mean = shares.mean(axis=0)
    assert mean[0] > 0.45 and mean[0] > 2 * mean[1:].max(), mean


def test_gradcam_points_at_the_marker(corner_run, marked_faces):
    model = Predictor.load(corner_run, device="cpu").model
    result = saliency(model, marked_faces)
    assert result.method == "gradcam" and result.layer == "net.1"  # the last conv stage
    assert (result.targets == MARKED).all()
    assert result.maps.shape == (len(marked_faces), 48, 48) and result.maps.dtype == np.float32
    assert result.maps.min() >= 0 and np.allclose(result.maps.max(axis=(1, 2)), 1)
    assert_mass_in_marked_corner(result.maps)


@pytest.mark.parametrize("method", ["gradient", "gradient-x-input"])
def test_input_gradient_points_at_the_marker(corner_run, marked_faces, method):
    model = Predictor.load(corner_run, device="cpu").model
    result = saliency(model, marked_faces, config=SaliencyConfig(method=method, samples=8))
    assert result.method == method and result.layer is None
    assert_mass_in_marked_corner(result.maps)


def test_an_ensemble_falls_back_to_the_input_gradient(corner_run, marked_faces, tmp_path):
    """Each member has its own last block, so no one layer carries the whole decision."""
    from ferkit.models.ensemble import save_ensemble

    save_ensemble([corner_run, corner_run], tmp_path / "ensemble.pt")
    model = Predictor.load(tmp_path / "ensemble.pt", device="cpu").model
    result = saliency(model, marked_faces, config=SaliencyConfig(samples=8))
    assert result.method == "gradient" and result.layer is None
    assert_mass_in_marked_corner(result.maps)
    with pytest.raises(ModelError, match="Grad-CAM"):
        saliency(model, marked_faces[:1], config=SaliencyConfig(method="gradcam"))


def test_saliency_leaves_the_model_as_it_was(corner_run, marked_faces):
    model = Predictor.load(corner_run, device="cpu").model
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    saliency(model, marked_faces[:2], targets=[PLAIN, PLAIN])
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())
    after = model.state_dict()
    assert all((before[k] == after[k]).all() for k in before)  # BN statistics untouched


def test_bad_options():
    with pytest.raises(ValueError, match="method"):
        SaliencyConfig(method="lime")
    with pytest.raises(ValueError, match="non-negative"):
        SaliencyConfig(samples=-1)


def test_cli_methods_match_the_library():
    from ferkit.cli.explain import METHODS as CLI_METHODS

    assert CLI_METHODS == METHODS


# -- the bundled model on the sample photo ------------------------------------------------------

@pytest.fixture(scope="module")
def recognizer():
    from ferkit.recognition.recognizer import Recognizer

    return Recognizer(backend="torch", device="cpu")


def test_recognizer_explain_on_the_sample_photo(recognizer):
    explanations = recognizer.explain(SAMPLE_PHOTO)
    faces = recognizer.predict(SAMPLE_PHOTO)
    assert len(explanations) == len(faces) == 3
    assert feature_layer(recognizer.predictor.model, torch.zeros(1, 1, 48, 48)) == "net.features"
    for e, face in zip(explanations, faces, strict=True):
        assert e.face.box == face.box and e.target == face.expression
        assert e.method == "gradcam" and e.layer == "net.features"
        assert e.map.shape == (48, 48) and e.map.min() >= 0 and e.map.max() == pytest.approx(1)
        heat = e.photo_map()
        width, height = Image.open(SAMPLE_PHOTO).size
        assert heat.shape == (height, width)
        # the map lies over the face: the box's centre is covered, a far corner is not
        x, y, w, h = e.face.box
        ys, xs = np.nonzero(heat > 0)
        assert xs.min() <= x + w / 2 <= xs.max() and ys.min() <= y + h / 2 <= ys.max()
        assert xs.max() - xs.min() < 2.5 * w and ys.max() - ys.min() < 2.5 * h
        half = e.photo_map((width // 2, height // 2))  # drawn on a half-size copy
        assert half.shape == (height // 2, width // 2)
        assert abs(np.nonzero(half)[1].mean() * 2 - xs.mean()) < 3
        assert e.face_image().shape == (192, 384, 3)
        record = e.to_dict()
        assert record["method"] == "gradcam" and np.asarray(record["map"]).shape == (48, 48)


def test_an_onnx_file_cannot_be_explained():
    from types import SimpleNamespace

    from ferkit.recognition.explain import torch_model_of

    rec = SimpleNamespace(predictor=SimpleNamespace(meta={"path": "model.onnx"}))
    with pytest.raises(ModelError, match="ONNX"):
        torch_model_of(rec)


# -- ferkit explain -----------------------------------------------------------------------------

def test_cli_writes_a_picture_per_face_and_the_overlay(monkeypatch, capsys, tmp_path):
    code, out, err = run(monkeypatch, capsys, "explain", SAMPLE_PHOTO, "--out", tmp_path)
    assert code == 0, err
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["sample.explain.png", "sample.face1.png", "sample.face2.png",
                       "sample.face3.png"]
    for name in written:
        assert f"wrote {tmp_path / name}" in out
    assert out.count("(Grad-CAM) on net.features") == 3
    sheet = Image.open(tmp_path / "sample.explain.png")
    assert sheet.width >= Image.open(SAMPLE_PHOTO).width
    assert Image.open(tmp_path / "sample.face1.png").height > 96


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--method", "lime"], 2, "--method lime: expected one of auto, gradcam"),
    (["--model", "model.onnx"], 1, "model.onnx: explaining needs the PyTorch checkpoint"),
])
def test_cli_bad_options_are_one_line(monkeypatch, capsys, args, code, message):
    got, out, err = run(monkeypatch, capsys, "explain", SAMPLE_PHOTO, *args)
    assert got == code and err.startswith(f"error: {message}") and err.count("\n") == 1


def test_cli_bad_inputs_are_one_line(monkeypatch, capsys, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 160), (128, 128, 128)).save(blank)
    for image, message in [(tmp_path / "missing.jpg", "no such file"),
                           (tmp_path, "is a folder"),
                           (blank, "no face found")]:
        code, out, err = run(monkeypatch, capsys, "explain", image, "--out", tmp_path / "o")
        assert code == 1 and message in err and err.count("\n") == 1, err


# -- POST /v1/explain ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server_url():
    """The app with the bundled model, served by uvicorn in a thread of this process."""
    pytest.importorskip("fastapi")
    import uvicorn

    from ferkit.serving.app import create_app
    from ferkit.serving.engine import Engine
    from ferkit.serving.process import free_port

    port = free_port()
    app = create_app(Engine("default", device="cpu"), threads=2)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_endpoint_returns_a_map_per_face(server_url):
    from ferkit.serving.process import http_request, post_image

    res = post_image(server_url + "/v1/explain", SAMPLE_PHOTO.read_bytes())
    assert res.status == 200, res.body[:300]
    body = res.json()
    predicted = post_image(server_url + "/v1/predict", SAMPLE_PHOTO.read_bytes()).json()
    assert [f["box"] for f in body["faces"]] == [f["box"] for f in predicted["faces"]]
    assert len(body["faces"]) == 3
    for face in body["faces"]:
        assert face["method"] == "gradcam" and face["explained"] == face["expression"]
        heat = np.asarray(face["map"])
        assert heat.shape == (48, 48) and heat.min() >= 0 and heat.max() == pytest.approx(1)
        prefix = "data:image/png;base64,"
        assert face["image"].startswith(prefix)
        png = Image.open(io.BytesIO(base64.b64decode(face["image"][len(prefix):])))
        assert png.format == "PNG" and png.size == (288, 144)
    gradient = post_image(server_url + "/v1/explain?method=gradient",
                          SAMPLE_PHOTO.read_bytes()).json()
    assert {f["method"] for f in gradient["faces"]} == {"gradient"}
    bad = post_image(server_url + "/v1/explain?method=lime", SAMPLE_PHOTO.read_bytes())
    assert bad.status == 422 and bad.json()["error"] == "bad_method"
    assert http_request("GET", server_url + "/healthz").json()["requests"]["explain"] == 2
    assert "/v1/explain" in http_request("GET", server_url + "/openapi.json").json()["paths"]


def test_endpoint_with_an_onnx_model_is_501(server_url, monkeypatch):
    from ferkit.serving.process import post_image

    def no_gradients(*args, **kwargs):
        raise ModelError("model.onnx: explaining needs the PyTorch checkpoint")

    from ferkit.recognition import recognizer

    monkeypatch.setattr(recognizer.Recognizer, "explain", no_gradients)
    res = post_image(server_url + "/v1/explain", SAMPLE_PHOTO.read_bytes())
    assert res.status == 501 and res.json()["error"] == "not_explainable"
