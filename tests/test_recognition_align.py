"""Crop and alignment geometry, quality flags (small, blurry)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from recognition_support import grace_hopper_path, shared_checkpoint

from ferkit.recognition.align import (
    BLUR_THRESHOLD,
    FER_TEMPLATE,
    align_face,
    alignment_matrix,
    blur_score,
    eye_angle,
    quality_flags,
    warp_face,
)
from ferkit.recognition.detector import Detection
from ferkit.recognition.recognizer import Recognizer


def _apply(matrix, points):
    pts = np.asarray(points, np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def _synthetic_face(angle_deg: float, scale: float, center=(200.0, 150.0)):
    """Template landmarks scaled, rotated by angle_deg and moved to `center`."""
    theta = math.radians(angle_deg)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    pts = (FER_TEMPLATE - FER_TEMPLATE.mean(0)) * scale @ rot.T + np.array(center)
    return pts


@pytest.mark.parametrize("angle", [-35.0, -10.0, 0.0, 20.0, 45.0])
@pytest.mark.parametrize("scale", [0.5, 1.0, 4.0])
def test_alignment_maps_landmarks_to_template(angle, scale):
    pts = _synthetic_face(angle, scale)
    assert math.degrees(eye_angle(pts)) == pytest.approx(angle, abs=1e-6)
    det = Detection((0.0, 0.0, 10.0, 10.0), 0.9, pts.astype(np.float32))
    m = alignment_matrix(det)
    mapped = _apply(m, pts)
    assert np.abs(mapped - FER_TEMPLATE).max() < 0.05
    # Eyes level after alignment.
    assert mapped[0, 1] == pytest.approx(mapped[1, 1], abs=1e-3)
    # A pure rotation + uniform scale (no shear), with the expected zoom.
    lin = m[:, :2]
    assert np.allclose(lin @ lin.T, np.eye(2) * (1 / scale) ** 2, atol=1e-6)


def test_warp_puts_the_eyes_where_fer_has_them():
    """Draw two bright 'eyes' on a rotated synthetic face; after alignment they are level."""
    pts = _synthetic_face(25.0, 5.0, center=(160.0, 120.0))
    img = np.full((240, 320), 40, np.uint8)
    for x, y in pts[:2]:
        cv2.circle(img, (round(x), round(y)), 6, 255, -1)
    crop = align_face(img, Detection((0, 0, 1, 1), 1.0, pts.astype(np.float32)))
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    for (tx, ty), offset in zip(FER_TEMPLATE[:2], (0, 24), strict=True):
        ys, xs = np.nonzero(crop[:, offset:offset + 24] > 150)
        assert abs(ys.mean() - ty) < 1.0 and abs(xs.mean() + offset - tx) < 1.0


def test_turned_head_is_not_over_zoomed():
    """Eyes close together (head turned) but normal eye-mouth height: framing follows height."""
    pts = _synthetic_face(0.0, 3.0)
    squeezed = pts.copy()
    squeezed[:, 0] = pts[:, 0].mean() + (pts[:, 0] - pts[:, 0].mean()) * 0.5
    m_front = alignment_matrix(Detection((0, 0, 1, 1), 1.0, pts))
    m_turned = alignment_matrix(Detection((0, 0, 1, 1), 1.0, squeezed))
    assert np.linalg.det(m_turned[:, :2]) == pytest.approx(np.linalg.det(m_front[:, :2]),
                                                           rel=0.02)


def test_box_fallback_without_landmarks():
    det = Detection((100.0, 50.0, 80.0, 100.0), 0.9)
    m = alignment_matrix(det)
    centre = _apply(m, [(140.0, 100.0)])[0]
    assert centre == pytest.approx((23.5, 23.5), abs=0.6)
    # The square side is 1.22 x the longer box side.
    assert m[0, 0] == pytest.approx(48 / (100 * 1.22))
    assert m[0, 1] == 0 and m[1, 0] == 0


def test_large_face_is_area_averaged_not_aliased():
    rng = np.random.default_rng(0)
    img = (rng.random((800, 800)) > 0.5).astype(np.uint8) * 255  # worst case for aliasing
    det = Detection((100.0, 100.0, 600.0, 600.0), 1.0)
    crop = warp_face(img, alignment_matrix(det))
    # Averaging hundreds of random pixels per output pixel gives ~mid grey everywhere.
    assert abs(float(crop.mean()) - 127.5) < 6 and crop.std() < 20


def test_blur_score_and_flags():
    rng = np.random.default_rng(1)
    sharp = cv2.resize(rng.integers(0, 256, (12, 12), dtype=np.uint8), (48, 48),
                       interpolation=cv2.INTER_NEAREST)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 2.0)
    assert blur_score(sharp) > BLUR_THRESHOLD > blur_score(blurred)
    assert quality_flags(100, 100, sharp) == []
    assert quality_flags(100, 100, blurred) == ["blurry"]
    assert quality_flags(20, 100, sharp) == ["small"]
    assert quality_flags(10, 10, blurred) == ["small", "blurry"]
    assert blur_score(np.full((48, 48), 7, np.uint8)) == 0.0


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return Recognizer(model=str(shared_checkpoint(tmp_path_factory)))


def _grace() -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(grace_hopper_path()).convert("RGB"))


def test_small_face_is_flagged_not_dropped(rec):
    small = cv2.resize(_grace(), (64, 75), interpolation=cv2.INTER_AREA)
    canvas = np.full((240, 320, 3), 128, np.uint8)
    canvas[80:155, 100:164] = small
    faces = rec.predict(canvas)
    assert len(faces) == 1
    assert min(faces[0].box[2:]) < 24 and "small" in faces[0].flags


def test_blurry_face_is_flagged_not_dropped(rec):
    blurry = cv2.GaussianBlur(_grace(), (0, 0), 8)
    faces = rec.predict(blurry)
    assert len(faces) >= 1
    largest = max(faces, key=lambda f: f.area)
    assert "blurry" in largest.flags and "small" not in largest.flags
    sharp = rec.predict(_grace())
    assert sharp[0].flags == []
