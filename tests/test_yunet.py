"""YuNet run by onnxruntime or PyTorch finds what the yuface wheel's own C library finds."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ferkit.recognition.detector import LibfacedetectionDetector, YuNetDetector, create_detector
from ferkit.recognition.samples import sample_photo
from ferkit.recognition.yunet import NUM_LAYERS, cached_onnx_graph, wheel_weights


def photos() -> dict[str, np.ndarray]:
    sample = np.asarray(Image.open(sample_photo()).convert("RGB"))
    small = np.asarray(Image.fromarray(sample).resize((sample.shape[1] // 3, sample.shape[0] // 3)))
    group = np.full((480, 640, 3), 120, np.uint8)  # faces at two scales, one cut by the border
    group[10:10 + sample.shape[0] // 2, :578] = np.asarray(
        Image.fromarray(sample).resize((578, sample.shape[0] // 2)))
    group[300:300 + small.shape[0], 200:200 + small.shape[1]] = small
    group[400:, 500:] = np.asarray(Image.fromarray(sample).resize((140, 80)))
    return {"sample": sample, "odd-size": sample[:333, :901], "group": group,
            "flipped": sample[:, ::-1], "blank": np.zeros((240, 320, 3), np.uint8)}


@pytest.mark.parametrize("engine", ["onnxruntime", "torch"])
@pytest.mark.parametrize("name", list(photos()))
def test_the_same_faces_as_libfacedetection(name, engine):
    rgb = photos()[name]
    ours = sorted(YuNetDetector(0.3, detect_size=0, engine=engine).detect(rgb),
                  key=lambda d: d.box)
    ref = sorted(LibfacedetectionDetector(0.3, detect_size=0).detect(rgb), key=lambda d: d.box)
    assert len(ours) == len(ref)
    assert (len(ref) > 0) == (name != "blank")
    for a, b in zip(ours, ref, strict=True):
        # the C library truncates boxes and landmarks to whole pixels and scores to percent
        assert np.allclose(a.box, b.box, atol=1.5), (a.box, b.box)
        assert abs(a.score - b.score) <= 0.011
        assert np.allclose(a.landmarks, b.landmarks, atol=1.5)


def test_the_weights_come_from_the_wheel_with_the_expected_shapes():
    layers = wheel_weights()
    assert len(layers) == NUM_LAYERS
    assert layers[0][0].shape == (16, 3, 3, 3)  # the stem: 3x3 stride 2 on BGR
    assert layers[2][0].shape == (16, 1, 3, 3)  # a depth-wise layer
    assert layers[52][0].shape == (10, 1, 3, 3)  # the last landmark head
    assert all(np.isfinite(w.numpy()).all() and w.abs().sum() > 0 for w, _ in layers)


def test_the_detectors_are_known_by_name():
    assert isinstance(create_detector("yunet"), YuNetDetector)
    assert isinstance(create_detector("yunet-c"), LibfacedetectionDetector)
    with pytest.raises(ValueError, match="engine must be one of"):
        YuNetDetector(engine="tensorrt")


def test_the_onnx_graph_is_cached_per_wheel_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path))
    first = cached_onnx_graph()
    files = list(tmp_path.glob("yunet-*.onnx"))
    assert len(files) == 1 and files[0].read_bytes() == first
    files[0].write_bytes(b"marker")  # the second call reads the file instead of rebuilding
    assert cached_onnx_graph() == b"marker"
