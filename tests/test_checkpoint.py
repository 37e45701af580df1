"""Checkpoint format 2: normalisation inside the model, version-1 files converted on load.

The reference for "identical" is the version-1 way of classifying: divide by 255, normalise by
hand with the checkpoint's mean/std, call the bare architecture, softmax.
"""

import numpy as np
import pytest
import torch

from ferkit.classes import CLASSES
from ferkit.errors import ModelError
from ferkit.models.checkpoint import (
    DEFAULT_WEIGHTS,
    VERSION,
    accuracy_metric,
    build_model,
    checkpoint_payload,
    load_checkpoint,
    save_checkpoint,
    upgrade_v1,
)
from ferkit.models.inference import predict_proba
from ferkit.models.normalize import NormalizedModel, normalized
from ferkit.models.predictor import Predictor
from ferkit.models.registry import create_model, list_models


def synthetic_faces(n: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 48, 48), dtype=np.uint8)


def v1_probabilities(arch: str, arch_kwargs: dict, state_dict: dict, mean: float, std: float,
                     faces: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Version-1 inference: the bare architecture on faces normalised by hand (its logits
    divided by a calibration temperature where one is given)."""
    net = create_model(arch, num_classes=len(CLASSES), **arch_kwargs)
    net.load_state_dict(state_dict)
    net.eval()
    with torch.inference_mode():
        x = (torch.from_numpy(faces).unsqueeze(1).float() / 255.0 - mean) / std
        logits = net(x).float()
        return (logits if temperature == 1.0 else logits / temperature).softmax(dim=1).numpy()


def trained_bare(arch: str = "shallow-cnn", seed: int = 0, **kwargs) -> torch.nn.Module:
    """A bare architecture with BN running statistics moved off their defaults."""
    torch.manual_seed(seed)
    net = create_model(arch, **kwargs)
    net.train()
    with torch.no_grad():
        net(torch.randn(8, 1, 48, 48))
    return net.eval()


def save_v1(path, net, arch="shallow-cnn", arch_kwargs=None, mean=0.45, std=0.2, **extra):
    """A checkpoint written the version-1 way (bare state_dict, normalisation beside it)."""
    save_checkpoint(path, {"version": 1, "arch": arch, "arch_kwargs": arch_kwargs or {},
                           "classes": list(CLASSES), "normalization": {"mean": mean, "std": std},
                           "config": {}, "epoch": 3, "metrics": {"val_acc": 0.5},
                           "state_dict": net.state_dict(), **extra})
    return path


def test_bundled_model_gives_the_version_1_probabilities():
    """The bundled model (either version on disk) classifies exactly as its bare architecture
    on faces normalised by hand with the statistics the file records."""
    raw = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    assert raw.get("version", 1) in (1, VERSION)
    state, norm = raw["state_dict"], raw["normalization"]
    if raw["version"] == VERSION:  # the wrapper's buffers must agree with the recorded numbers
        assert float(state["normalize.mean"]) == pytest.approx(norm["mean"])
        assert float(state["normalize.std"]) == pytest.approx(norm["std"])
        state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    faces = synthetic_faces()
    temperature = float((raw.get("calibration") or {}).get("temperature", 1.0))
    expected = v1_probabilities(raw["arch"], raw["arch_kwargs"], state,
                                norm["mean"], norm["std"], faces, temperature)
    got = Predictor.load("default", device="cpu").predict_proba(faces)
    np.testing.assert_array_equal(got, expected)


def test_version_1_checkpoint_converts_on_load_with_identical_probabilities(tmp_path):
    net = trained_bare(dropout=0.1)
    path = save_v1(tmp_path / "v1.pt", net, arch_kwargs={"dropout": 0.1})
    ckpt = load_checkpoint(path)
    assert ckpt["version"] == VERSION == 2
    assert set(ckpt["state_dict"]) == {"normalize.mean", "normalize.std"} | {
        f"net.{k}" for k in net.state_dict()}
    assert ckpt["normalization"] == {"mean": 0.45, "std": 0.2}
    faces = synthetic_faces()
    expected = v1_probabilities("shallow-cnn", {"dropout": 0.1}, net.state_dict(), 0.45, 0.2,
                                faces)
    np.testing.assert_array_equal(Predictor.load(path, device="cpu").predict_proba(faces),
                                  expected)
    # saved again (now version 2) it loads to the same model
    save_checkpoint(tmp_path / "v2.pt", ckpt)
    assert torch.load(tmp_path / "v2.pt", weights_only=True)["version"] == 2
    np.testing.assert_array_equal(Predictor.load(tmp_path / "v2.pt", device="cpu")
                                  .predict_proba(faces), expected)


def test_unversioned_hand_built_payloads_are_version_1(tmp_path):
    net = trained_bare()
    save_checkpoint(tmp_path / "old.pt", {"arch": "shallow-cnn", "classes": list(CLASSES),
                                          "normalization": {"mean": 0.5, "std": 0.25},
                                          "state_dict": net.state_dict()})
    assert torch.load(tmp_path / "old.pt", weights_only=True)["version"] == 1
    faces = synthetic_faces(4)
    np.testing.assert_array_equal(
        Predictor.load(tmp_path / "old.pt", device="cpu").predict_proba(faces),
        v1_probabilities("shallow-cnn", {}, net.state_dict(), 0.5, 0.25, faces))


def test_version_1_resume_states_are_converted():
    net = trained_bare()
    state = net.state_dict()
    ckpt = {"format": "ferkit-checkpoint", "version": 1, "arch": "shallow-cnn", "arch_kwargs": {},
            "classes": list(CLASSES), "normalization": {"mean": 0.5, "std": 0.25},
            "state_dict": state, "train_state_dict": state,
            "ema": {"n_averaged": torch.tensor(3), **{f"module.{k}": v for k, v in state.items()}},
            "metrics": {"best_val_accuracy": 0.7, "test_accuracy": 0.6}}
    out = upgrade_v1(ckpt)
    model = NormalizedModel(create_model("shallow-cnn"))
    model.load_state_dict(out["train_state_dict"])
    assert set(out["ema"]) == {"n_averaged"} | {f"module.{k}" for k in model.state_dict()}
    assert out["metrics"] == {"best_val_acc": 0.7, "test_acc": 0.6}
    assert accuracy_metric(out["metrics"]) == ("test_acc", 0.6)
    assert accuracy_metric({"best_val_accuracy": 0.7}) == (None, None)
    assert accuracy_metric({"val_accuracy": 0.7}) == ("val_acc", 0.7)


def test_version_1_ensemble_converts_with_identical_probabilities(tmp_path):
    a, b = trained_bare(seed=1), trained_bare(seed=2)
    norms = [{"mean": 0.45, "std": 0.2}, {"mean": 0.0, "std": 1.0}]
    state = {f"members.{i}.{k}": v for i, net in enumerate((a, b))
             for k, v in net.state_dict().items()}
    specs = [{"arch": "shallow-cnn", "arch_kwargs": {}, "normalization": n} for n in norms]
    save_checkpoint(tmp_path / "ens.pt", {
        "version": 1, "arch": "ensemble",
        "arch_kwargs": {"members": specs, "weights": [0.75, 0.25]},
        "classes": list(CLASSES), "normalization": {"mean": 0.0, "std": 1.0}, "config": {},
        "epoch": None, "metrics": {}, "state_dict": state})
    faces = synthetic_faces(8)
    expected = (0.75 * v1_probabilities("shallow-cnn", {}, a.state_dict(), 0.45, 0.2, faces)
                + 0.25 * v1_probabilities("shallow-cnn", {}, b.state_dict(), 0.0, 1.0, faces))
    got = Predictor.load(tmp_path / "ens.pt", device="cpu").predict_proba(faces)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_version_1_transfer_statistics_are_folded_into_the_normalisation():
    """v1 fed (p - m) / s and the adapter computed x * in_std + in_mean: v2 takes (p - a) / b."""
    ckpt = {"version": 1, "arch": "vgg16", "arch_kwargs": {"in_mean": 0.5, "in_std": 0.25,
                                                           "input_size": 64},
            "classes": list(CLASSES), "normalization": {"mean": 0.4, "std": 0.3},
            "state_dict": {"features.0.weight": torch.zeros(1)}}
    out = upgrade_v1(ckpt)
    assert out["arch_kwargs"] == {"input_size": 64}
    a, b = out["normalization"]["mean"], out["normalization"]["std"]
    p = torch.linspace(0, 1, 11)
    torch.testing.assert_close((p - a) / b, (p - 0.4) / 0.3 * 0.25 + 0.5)
    assert out["state_dict"]["normalize.mean"].item() == pytest.approx(a)


def test_payload_reads_the_statistics_from_the_model_and_refuses_bare_weights():
    model = normalized(trained_bare(), 0.3, 0.2)
    payload = checkpoint_payload(arch="shallow-cnn", classes=CLASSES,
                                 state_dict=model.state_dict(), epoch=1)
    assert payload["version"] == 2 and payload["normalization"] == pytest.approx(
        {"mean": 0.3, "std": 0.2})
    with pytest.raises(ModelError, match="not a NormalizedModel"):
        checkpoint_payload(arch="shallow-cnn", classes=CLASSES,
                           state_dict=trained_bare().state_dict())


def test_a_newer_version_is_refused(tmp_path):
    model = normalized(trained_bare(), 0.5, 0.25)
    payload = checkpoint_payload(arch="shallow-cnn", classes=CLASSES,
                                 state_dict=model.state_dict())
    save_checkpoint(tmp_path / "v9.pt", {**payload, "version": 9})
    with pytest.raises(ModelError, match="version 9"):
        load_checkpoint(tmp_path / "v9.pt")


def test_transfer_nets_take_pixels_and_the_ensemble_is_not_trainable():
    class Pixels(torch.nn.Module):
        takes_pixels = True

    assert normalized(Pixels(), 0.5, 0.25).stats == {"mean": 0.0, "std": 1.0}
    names = [e.name for e in list_models()]
    assert "ensemble" not in names and "ensemble" in [
        e.name for e in list_models(include_untrainable=True)]


def test_inference_takes_uint8_or_unit_floats_and_keeps_the_mode():
    model = build_model(load_checkpoint("default"))
    model.train()
    faces = synthetic_faces(6)
    a = predict_proba(model, faces, "flip")
    b = predict_proba(model, torch.from_numpy(faces).float() / 255.0, "flip")
    torch.testing.assert_close(a, b)
    assert model.training
    with pytest.raises(ValueError, match="unknown TTA mode 'mirror'"):
        predict_proba(model, faces, "mirror")
