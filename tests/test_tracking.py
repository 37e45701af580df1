"""Faces followed through a video: the matcher on hand-made boxes, the tracker and its
smoothing on hand-made faces, and process_video / `ferkit predict` / the webcam frame on a
synthetic clip of the sample photo's three faces, two crossing (one passing in front of the
other) and one dropping out for a few frames and coming back."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_support import run_ferkit as run
from PIL import Image
from recognition_support import grace_hopper_path, shared_checkpoint

from ferkit.classes import CLASSES
from ferkit.errors import ConfigError
from ferkit.recognition.face import Face
from ferkit.recognition.recognizer import Recognizer
from ferkit.recognition.samples import SAMPLE_PHOTO
from ferkit.recognition.tracking import (
    DEFAULT_SMOOTH,
    FaceTracker,
    TrackerConfig,
    centre_distance,
    iou_matrix,
    label_changes,
    match_boxes,
    summarize_tracks,
)
from ferkit.recognition.video import process_video

# --- the matcher on hand-made boxes --------------------------------------------------------


def test_iou_matrix_on_known_boxes():
    a = np.array([[0, 0, 10, 10], [100, 100, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5], [0, 0, 0, 0]])
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 4)
    assert iou[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0, 0.0])
    assert iou[1].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 4)


def test_centre_distance_is_in_track_box_sizes():
    d = centre_distance(np.array([[0, 0, 20, 20]]), np.array([[20, 0, 20, 20], [0, 0, 20, 20]]))
    assert d.ravel().tolist() == pytest.approx([1.0, 0.0])


def test_match_takes_the_best_overlap_first_not_the_first_track():
    tracks = np.array([[0, 0, 10, 10], [6, 0, 10, 10]])
    faces = np.array([[7, 0, 10, 10]])  # overlaps both; track 1 more
    assert match_boxes(tracks, faces) == [(1, 0)]
    # Two tracks, two faces given in the other order: each goes to its own.
    faces = np.array([[50, 0, 10, 10], [1, 0, 10, 10]])
    tracks = np.array([[0, 0, 10, 10], [49, 0, 10, 10]])
    assert sorted(match_boxes(tracks, faces)) == [(0, 1), (1, 0)]


def test_match_falls_back_to_centre_distance_within_reach():
    tracks = np.array([[0, 0, 10, 10], [100, 0, 10, 10]])
    faces = np.array([[12, 0, 10, 10]])  # no overlap, 1.2 track sizes away
    assert match_boxes(tracks, faces, max_distance=1.0) == []
    assert match_boxes(tracks, faces, max_distance=1.5) == [(0, 0)]
    # A reach per track: only the track allowed that far matches.
    assert match_boxes(tracks, np.array([[88, 0, 10, 10]]),
                       max_distance=np.array([5.0, 1.5])) == [(1, 0)]
    assert match_boxes(tracks, np.array([[88, 0, 10, 10]]),
                       max_distance=np.array([10.0, 1.0])) == [(0, 0)]


def test_match_uses_each_track_and_face_once():
    tracks = np.array([[0, 0, 10, 10]])
    faces = np.array([[0, 0, 10, 10], [1, 0, 10, 10]])
    assert match_boxes(tracks, faces) == [(0, 0)]
    assert match_boxes(tracks, np.zeros((0, 4))) == []
    assert match_boxes(np.zeros((0, 4)), faces) == []


# --- the tracker on hand-made faces --------------------------------------------------------


def _face(x: float, y: float, size: int = 40, label: str = "neutral", p: float = 0.6) -> Face:
    probs = {c: (1 - p) / (len(CLASSES) - 1) for c in CLASSES}
    probs[label] = p
    return Face(box=(round(x), round(y), size, size), expression=label, score=p,
                probabilities=probs)


def test_crossing_faces_keep_their_ids_through_a_hidden_stretch():
    """A moves right, B left on nearly the same line; B is hidden while they overlap (A in
    front) and comes back past A: expected positions keep the ids apart."""
    tracker = FaceTracker(TrackerConfig(smooth=0.0))
    ids: dict[str, set[int]] = {"a": set(), "b": set()}
    for i in range(30):
        ax, bx = 10 + 8 * i, 250 - 8 * i
        hidden = abs(ax - bx) < 50  # B behind A
        faces = [_face(ax, 50)] + ([] if hidden else [_face(bx, 60)])
        tracker.update(faces, i / 10)
        ids["a"].add(faces[0].track)
        if not hidden:
            ids["b"].add(faces[1].track)
    assert ids == {"a": {1}, "b": {2}}


def test_a_track_survives_max_missed_frames_and_no_more():
    cfg = TrackerConfig(max_missed=3, smooth=0.0)
    tracker = FaceTracker(cfg)
    tracker.update([_face(10, 10)], 0.0)
    for i in range(1, 4):  # three frames without it
        tracker.update([], i / 10)
    back = tracker.update([_face(10, 10)], 0.4)
    assert back[0].track == 1
    for i in range(5, 9):  # four frames without it: the track has ended
        tracker.update([], i / 10)
    assert tracker.update([_face(10, 10)], 0.9)[0].track == 2


def test_reach_grows_while_a_track_is_unseen_up_to_max_reach():
    """A still face (40 px) unseen for a while, seen again some face sizes away."""
    def comes_back(unseen: int, dx: float, max_reach: float = 2.0) -> int:
        tracker = FaceTracker(TrackerConfig(smooth=0.0, max_distance=1.0, reach_growth=0.5,
                                            max_reach=max_reach))
        tracker.update([_face(0, 0)], 0.0)
        tracker.update([_face(0, 0)], 0.1)
        for i in range(unseen):
            tracker.update([], 0.2 + i / 10)
        return tracker.update([_face(dx, 0)], 0.2 + unseen / 10)[0].track

    assert comes_back(0, 56) == 2  # 1.4 sizes: out of reach for a track seen just before
    assert comes_back(1, 56) == 1  # unseen once: reach 1.5
    assert comes_back(6, 100) == 2  # 2.5 sizes: reach capped at 2
    assert comes_back(6, 100, max_reach=4.0) == 1


def test_every_face_gets_an_id_and_new_faces_new_ones():
    tracker = FaceTracker()
    first = tracker.update([_face(0, 0), _face(200, 0)], 0.0)
    second = tracker.update([_face(2, 0), _face(100, 100), _face(201, 0)], 0.04)
    assert [f.track for f in first] == [1, 2]
    assert [f.track for f in second] == [1, 3, 2]
    assert all(f.smoothed is not None for f in first + second)


def test_smoothing_follows_the_time_constant():
    tau, dt = 0.5, 0.1
    tracker = FaceTracker(TrackerConfig(smooth=tau))
    tracker.update([_face(0, 0, label="sad", p=0.9)], 0.0)
    f = tracker.update([_face(0, 0, label="happy", p=0.9)], dt)[0]
    alpha = 1 - math.exp(-dt / tau)
    low = 0.1 / (len(CLASSES) - 1)
    assert f.smoothed["happy"] == pytest.approx(low + alpha * (0.9 - low))
    assert f.expression == "happy" and f.shown_expression == "sad"  # raw flips, shown waits
    assert f.to_dict()["smoothed"]["expression"] == "sad" and f.to_dict()["track"] == 1


def test_smoothing_does_not_depend_on_the_frame_rate():
    """A step from sad to happy, seen at 10 and at 30 frames/s: after a second the smoothed
    probability is the same within the sampling's own step."""
    def after(fps: float) -> float:
        tracker = FaceTracker(TrackerConfig(smooth=0.5))
        face = None
        for i in range(int(2 * fps) + 1):
            label = "sad" if i / fps < 1.0 else "happy"
            face = tracker.update([_face(0, 0, label=label, p=0.9)], i / fps)[0]
        return face.smoothed["happy"]

    assert after(10) == pytest.approx(after(30), abs=0.03)
    assert after(10) > 0.7


