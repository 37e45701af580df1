"""Videos: per-frame CSV/JSON, annotated video, timeline plot, --every, bad videos."""

from __future__ import annotations

import csv
import json

import cv2
import pytest
from cli_support import run_ferkit as run
from PIL import Image
from recognition_support import shared_checkpoint, write_clip

from ferkit.classes import CLASSES
from ferkit.errors import InputError
from ferkit.recognition.recognizer import Recognizer
from ferkit.recognition.video import process_video

N_FRAMES = 12


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", frames=N_FRAMES)


def _frames_in(path) -> tuple[int, tuple[int, int]]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    n, size = 0, None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n += 1
        size = frame.shape[1], frame.shape[0]
    cap.release()
    return n, size


def test_cli_video_outputs(monkeypatch, capsys, checkpoint, clip, tmp_path):
    out_dir = tmp_path / "out"
    code, out, _ = run(monkeypatch, capsys, "predict", clip, "--out", out_dir, "--model",
                       checkpoint, "--no-progress")
    assert code == 0
    assert f"{N_FRAMES} frames" in out
    # Annotated video: every frame, same size, readable.
    n, size = _frames_in(out_dir / "clip.annotated.mp4")
    assert n == N_FRAMES and size == (320, 240)
    # CSV: one row per face per frame; the astronaut is found in every frame, moving right.
    with open(out_dir / "clip.frames.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["frame"]) for r in rows] == list(range(N_FRAMES))
    assert all(r["expression"] in CLASSES for r in rows)
    xs = [int(r["x"]) for r in rows]
    assert xs[-1] - xs[0] == pytest.approx(4 * (N_FRAMES - 1), abs=8)
    assert float(rows[1]["time"]) == pytest.approx(0.1, abs=1e-3)  # 10 fps clip
    # JSON: the same frames.
    doc = json.loads((out_dir / "clip.frames.json").read_text())
    assert doc["frames_read"] == N_FRAMES and doc["frames_processed"] == N_FRAMES
    assert doc["fps"] == pytest.approx(10.0)
    assert [fr["frame"] for fr in doc["frames"]] == list(range(N_FRAMES))
    assert len(doc["frames"][0]["faces"]) == 1
    assert set(doc["outputs"]) == {"video", "csv", "json", "plot"}
    # Timeline plot.
    plot = Image.open(out_dir / "clip.timeline.png")
    assert plot.size[0] > 400


def test_every_k(monkeypatch, capsys, checkpoint, clip, tmp_path):
    out_dir = tmp_path / "out"
    code, out, _ = run(monkeypatch, capsys, "predict", clip, "--out", out_dir, "--every", "5",
                       "--json", "--model", checkpoint)
    assert code == 0
    record = json.loads(out.strip())
    assert record["input"] == str(clip)
    assert [fr["frame"] for fr in record["frames"]] == [0, 5, 10]
    assert record["every"] == 5 and record["frames_read"] == N_FRAMES
    with open(out_dir / "clip.frames.csv") as f:
        assert [int(r["frame"]) for r in csv.DictReader(f)] == [0, 5, 10]
    n, _ = _frames_in(out_dir / "clip.annotated.mp4")
    assert n == N_FRAMES  # the annotated video keeps every frame


def test_process_video_api(checkpoint, clip, tmp_path):
    rec = Recognizer(model=str(checkpoint))
    calls = []
    result = process_video(rec, clip, tmp_path, every=3, on_frame=lambda d, t: calls.append(d),
                           max_frames=7)
    assert result.frames_read == 7 and [f.index for f in result.frames] == [0, 3, 6]
    assert calls == list(range(1, 8))
    assert result.n_faces == 3
    assert sum(result.summary().values()) == 3
    with pytest.raises(ValueError):
        process_video(rec, clip, tmp_path, every=0)


def test_video_without_faces_has_empty_rows(checkpoint, tmp_path):
    path = tmp_path / "blank.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (160, 120))
    for _ in range(4):
        writer.write(cv2.UMat(120, 160, cv2.CV_8UC3, (90, 90, 90)).get())
    writer.release()
    result = process_video(Recognizer(model=str(checkpoint)), path, tmp_path / "o")
    assert result.frames_read == 4 and result.n_faces == 0
    with open(result.outputs["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [r["frame"] for r in rows] == ["0", "1", "2", "3"] and rows[0]["face"] == ""
    assert (tmp_path / "o" / "blank.timeline.png").exists()


@pytest.mark.parametrize("content", [b"", b"definitely not a video" * 50])
def test_bad_video_is_input_error(checkpoint, tmp_path, content):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"bad\.mp4"):
        process_video(Recognizer(model=str(checkpoint)), path, tmp_path / "o")


def test_bad_video_in_cli_counts_as_failed(monkeypatch, capsys, checkpoint, clip, tmp_path):
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(b"\x1aE\xdf\xa3 broken")
    code, out, err = run(monkeypatch, capsys, "predict", bad, clip, "--json", "--out",
                         tmp_path / "o", "--every", "4", "--model", checkpoint)
    assert code == 0
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert "error" in lines[0] and "bad.mkv" in lines[0]["error"]
    assert lines[1]["frames_processed"] == 3
    assert "1 failed" in err


def test_decoder_complaints_come_with_the_file_name(tmp_path, capfd):
    """FFmpeg writes 'moov atom not found' to C's stderr; it must come back in our error, with
    the file, instead of reaching the terminal on its own."""
    from ferkit.errors import InputError
    from ferkit.recognition.video import open_video

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"x" * 64)
    with pytest.raises(InputError) as info:
        open_video(bad)
    message = str(info.value)
    assert message.startswith(f"{bad}: not a video OpenCV can read")
    stray = capfd.readouterr().err
    assert "moov atom" not in stray
    if "FFmpeg:" in message:
        assert "\x1b[" not in message and "@ 0x" not in message


@pytest.mark.parametrize("every", [1, 3])
def test_batched_frames_give_the_faces_of_one_frame_at_a_time(checkpoint, clip, tmp_path,
                                                              every):
    """Frames are classified FRAMES_PER_BATCH at a time (12 frames = two batches)."""
    from ferkit.recognition import video

    assert N_FRAMES > video.FRAMES_PER_BATCH
    rec = Recognizer(model=str(checkpoint))
    result = process_video(rec, clip, tmp_path, every=every)
    cap = cv2.VideoCapture(str(clip))
    expected = []
    for index in range(N_FRAMES):
        ok, frame = cap.read()
        assert ok
        if index % every == 0:
            faces = rec.predict(frame[:, :, ::-1].copy())
            expected.append((index, [(f.box, f.expression, round(f.score, 5)) for f in faces]))
    cap.release()
    got = [(fr.index, [(f.box, f.expression, round(f.score, 5)) for f in fr.faces])
           for fr in result.frames]
    assert got == expected and result.frames_read == N_FRAMES
    assert _frames_in(result.outputs["video"])[0] == N_FRAMES


def test_a_decoder_failure_mid_video_is_raised_not_a_short_video(checkpoint, clip, tmp_path,
                                                                 monkeypatch):
    from ferkit.recognition import video

    real = video.open_video

    class Failing:
        def __init__(self, cap):
            self.cap, self.n = cap, 0

        def read(self):
            self.n += 1
            if self.n == 5:
                raise RuntimeError("decoder crashed")
            return self.cap.read()

        def __getattr__(self, name):
            return getattr(self.cap, name)

    monkeypatch.setattr(video, "open_video", lambda p: Failing(real(p)))
    with pytest.raises(RuntimeError, match="decoder crashed"):
        process_video(Recognizer(model=str(checkpoint)), clip, tmp_path)
