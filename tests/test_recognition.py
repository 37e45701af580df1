"""The Recognizer API: inputs of every kind, detection on real photos, classification."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from recognition_support import grace_hopper_path, model_for_tests, panel, shared_checkpoint

import ferkit
from ferkit.classes import CLASSES
from ferkit.errors import ModelError
from ferkit.recognition.detector import Detection, Detector
from ferkit.recognition.recognizer import Recognizer
from ferkit.recognition.samples import SAMPLE_PANELS, SAMPLE_PHOTO


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def rec(checkpoint):
    return Recognizer(model=str(checkpoint), device="cpu")


def _contains(box, point, slack=0):
    x, y, w, h = box
    return x - slack <= point[0] <= x + w + slack and y - slack <= point[1] <= y + h + slack


def _check_grace_face(face, width=512, height=600):
    x, y, w, h = face.box
    # The face sits in the upper middle of the portrait, about a third of its width.
    assert 120 <= x <= 240 and 60 <= y <= 180, face.box
    assert 120 <= w <= 240 and 150 <= h <= 280, face.box
    assert x + w <= width and y + h <= height
    assert len(face.landmarks) == 5
    for point in face.landmarks[:2]:  # both eyes inside the box, right eye on the image left
        assert _contains(face.box, point)
    assert face.landmarks[0][0] < face.landmarks[1][0]
    assert face.detection_score > 0.8
    assert face.expression in CLASSES
    assert set(face.probabilities) == set(CLASSES)
    assert abs(sum(face.probabilities.values()) - 1) < 1e-4
    assert face.score == pytest.approx(max(face.probabilities.values()))
    assert face.crop.shape == (48, 48) and face.crop.dtype == np.uint8
    assert face.flags == []


def test_lazy_export():
    assert ferkit.Recognizer is Recognizer


def test_predict_path(rec):
    faces = rec.predict(grace_hopper_path())
    assert len(faces) == 1
    _check_grace_face(faces[0])
    assert rec.predict(str(grace_hopper_path()))[0].box == faces[0].box


def test_predict_pil_array_and_gray_agree(rec):
    path = grace_hopper_path()
    reference = rec.predict(path)[0]
    pil = Image.open(path)
    by_pil = rec.predict(pil)
    rgb = np.asarray(pil.convert("RGB"))
    by_array = rec.predict(rgb)
    gray = np.asarray(pil.convert("L"))
    by_gray = rec.predict(gray)
    for faces in (by_pil, by_array, by_gray):
        assert len(faces) == 1
        _check_grace_face(faces[0])
    assert by_pil[0].box == reference.box == by_array[0].box
    assert by_pil[0].probabilities == pytest.approx(reference.probabilities, abs=1e-5)
    assert np.abs(np.array(by_gray[0].box) - np.array(reference.box)).max() <= 12


def test_astronaut(rec):
    faces = rec.predict(panel("astronaut"))
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    # Eileen Collins' face: centre of the panel, upper half.
    assert 120 <= x <= 200 and 40 <= y <= 120 and 60 <= w <= 130 and 80 <= h <= 160
    assert faces[0].flags == []


def test_sample_photo_three_faces_left_to_right(rec):
    faces = rec.predict(SAMPLE_PHOTO)
    assert len(faces) == 3
    xs = [f.box[0] for f in faces]
    assert xs == sorted(xs)
    for face, (name, (px, py, pw, ph)) in zip(faces, SAMPLE_PANELS.items(), strict=True):
        cx, cy = face.box[0] + face.box[2] / 2, face.box[1] + face.box[3] / 2
        assert px <= cx <= px + pw and py <= cy <= py + ph, name


def test_no_face(rec):
    assert rec.predict(np.full((240, 320, 3), 128, np.uint8)) == []
    assert rec.predict(np.zeros((5, 5), np.uint8)) == []


def test_to_dict_is_json(rec):
    d = rec.predict(grace_hopper_path())[0].to_dict()
    text = json.dumps(d)
    back = json.loads(text)
    assert set(back) >= {"box", "expression", "score", "probabilities", "flags"}
    assert len(back["box"]) == 4 and list(back["probabilities"]) == list(CLASSES)


def test_classify_shapes(rec):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (5, 48, 48), dtype=np.uint8)
    probs = rec.classify(crops)
    assert probs.shape == (5, 7)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs >= 0).all()
    assert rec.classify(crops[0]).shape == (1, 7)
    assert rec.classify(np.zeros((0, 48, 48), np.uint8)).shape == (0, 7)
    assert rec.classify(rng.integers(0, 256, (2, 96, 96), dtype=np.uint8)).shape == (2, 7)
    assert np.allclose(rec.classify(crops[:, None]), probs, atol=1e-6)
    with pytest.raises(ValueError):
        rec.classify(np.zeros((2, 3, 48, 48), np.uint8))


def test_classify_matches_predict(rec):
    face = rec.predict(grace_hopper_path())[0]
    probs = rec.classify(face.crop[None])[0]
    assert probs == pytest.approx([face.probabilities[c] for c in CLASSES], abs=1e-5)


def test_tta(checkpoint):
    rec = Recognizer(model=str(checkpoint), device="cpu", tta="flip")
    faces = rec.predict(grace_hopper_path())
    assert len(faces) == 1 and abs(sum(faces[0].probabilities.values()) - 1) < 1e-4
    with pytest.raises(ValueError):
        Recognizer(model=str(checkpoint), tta="bogus")


def test_large_image_detected_on_downscaled_copy(rec):
    base = rec.predict(grace_hopper_path())[0]
    rgb = np.asarray(Image.open(grace_hopper_path()).convert("RGB"))
    big = np.asarray(Image.fromarray(rgb).resize((512 * 5, 600 * 5), Image.BILINEAR))
    faces = rec.predict(big)
    assert len(faces) == 1
    # Boxes come back in the big image's pixels.
    # (YuNet sees a 1280-px copy here, the original 512 px there: allow 10% of the face size.)
    assert np.allclose(np.array(faces[0].box) / 5, base.box, atol=0.1 * base.box[2])


def test_min_confidence(checkpoint):
    strict = Recognizer(model=str(checkpoint), min_confidence=0.99)
    assert strict.predict(grace_hopper_path()) == []
    with pytest.raises(ValueError):
        Recognizer(model=str(checkpoint), min_confidence=1.5)


def test_pluggable_detector(checkpoint):
    class Fixed(Detector):
        name = "fixed"

        def _detect_bgr(self, bgr):
            return [Detection((10.0, 20.0, 30.0, 30.0), 0.9)]  # no landmarks: box-based crop

    rec = Recognizer(model=str(checkpoint), detector=Fixed())
    faces = rec.predict(np.full((100, 100, 3), 100, np.uint8))
    assert [f.box for f in faces] == [(10, 20, 30, 30)]
    assert faces[0].landmarks == []



def test_min_confidence_applies_to_a_given_detectors_faces(checkpoint):
    """min_confidence is the recognizer's threshold whatever detects the faces, not only the
    YuNet it builds (a plain detect(rgb) object applies none of its own)."""

    class Plain:
        def detect(self, rgb):
            return [Detection((10.0, 20.0, 30.0, 30.0), 0.9), Detection((50.0, 20.0, 30.0, 30.0),
                                                                       0.4)]

    picture = np.full((100, 100, 3), 100, np.uint8)
    scores = [[f.detection_score for f in Recognizer(model=str(checkpoint), detector=Plain(),
                                                     min_confidence=m).predict(picture)]
              for m in (0.5, 0.3, 0.95)]
    assert scores == [[pytest.approx(0.9)], [pytest.approx(0.9), pytest.approx(0.4)], []]
    with pytest.raises(ValueError, match="min_confidence"):
        Recognizer(model=str(checkpoint), detector=Plain(), min_confidence=1.5)

def test_missing_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="no such checkpoint"):
        Recognizer(model=str(tmp_path / "nope.pt"))


def test_bundled_or_fixture_model_loads(checkpoint):
    rec = Recognizer(model=model_for_tests(checkpoint), device="cpu")
    assert rec.classes == CLASSES
    assert "Recognizer(" in repr(rec)


def test_detect_and_crops_in_original_pixels(rec):
    rgb = np.asarray(Image.open(grace_hopper_path()).convert("RGB"))
    big = np.asarray(Image.fromarray(rgb).resize((512 * 10, 600 * 10), Image.NEAREST))
    dets = rec.detect(big)  # 5120x6000 is read downscaled to 4096 px, boxes scaled back
    found, crops = rec.crops(big)
    assert len(dets) == len(found) == 1 and crops.shape == (1, 48, 48)
    assert dets[0].box == pytest.approx(found[0].box)
    assert dets[0].box[0] == pytest.approx(1820, rel=0.1) and dets[0].box[2] > 1200
