"""recognize_images: many images through one Recognizer (threads + batched classification)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image
from recognition_support import panel, shared_checkpoint

from ferkit.recognition.pipeline import recognize_images
from ferkit.recognition.recognizer import Recognizer
from ferkit.recognition.samples import SAMPLE_PHOTO


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return Recognizer(model=str(shared_checkpoint(tmp_path_factory)), device="cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Sample photos (3 faces), single faces, a face-less image and a broken file, mixed."""
    d = tmp_path_factory.mktemp("photos")
    paths = []
    for i in range(5):
        p = d / f"group-{i}.jpg"
        Image.open(SAMPLE_PHOTO).convert("RGB").save(p, quality=90 - i)
        paths.append(p)
    for i, key in enumerate(_panel_names()):
        p = d / f"face-{i}.png"
        Image.fromarray(panel(key)).save(p)
        paths.append(p)
    blank = d / "blank.png"
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(blank)
    broken = d / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    paths[3:3] = [broken]
    paths.append(blank)
    return paths


def _panel_names():
    from ferkit.recognition.samples import SAMPLE_PANELS

    return sorted(SAMPLE_PANELS)


def _summary(faces):
    return [(f.box, f.expression, round(f.score, 5)) for f in faces]


@pytest.mark.parametrize("workers,max_batch", [(1, 256), (3, 256), (2, 4)])
def test_same_faces_as_one_at_a_time_in_input_order(rec, folder, workers, max_batch):
    results = list(recognize_images(rec, folder, workers=workers, max_batch_faces=max_batch))
    assert [r.path for r in results] == folder
    for path, result in zip(folder, results, strict=True):
        if path.name == "broken.jpg":
            assert result.error.startswith(str(path)) and not result.faces
            assert result.loaded is None
            continue
        assert not result.error
        assert _summary(result.faces) == _summary(rec.predict(path))
        assert result.loaded.array.ndim == 3
    counts = [len(r.faces) for r in results]
    assert counts[:3] == [3, 3, 3] and counts[-1] == 0


def test_faces_of_several_images_share_one_forward_pass(rec, folder):
    calls = []
    original = rec.predictor.predict_proba

    def counting(faces, **kw):  # a slow classifier: the readers get ahead, deterministically
        calls.append(len(faces))
        time.sleep(0.1)
        return original(faces, **kw)

    rec.predictor.predict_proba = counting
    try:
        results = list(recognize_images(rec, folder, workers=2, window=len(folder)))
    finally:
        rec.predictor.predict_proba = original
    total = sum(len(r.faces) for r in results)
    assert sum(calls) == total
    assert len(calls) < sum(1 for r in results if r.faces), calls  # batched across images
    assert max(calls) > 3


def test_empty_input(rec):
    assert list(recognize_images(rec, [])) == []
