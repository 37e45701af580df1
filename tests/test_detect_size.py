"""Detection at the right size: the shrunk copy, the finer pass where needed, decode size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from recognition_support import model_for_tests, shared_checkpoint

from ferkit.errors import ConfigError
from ferkit.images import shrink_to
from ferkit.recognition.detector import (
    Detection,
    Detector,
    YuNetDetector,
    merge_passes,
    needs_finer_pass,
)
from ferkit.recognition.recognizer import Recognizer
from ferkit.recognition.samples import sample_photo
from ferkit.recognition.sizes import ALWAYS_FINER_SHRINK, DETECT_SIZE, FINER_SIZE, finer_side


class Recording(Detector):
    """Answers each pass with `faces(side)` (boxes in the copy's pixels); records the copies."""

    def __init__(self, faces, **kwargs) -> None:
        super().__init__(**kwargs)
        self.faces, self.copies = faces, []

    def _detect_bgr(self, bgr):
        self.copies.append(bgr.shape[:2])
        return self.faces(max(bgr.shape[:2]))


def big_face(side):
    return [Detection((10.0, 10.0, side / 4, side / 4), 0.9)]


def test_a_big_frame_with_a_big_face_is_detected_once_on_the_small_copy():
    det = Recording(big_face)
    assert 1920 / DETECT_SIZE < ALWAYS_FINER_SHRINK
    found = det.detect(np.zeros((1440, 1920, 3), np.uint8))
    assert det.copies == [(480, 640)]
    assert len(found) == 1 and found[0].box[2] == pytest.approx(480, rel=0.01)  # input pixels


@pytest.mark.parametrize("picture, scale", [((3000, 4000), 1.0), ((750, 1000), 4.0)],
                         ids=["array", "reduced-decode"])
def test_a_picture_shrunk_4x_is_detected_at_the_finer_size_from_the_start(picture, scale):
    # Its small copy cannot see faces under 96 px of the picture, and a large face beside them
    # gives no hint; a reduced decode (scale: picture px per input px) counts as shrunk.
    det = Recording(big_face)
    found = det.detect(np.zeros((*picture, 3), np.uint8), scale=scale)
    assert det.copies == [(960, 1280)]  # a 1000 px decode is enlarged to 1280
    assert len(found) == 1 and found[0].box[2] == pytest.approx(picture[1] / 4, rel=0.01)


def test_a_big_picture_without_a_sure_face_at_the_finer_size_gets_the_small_pass_too():
    # e.g. a face filling the picture, too large for the finer copy
    det = Recording(lambda side: big_face(side) if side == DETECT_SIZE else [])
    found = det.detect(np.zeros((3000, 4000, 3), np.uint8))
    assert det.copies == [(960, 1280), (480, 640)] and len(found) == 1


def test_a_big_picture_read_small_is_detected_again_on_a_sharper_decode():
    # The Recognizer's second read of a phone JPEG: the first pass ran on the 1/4 read
    det = Recording(big_face)
    found = det.detect(np.zeros((1500, 2000, 3), np.uint8),
                       [Detection((10.0, 10.0, 500.0, 500.0), 0.9)], scale=2.0)
    assert det.copies == [(960, 1280)] and len(found) == 1  # the two passes' face merged


@pytest.mark.parametrize("coarse", [
    [],  # no face at all
    [Detection((10.0, 10.0, 200.0, 200.0), 0.9), Detection((300.0, 10.0, 15.0, 15.0), 0.3)],
    [Detection((10.0, 10.0, 200.0, 200.0), 0.9), Detection((300.0, 10.0, 20.0, 20.0), 0.8)],
], ids=["none", "unsure-candidate", "face-at-the-floor"])
def test_the_finer_pass_runs_where_small_faces_may_hide(coarse):
    det = Recording(lambda side: coarse if side == DETECT_SIZE else big_face(side))
    det.detect(np.zeros((1440, 1920, 3), np.uint8))  # coarse boxes: as if in 4000 px
    assert det.copies == [(480, 640), (960, 1280)]


def test_no_finer_pass_when_the_picture_was_not_shrunk_or_it_is_off():
    det = Recording(lambda side: [])
    det.detect(np.zeros((480, 640, 3), np.uint8))
    assert det.copies == [(480, 640)]
    off = Recording(lambda side: [], finer_pass=False)
    off.detect(np.zeros((3000, 4000, 3), np.uint8))
    assert off.copies == [(480, 640)]
    full = Recording(lambda side: [], detect_size=0)
    full.detect(np.zeros((3000, 4000, 3), np.uint8))
    assert full.copies == [(3000, 4000)]


def test_unsure_detections_are_never_reported():
    det = Recording(lambda side: [Detection((1.0, 1.0, 50.0, 50.0), 0.3)])
    assert det.detect(np.zeros((480, 640, 3), np.uint8)) == []


def test_merge_keeps_the_finer_faces_and_the_coarse_ones_it_missed():
    a = Detection((0.0, 0.0, 100.0, 100.0), 0.9)
    a_again = Detection((5.0, 5.0, 100.0, 100.0), 0.8)
    b = Detection((500.0, 0.0, 100.0, 100.0), 0.9)
    assert merge_passes([a_again], [a, b]) == [a_again, b]
    assert needs_finer_pass([a], 1.0, 0.5) is False
    assert needs_finer_pass([a], 5.0, 0.5) is True  # 20 px in the copy


def test_finer_side_and_bad_sizes():
    assert finer_side(640) == FINER_SIZE and finer_side(1000) == 2000 and finer_side(0) == 0
    for bad in (-1, 10):
        with pytest.raises(ConfigError, match="--detect-size"):
            YuNetDetector(detect_size=bad)


def test_shrink_to_keeps_the_aspect_and_reports_the_factor():
    arr = np.zeros((3024, 4032, 3), np.uint8)
    small, factor = shrink_to(arr, 640)
    assert small.shape == (480, 640, 3) and factor == pytest.approx(6.3)
    same, one = shrink_to(arr, 0)
    assert same is arr and one == 1.0
    thin, _ = shrink_to(np.zeros((1, 5000), np.uint8), 640)
    assert thin.shape == (1, 640)


def group_photo() -> np.ndarray:
    """The sample photo's three faces (about 45-80 px) on a 4000x3000 canvas."""
    rgb = Image.open(sample_photo()).convert("RGB")
    small = np.asarray(rgb.resize((rgb.width * 2 // 3, rgb.height * 2 // 3)))
    canvas = np.full((3000, 4000, 3), 128, np.uint8)
    canvas[100:100 + small.shape[0], 100:100 + small.shape[1]] = small
    return canvas


def test_small_faces_of_a_big_photo_are_found_as_one_pass_at_1280_finds_them():
    photo = group_photo()
    one_pass_small = YuNetDetector(finer_pass=False).detect(photo)
    old = YuNetDetector(detect_size=1280, finer_pass=False).detect(photo)
    new = YuNetDetector().detect(photo)
    assert len(one_pass_small) < len(old) == 3  # the small copy alone loses a face ...
    assert len(new) == 3  # ... which the finer pass finds again


def test_the_recognizer_decodes_a_big_file_at_the_finer_size(tmp_path, tmp_path_factory):
    path = tmp_path / "group.jpg"
    Image.fromarray(group_photo()).save(path, quality=92)
    rec = Recognizer(model=model_for_tests(shared_checkpoint(tmp_path_factory)), device="cpu")
    assert rec.decode_side == FINER_SIZE
    prepared = rec.prepare(path)
    assert max(prepared.loaded.array.shape[:2]) == FINER_SIZE
    faces = rec.faces(prepared, rec.classify(prepared.crops))
    assert len(faces) == 3
    assert faces[0].box[0] == pytest.approx(171, abs=12)  # boxes in the 4000x3000 original


def test_a_phone_jpeg_with_large_faces_is_read_once_at_a_reduced_scale(tmp_path,
                                                                       tmp_path_factory):
    rgb = Image.open(sample_photo()).convert("RGB")
    phone = rgb.resize((4032, round(4032 * rgb.height / rgb.width)))
    path = tmp_path / "phone.jpg"
    phone.save(path, quality=92)
    rec = Recognizer(model=model_for_tests(shared_checkpoint(tmp_path_factory)), device="cpu")
    prepared = rec.prepare(path)
    assert max(prepared.loaded.array.shape[:2]) == 1008  # libjpeg's 1/4 scale, not 1/2
    small_first = rec.faces(prepared, rec.classify(prepared.crops))
    decoded_full = rec.predict(np.asarray(Image.open(path)))  # an array: shrunk to 1280 px
    assert len(small_first) == len(decoded_full) == 3
    assert [f.expression for f in small_first] == [f.expression for f in decoded_full]
    for a, b in zip(small_first, decoded_full, strict=True):
        assert np.abs(np.subtract(a.box, b.box)).max() <= 12  # px of the 4032 px original


@pytest.mark.parametrize("size", [(2400, 1800), (1920, 1440)])  # read at 1/2: 1200, 960 px
def test_a_small_first_read_that_is_not_enough_is_read_again_without_a_second_first_pass(
        size, tmp_path, tmp_path_factory):
    path = tmp_path / "blank.jpg"
    Image.new("RGB", size, (128, 128, 128)).save(path, quality=80)
    unsure = [Detection((100, 100, 30, 30), 0.3)]  # below min_confidence: the finer pass runs
    detector = Recording(lambda side: unsure if side == DETECT_SIZE else [])
    rec = Recognizer(model=model_for_tests(shared_checkpoint(tmp_path_factory)), device="cpu",
                     detector=detector)
    prepared = rec.prepare(path)
    assert max(prepared.loaded.array.shape[:2]) == FINER_SIZE
    assert detector.copies == [(480, 640), (960, 1280)]  # one first pass, then the finer one
    assert prepared.detections == []


@pytest.mark.parametrize("size", [(4000, 3000), (5120, 3840)])  # read at 1/4 and 1/8: 640 px
def test_a_phone_jpeg_is_detected_at_the_finer_size_on_its_small_read_then_a_sharper_one(
        size, tmp_path, tmp_path_factory):
    path = tmp_path / "blank.jpg"
    Image.new("RGB", size, (128, 128, 128)).save(path, quality=80)
    detector = Recording(lambda side: [])  # no face: the sharper read, then the small pass
    rec = Recognizer(model=model_for_tests(shared_checkpoint(tmp_path_factory)), device="cpu",
                     detector=detector)
    prepared = rec.prepare(path)
    assert max(prepared.loaded.array.shape[:2]) == FINER_SIZE
    assert detector.copies == [(960, 1280), (960, 1280), (480, 640)]
    assert prepared.detections == []


def mixed_phone_photo() -> np.ndarray:
    """A 4032x3024 picture: one face 1,000 px wide and three of 60 px beside it (the sample
    photo's faces), the case the small copy's own hints miss."""
    import cv2

    sample = np.asarray(Image.open(sample_photo()).convert("RGB"))
    crops = []
    for d in YuNetDetector(detect_size=0).detect(sample):
        x, y, w, h = d.box
        cx, cy, side = x + w / 2, y + h / 2, 1.8 * max(w, h)
        crops.append(sample[int(max(cy - side / 2, 0)):int(cy + side / 2),
                            int(max(cx - side / 2, 0)):int(cx + side / 2)])
    canvas = np.full((3024, 4032, 3), 128, np.uint8)
    canvas[10:1810, 10:1810] = cv2.resize(crops[0], (1800, 1800))
    for i in range(3):
        canvas[1500:1608, 2200 + 208 * i:2308 + 208 * i] = cv2.resize(
            crops[(i + 1) % len(crops)], (108, 108), interpolation=cv2.INTER_AREA)
    return canvas


def test_small_faces_beside_a_large_one_in_a_phone_photo_are_found(tmp_path):
    photo = mixed_phone_photo()
    small_copy = YuNetDetector(finer_pass=False)
    found, factor = small_copy.first_pass(photo)
    assert not needs_finer_pass(found, factor, small_copy.min_confidence)  # no hint of them
    assert len(small_copy.detect(photo)) == 1
    assert len(YuNetDetector(detect_size=1280, finer_pass=False).detect(photo)) == 4
    path = tmp_path / "mixed.jpg"
    Image.fromarray(photo).save(path, quality=92)
    rec = Recognizer(detector=YuNetDetector())
    assert len(rec.detect(photo)) == len(rec.detect(path)) == 4  # an array and a phone JPEG