def test_smooth_zero_keeps_the_raw_probabilities():
    tracker = FaceTracker(TrackerConfig(smooth=0))
    tracker.update([_face(0, 0, label="sad")], 0.0)
    f = tracker.update([_face(0, 0, label="happy")], 0.1)[0]
    assert f.smoothed == pytest.approx(f.probabilities) and f.shown_expression == "happy"


def test_bad_settings_and_times_going_back():
    with pytest.raises(ConfigError, match="smooth"):
        TrackerConfig(smooth=-1)
    with pytest.raises(ConfigError, match="history"):
        TrackerConfig(history=1)
    with pytest.raises(ConfigError, match="max_reach"):
        TrackerConfig(max_reach=0.5)
    tracker = FaceTracker()
    tracker.update([], 1.0)
    with pytest.raises(ValueError, match="go back"):
        tracker.update([], 0.5)


def test_summaries_give_time_on_screen_and_shares():
    tracker = FaceTracker(TrackerConfig(smooth=0))
    frames = []
    for i in range(4):
        faces = [_face(0, 0, label="happy" if i < 3 else "sad")] + ([_face(200, 0)] if i >= 2
                                                                    else [])
        frames.append((2 * i, 0.2 * i, tracker.update(faces, 0.2 * i)))
    one, two = summarize_tracks(frames, frame_time=0.2, end_time=0.75)
    assert (one.track, one.first_frame, one.last_frame, one.frames) == (1, 0, 6, 4)
    assert one.duration == pytest.approx(0.75)  # to the end of the video, not past it
    assert one.expressions == {"happy": 0.75, "sad": 0.25}
    assert (two.start, two.end, two.duration) == (pytest.approx(0.4), pytest.approx(0.6),
                                                  pytest.approx(0.35))
    assert label_changes(["a", "a", "b", "a"]) == 2 and label_changes([]) == 0


