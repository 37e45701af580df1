"""`ferkit predict`, `ferkit demo` and `ferkit webcam` through the real entry point."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_support import run_ferkit as run
from PIL import Image
from recognition_support import grace_hopper_path, model_for_tests, shared_checkpoint

from ferkit.classes import CLASSES
from ferkit.errors import FerkitError
from ferkit.recognition.samples import SAMPLE_PHOTO


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")


@pytest.fixture()
def folder(tmp_path):
    """Two good photos (one nested), one broken file, one text file that is not an image."""
    root = tmp_path / "photos"
    (root / "nested").mkdir(parents=True)
    shutil.copy(grace_hopper_path(), root / "grace.jpg")
    shutil.copy(SAMPLE_PHOTO, root / "nested" / "group.jpg")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (root / "notes.txt").write_text("ignored: not an image extension")
    (root / "empty.jpg").write_bytes(b"")
    return root


def test_json_lines_shape(monkeypatch, capsys, checkpoint):
    code, out, _ = run(monkeypatch, capsys, "predict", grace_hopper_path(), "--json",
                       "--model", checkpoint, "--device", "cpu")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["input"] == str(grace_hopper_path())
    assert len(record["faces"]) == 1
    face = record["faces"][0]
    assert len(face["box"]) == 4 and all(isinstance(v, int) for v in face["box"])
    assert face["expression"] in CLASSES
    assert 0 <= face["score"] <= 1
    assert list(face["probabilities"]) == list(CLASSES)
    assert sum(face["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert face["flags"] == []


def test_table_output(monkeypatch, capsys, checkpoint):
    code, out, _ = run(monkeypatch, capsys, "predict", SAMPLE_PHOTO, "--model", checkpoint)
    assert code == 0
    assert "sample.jpg" in out and "expression" in out
    assert "1 input(s): 1 processed, 0 failed, 3 face(s) found" in out


def test_folder_with_bad_files_continues(monkeypatch, capsys, checkpoint, folder, tmp_path):
    out_dir = tmp_path / "results"
    code, out, err = run(monkeypatch, capsys, "predict", folder, "--json", "--out", out_dir,
                         "--model", checkpoint)
    assert code == 0  # some inputs worked
    records = [json.loads(line) for line in out.strip().splitlines()]
    by_name = {r["input"].split("/")[-1]: r for r in records}
    assert set(by_name) == {"grace.jpg", "group.jpg", "broken.png", "empty.jpg"}
    assert "error" in by_name["broken.png"] and "broken.png" in by_name["broken.png"]["error"]
    assert "empty" in by_name["empty.jpg"]["error"]
    assert len(by_name["grace.jpg"]["faces"]) == 1 and len(by_name["group.jpg"]["faces"]) == 3
    assert "4 input(s): 2 processed, 2 failed, 4 face(s) found" in err
    assert "broken.png" in err and "empty.jpg" in err
    # Annotated copies mirror the folder; results.csv has one row per face.
    annotated = out_dir / "photos" / "grace.annotated.jpg"
    nested = out_dir / "photos" / "nested" / "group.annotated.jpg"
    assert annotated.exists() and nested.exists()
    assert Image.open(annotated).size == (512, 600)
    original = np.asarray(Image.open(grace_hopper_path()).convert("RGB")).astype(int)
    assert np.abs(np.asarray(Image.open(annotated)).astype(int) - original).max() > 100  # drawn
    with open(out_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert list(rows[0]) == ["input", "face", "x", "y", "w", "h", "expression", "score",
                             *CLASSES, "detection_score", "flags"]
    group_rows = [r for r in rows if r["input"].endswith("group.jpg")]
    assert [r["face"] for r in group_rows] == ["0", "1", "2"]
    assert sum(float(group_rows[0][c]) for c in CLASSES) == pytest.approx(1, abs=2e-3)


def test_single_image_out(monkeypatch, capsys, checkpoint, tmp_path):
    png = tmp_path / "in.png"
    Image.open(grace_hopper_path()).save(png)
    code, out, _ = run(monkeypatch, capsys, "predict", png, "--out", tmp_path / "o",
                       "--model", checkpoint)
    assert code == 0
    assert (tmp_path / "o" / "in.annotated.png").exists()
    assert (tmp_path / "o" / "results.csv").exists()


def test_jpe_photo_is_accepted(monkeypatch, capsys, checkpoint, tmp_path):
    """`.jpe` is in the one extension set the data loaders use too (ferkit.images)."""
    jpe = tmp_path / "x.jpe"
    shutil.copy(grace_hopper_path(), jpe)
    (tmp_path / "dir").mkdir()
    shutil.copy(grace_hopper_path(), tmp_path / "dir" / "y.jpe")
    code, out, _ = run(monkeypatch, capsys, "predict", jpe, tmp_path / "dir", "--json",
                       "--model", checkpoint)
    assert code == 0
    records = [json.loads(line) for line in out.strip().splitlines()]
    assert [Path(r["input"]).name for r in records] == ["x.jpe", "y.jpe"]
    assert all(len(r["faces"]) == 1 for r in records)


def test_every_input_failed_exits_1(monkeypatch, capsys, checkpoint, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("no")
    code, out, err = run(monkeypatch, capsys, "predict", bad, tmp_path / "missing.png",
                         "--json", "--model", checkpoint)
    assert code == 1
    errors = [json.loads(line) for line in out.strip().splitlines()]
    assert [e["input"] for e in errors] == [str(bad), str(tmp_path / "missing.png")]
    assert "no such file" in errors[1]["error"]
    assert "every input failed (2 of 2)" in err


def test_empty_folder_fails(monkeypatch, capsys, checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    code, out, err = run(monkeypatch, capsys, "predict", tmp_path / "empty", "--model", checkpoint)
    assert code == 1
    assert "holds no images or videos" in out and "every input failed" in err


def test_bad_model_is_one_line_error(monkeypatch, capsys, tmp_path):
    code, _, err = run(monkeypatch, capsys, "predict", grace_hopper_path(), "--model",
                       tmp_path / "nope.pt")
    assert code == 1
    assert err.strip().startswith("error:") and "nope.pt" in err and "Traceback" not in err


def test_detect_size_option(monkeypatch, capsys, checkpoint, tmp_path):
    code, _, err = run(monkeypatch, capsys, "predict", grace_hopper_path(), "--model",
                       checkpoint, "--detect-size", "10")
    assert code == 2 and "--detect-size 10" in err and "at least 64" in err  # a bad value
    code, out, _ = run(monkeypatch, capsys, "predict", grace_hopper_path(), "--json", "--model",
                       checkpoint, "--detect-size", "0")
    assert code == 0 and len(json.loads(out)["faces"]) == 1


def test_no_face_reported(monkeypatch, capsys, checkpoint, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 150), (120, 120, 120)).save(blank)
    code, out, _ = run(monkeypatch, capsys, "predict", blank, "--json", "--model", checkpoint)
    assert code == 0 and json.loads(out)["faces"] == []


def test_demo_writes_outputs(monkeypatch, capsys, checkpoint, tmp_path):
    out_dir = tmp_path / "demo"
    code, out, _ = run(monkeypatch, capsys, "demo", "--out", out_dir, "--model",
                       model_for_tests(checkpoint))
    assert code == 0
    assert "3 face(s) in sample.jpg" in out
    annotated = out_dir / "sample.annotated.jpg"
    figure = out_dir / "sample.figure.png"
    assert annotated.exists() and figure.exists()
    assert Image.open(annotated).size == Image.open(SAMPLE_PHOTO).size
    w, h = Image.open(figure).size
    assert w > 600 and h > 400


def test_demo_without_bundled_model_says_so(monkeypatch, capsys, tmp_path):
    from ferkit.models import checkpoint as ckpt_module

    monkeypatch.setattr(ckpt_module, "DEFAULT_WEIGHTS", tmp_path / "absent.pt")
    code, _, err = run(monkeypatch, capsys, "demo", "--out", tmp_path / "d")
    assert code == 1 and "no bundled default model" in err


def test_webcam_without_display_fails_clearly(monkeypatch, capsys, checkpoint):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    code, _, err = run(monkeypatch, capsys, "webcam", "--model", checkpoint)
    assert code == 1
    assert "display" in err and "Traceback" not in err


def _opencv_has_gui() -> bool:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() != "NONE"
    return True


@pytest.mark.skipif(_opencv_has_gui(),
                    reason="this OpenCV has a GUI; opening a window without a display may abort")
def test_webcam_headless_opencv_fails_clearly(monkeypatch):
    from ferkit.recognition.live import check_display

    monkeypatch.setenv("DISPLAY", ":99")
    with pytest.raises(FerkitError, match="no GUI support"):
        check_display()


def test_process_frame_and_fps(checkpoint):
    from ferkit.recognition.live import FPSMeter, process_frame
    from ferkit.recognition.recognizer import Recognizer

    rec = Recognizer(model=str(checkpoint))
    bgr = cv2.imread(str(grace_hopper_path()))
    annotated, faces = process_frame(rec, bgr, fps=14.2)
    assert annotated.shape == bgr.shape and annotated.dtype == np.uint8
    assert len(faces) == 1
    assert np.abs(annotated.astype(int) - bgr.astype(int)).max() > 100
    # The FPS text sits in the top-left corner (black box): unchanged elsewhere far from it.
    assert annotated[:8, :8].mean() < bgr[:8, :8].mean() or bgr[:8, :8].mean() < 5
    meter = FPSMeter(smoothing=0.5)
    assert meter.tick(0.0) is None
    assert meter.tick(0.1) == pytest.approx(10.0)
    assert meter.tick(0.15) == pytest.approx(15.0)