# --- a synthetic clip through process_video ------------------------------------------------

# The sample photo's faces (x, y, w, h), as `ferkit demo` finds them.
SAMPLE_FACES = {"grace_hopper": (116, 71, 124, 151), "astronaut": (489, 63, 92, 111),
                "cameraman": (934, 106, 58, 76)}
TILE, SIZE, FPS, N_FRAMES = 96, (320, 240), 10.0, 30
DROPOUT = range(12, 16)  # frames without the cameraman


def _tiles() -> dict[str, np.ndarray]:
    """Each face cut square around its centre (1.8x its box) and resized to TILE px."""
    photo = np.asarray(Image.open(SAMPLE_PHOTO).convert("RGB"))
    tiles = {}
    for name, (x, y, w, h) in SAMPLE_FACES.items():
        cx, cy, half = x + w / 2, y + h / 2, 0.9 * max(w, h)
        crop = photo[int(max(0, cy - half)):int(cy + half), int(max(0, cx - half)):int(cx + half)]
        tiles[name] = cv2.resize(crop, (TILE, TILE), interpolation=cv2.INTER_AREA)
    return tiles


def clip_layout(i: int) -> dict[str, tuple[int, int]]:
    """Top-left corners of the visible tiles in frame i: grace_hopper moves right, the
    astronaut left, 25 px lower and drawn over her (she is hidden where they cross), the
    cameraman drifts right and is gone for the DROPOUT frames."""
    w, h = SIZE
    t = i / (N_FRAMES - 1)
    layout = {"grace_hopper": (int(4 + t * (w - TILE - 8)), 10),
              "astronaut": (int(w - TILE - 4 - t * (w - TILE - 8)), 35)}
    if i not in DROPOUT:
        layout["cameraman"] = (100 + 2 * i, h - TILE - 4)
    return layout


def write_crossing_clip(path) -> str:
    tiles = _tiles()
    w, h = SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h))
    assert writer.isOpened()
    for i in range(N_FRAMES):
        canvas = np.full((h, w, 3), 90, np.uint8)
        for name, (x, y) in clip_layout(i).items():  # grace_hopper first: the astronaut on top
            canvas[y:y + TILE, x:x + TILE] = tiles[name]
        writer.write(np.ascontiguousarray(canvas[:, :, ::-1]))
    writer.release()
    return path


class NoisyClassifier:
    """Probabilities close to a tie between happy and neutral, with noise: the raw label
    flickers from frame to frame, as a real model's does on an ambiguous face."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.base = np.full(len(CLASSES), 0.04)
        self.base[CLASSES.index("happy")] = 0.42
        self.base[CLASSES.index("neutral")] = 0.38

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        p = np.clip(self.base + self.rng.normal(0, 0.06, (len(crops), len(CLASSES))), 1e-3, None)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_crossing_clip(tmp_path_factory.mktemp("tracking") / "crossing.mp4")


@pytest.fixture(scope="module")
def recognizer(checkpoint):
    rec = Recognizer(model=str(checkpoint))
    rec.classify = NoisyClassifier()
    return rec


@pytest.fixture(scope="module")
def tracked(recognizer, clip, tmp_path_factory):
    return process_video(recognizer, clip, tmp_path_factory.mktemp("tracked"))


def _who(face: Face, i: int) -> str | None:
    """The composed face a detection belongs to: the tile whose centre is nearest, within
    half a tile (None: a detection of something else)."""
    cx, cy = face.box[0] + face.box[2] / 2, face.box[1] + face.box[3] / 2
    near = [(math.hypot(cx - x - TILE / 2, cy - y - TILE / 2), name)
            for name, (x, y) in clip_layout(i).items()]
    dist, name = min(near)
    return name if dist < TILE / 2 else None


def test_ids_stay_stable_through_crossing_and_dropout(tracked):
    ids: dict[str, set[int]] = {name: set() for name in SAMPLE_FACES}
    seen: dict[str, list[int]] = {name: [] for name in SAMPLE_FACES}
    for fr in tracked.frames:
        for face in fr.faces:
            name = _who(face, fr.index)
            if name is not None:
                ids[name].add(face.track)
                seen[name].append(fr.index)
    assert all(len(v) == 1 for v in ids.values()), ids
    assert len(set.union(*ids.values())) == 3
    # The clip does what it says: the cameraman is gone for DROPOUT and seen on both sides of
    # it, grace_hopper is lost behind the astronaut for a while and found again after.
    assert not set(DROPOUT) & set(seen["cameraman"])
    assert min(seen["cameraman"]) < DROPOUT.start and max(seen["cameraman"]) >= DROPOUT.stop
    hidden = set(range(N_FRAMES)) - set(seen["grace_hopper"])
    assert hidden and max(seen["grace_hopper"]) > max(hidden)
    assert all(len(v) >= N_FRAMES - 8 for v in seen.values()), seen


def test_nothing_is_dropped(tracked, recognizer, clip, tmp_path):
    """Every face of every frame is in the outputs with a track id: the same boxes as with
    tracking off, one CSV row each, one JSON entry each."""
    plain = process_video(recognizer, clip, tmp_path, tracking=None)
    assert [[f.box for f in fr.faces] for fr in tracked.frames] == \
        [[f.box for f in fr.faces] for fr in plain.frames]
    assert all(f.track is not None for fr in tracked.frames for f in fr.faces)
    assert all(f.track is None and f.smoothed is None for fr in plain.frames for f in fr.faces)
    with open(tracked.outputs["csv"]) as f:
        rows = [r for r in csv.DictReader(f) if r["face"] != ""]
    assert len(rows) == tracked.n_faces > 0
    assert all(r["track"] and r["smoothed_expression"] in CLASSES for r in rows)
    doc = json.loads(Path(tracked.outputs["json"]).read_text())
    assert sum(len(fr["faces"]) for fr in doc["frames"]) == tracked.n_faces
    assert sum(t["frames"] for t in doc["tracks"]) == tracked.n_faces


def test_smoothing_reduces_label_changes_per_second(tracked):
    with open(tracked.outputs["csv"]) as f:
        rows = [r for r in csv.DictReader(f) if r["track"]]
    raw_rate = smooth_rate = 0.0
    for t in tracked.tracks:
        if t.frames < 10:
            continue
        mine = [r for r in rows if int(r["track"]) == t.track]
        raw_rate += label_changes([r["expression"] for r in mine]) / t.duration
        smooth_rate += label_changes([r["smoothed_expression"] for r in mine]) / t.duration
    assert raw_rate > 2.0  # the noisy classifier does flicker
    assert smooth_rate <= 0.35 * raw_rate, (raw_rate, smooth_rate)


def test_outputs_carry_tracks_and_smoothed_columns(tracked):
    with open(tracked.outputs["csv"]) as f:
        header = next(csv.reader(f))
    assert header[-(len(CLASSES) + 3):] == ["track", "smoothed_expression", "smoothed_score",
                                            *(f"smoothed_{c}" for c in CLASSES)]
    doc = json.loads(Path(tracked.outputs["json"]).read_text())
    assert doc["smooth"] == DEFAULT_SMOOTH
    face = doc["frames"][5]["faces"][0]
    assert set(face["smoothed"]) == {"expression", "score", "probabilities"}
    assert sum(face["smoothed"]["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    long = [t for t in doc["tracks"] if t["frames"] >= 10]
    assert len(long) == 3
    for t in long:
        assert 2.0 <= t["duration"] <= N_FRAMES / FPS
        assert sum(t["expressions"].values()) == pytest.approx(1.0, abs=1e-3)
        assert set(t["expressions"]) <= set(CLASSES)
    plot = Image.open(tracked.outputs["plot"])
    assert plot.size[1] > 400  # a row per track


def test_cli_prints_tracks_and_smooth_zero_keeps_raw_labels(monkeypatch, capsys, checkpoint,
                                                             clip, tmp_path):
    code, out, _ = run(monkeypatch, capsys, "predict", clip, "--out", tmp_path, "--model",
                       checkpoint, "--every", "4", "--smooth", "0", "--no-progress")
    assert code == 0
    assert "track(s)" in out and "  track 1: 0.0-" in out and "s on screen" in out
    record = json.loads((tmp_path / "crossing.frames.json").read_text())
    assert record["smooth"] == 0 and record["tracks"]
    for fr in record["frames"]:
        for face in fr["faces"]:
            assert face["smoothed"]["expression"] == face["expression"]
            assert face["smoothed"]["probabilities"] == face["probabilities"]


def test_cli_smooth_option_is_documented_and_checked(monkeypatch, capsys, clip):
    from typer.testing import CliRunner

    from ferkit.cli import predict as predict_cli
    from ferkit.cli.app import app

    assert predict_cli.DEFAULT_SMOOTH == DEFAULT_SMOOTH
    for command in ("predict", "webcam"):
        shown = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
        assert "--smooth" in shown and "SECONDS" in shown
    for bad in ("-1", "inf"):
        code, _, err = run(monkeypatch, capsys, "predict", clip, "--smooth", bad)
        assert code == 2 and "--smooth" in err and "Traceback" not in err


def test_webcam_frames_are_tracked_and_labelled_smoothed(checkpoint):
    from ferkit.recognition.live import process_frame

    rec = Recognizer(model=str(checkpoint))
    bgr = cv2.imread(str(grace_hopper_path()))
    tracker = FaceTracker(TrackerConfig(smooth=0.5), rec.classes)
    _, first = process_frame(rec, bgr, tracker=tracker, now=0.0)
    annotated, second = process_frame(rec, bgr, tracker=tracker, now=0.1)
    assert [f.track for f in first] == [f.track for f in second] == [1]
    assert second[0].smoothed is not None and annotated.shape == bgr.shape
