"""Expressions through a video: per-frame results, an annotated copy and a timeline plot.

process_video reads frames with OpenCV, recognises every k-th frame (the boxes of the last
processed frame are kept on the frames in between, so the annotated video stays smooth),
follows each face from frame to frame (a track id, probabilities smoothed along the track:
ferkit.recognition.tracking) and writes to out_dir:
    <stem>.annotated.mp4   every frame, with boxes, track ids and smoothed labels (mp4v codec)
    <stem>.frames.csv      one row per face per processed frame (a row with an empty face
                           column for a processed frame without faces): the raw probabilities,
                           then the track id and the smoothed label, score and probabilities
    <stem>.frames.json     the same as one JSON document, with a summary per track
    <stem>.timeline.png    one row per track: its probabilities over time, smoothed and raw
With tracking=None each frame stands alone (no track columns filled) and the timeline shows
the largest face per frame, as before tracking existed.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ferkit.data import cstderr
from ferkit.errors import FerkitError, InputError
from ferkit.recognition.draw import (
    MAX_TIMELINE_ROWS,
    annotate,
    timeline_plot,
    track_timeline_plot,
)
from ferkit.recognition.face import Face
from ferkit.recognition.tracking import (
    FaceTracker,
    TrackerConfig,
    TrackSummary,
    summarize_tracks,
)

log = logging.getLogger(__name__)

DEFAULT_FPS = 25.0
# Frames classified together: their faces go through the classifier in one batch. Small enough
# that the annotated video lags the decoder by a fraction of a second.
FRAMES_PER_BATCH = 8
DEFAULT_TRACKING = TrackerConfig()  # frozen: safe as a default argument


@dataclass
class FrameResult:
    index: int
    time: float  # seconds from the start
    faces: list[Face]

    def largest(self) -> Face | None:
        return max(self.faces, key=lambda f: f.area) if self.faces else None

    def to_dict(self) -> dict:
        return {"frame": self.index, "time": round(self.time, 4),
                "faces": [f.to_dict() for f in self.faces]}


@dataclass
class VideoResult:
    input: str
    fps: float
    width: int
    height: int
    frames_read: int
    every: int
    frames: list[FrameResult] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    tracking: TrackerConfig | None = None  # None: every frame on its own
    tracks: list[TrackSummary] = field(default_factory=list)

    @property
    def n_faces(self) -> int:
        return sum(len(f.faces) for f in self.frames)

    def summary(self) -> dict:
        """Per-expression count of the largest face's label over the processed frames."""
        counts: dict[str, int] = {}
        for fr in self.frames:
            face = fr.largest()
            if face is not None:
                counts[face.expression] = counts.get(face.expression, 0) + 1
        return counts

    def to_dict(self) -> dict:
        return {"input": self.input, "fps": round(self.fps, 3), "width": self.width,
                "height": self.height, "frames_read": self.frames_read, "every": self.every,
                "frames_processed": len(self.frames), "faces": self.n_faces,
                "largest_face_expressions": self.summary(),
                "smooth": self.tracking.smooth if self.tracking is not None else None,
                "tracks": [t.to_dict() for t in self.tracks], "outputs": self.outputs,
                "frames": [f.to_dict() for f in self.frames]}


def open_video(path: Path):
    """cv2.VideoCapture on a readable video, or InputError naming the file."""
    import cv2

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a video")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes)")
    with cstderr.capture() as native:
        mark = native.size() if native is not None else 0
        cap = cv2.VideoCapture(str(path))
        said = decoder_message(native.since(mark)) if native is not None else ""
    if not cap.isOpened():
        cap.release()
        why = f"FFmpeg: {said}" if said else "unknown format or codec"
        raise InputError(f"{path}: not a video OpenCV can read ({why})")
    if said:
        log.warning("%s: the video decoder said: %s", path, said)
    return cap


def decoder_message(raw: bytes) -> str:
    """FFmpeg's coloured '[mov,mp4 @ 0x55] moov atom not found' lines -> 'moov atom not found'."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", raw.decode("utf-8", "replace"))
    lines = [re.sub(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*", "", ln).strip() for ln in text.splitlines()]
    return "; ".join(dict.fromkeys(ln for ln in lines if ln))


def _fps(cap) -> float:
    import cv2

    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    return fps if math.isfinite(fps) and 0.5 <= fps <= 1000 else DEFAULT_FPS


def process_video(recognizer, path: str | Path, out_dir: str | Path, every: int = 1,
                  on_frame: Callable[[int, int], None] | None = None,
                  max_frames: int | None = None,
                  tracking: TrackerConfig | None = DEFAULT_TRACKING) -> VideoResult:
    """Recognise expressions in a video; see the module docstring for what is written.

    on_frame(frames_read, total_or_0) is called after each frame (for progress bars).
    tracking: how faces are followed and smoothed (TrackerConfig(smooth=0): ids, raw labels);
        None: no tracking.
    """
    import cv2

    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    path = Path(path)
    out_dir = Path(out_dir)
    cap = open_video(path)
    try:
        ok, frame = cap.read()
        if not ok or frame is None:
            raise InputError(f"{path}: video has no readable frames")
        height, width = frame.shape[:2]
        fps = _fps(cap)
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        total = max(0, total if max_frames is None else min(total, max_frames))
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = path.stem
        video_out = out_dir / f"{stem}.annotated.mp4"
        writer = cv2.VideoWriter(str(video_out), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                 (width, height))
        if not writer.isOpened():
            raise FerkitError(f"{video_out}: OpenCV cannot write an mp4v video here")
        result = VideoResult(str(path), fps, width, height, 0, every, tracking=tracking)
        tracker = FaceTracker(tracking, recognizer.classes) if tracking is not None else None
        limit = max_frames if max_frames is not None else -1
        reader = _FrameReader(cap, frame, (width, height), limit)
        with _FrameWriter(writer) as out, reader as frames:
            last: list[Face] = []
            index = 0
            for chunk in frames.chunks(FRAMES_PER_BATCH):
                picked = [i for i in range(len(chunk)) if (index + i) % every == 0]
                prepared = [recognizer.prepare(chunk[i]) for i in picked]
                found = dict(zip(picked, recognizer.predict_prepared(prepared), strict=True))
                for i, rgb in enumerate(chunk):
                    if i in found:
                        last = found[i]
                        for face in last:
                            face.crop = None  # keep memory flat on long videos
                        if tracker is not None:
                            tracker.update(last, index / fps)
                        result.frames.append(FrameResult(index, index / fps, last))
                    out.write(np.ascontiguousarray(annotate(rgb, last)[:, :, ::-1]))
                    index += 1
                    if on_frame is not None:
                        on_frame(index, total)
        result.frames_read = index
    finally:
        cap.release()

    if tracking is not None:
        result.tracks = summarize_tracks([(fr.index, fr.time, fr.faces) for fr in result.frames],
                                         every / fps, result.frames_read / fps)
    result.outputs = {"video": str(video_out)}
    write_outputs(result, out_dir, stem, tuple(recognizer.classes))
    return result


def write_outputs(result: VideoResult, out_dir: Path, stem: str,
                  classes: tuple[str, ...]) -> dict[str, str]:
    """Write the per-frame CSV, the timeline plot and the JSON of a processed video (adding
    their paths to result.outputs): apart from process_video so that their cost can be timed
    alone (bench/video_tracking.py)."""
    csv_out = out_dir / f"{stem}.frames.csv"
    write_frames_csv(result, csv_out, classes)
    json_out = out_dir / f"{stem}.frames.json"
    plot_out = out_dir / f"{stem}.timeline.png"
    result.outputs.update({"csv": str(csv_out), "json": str(json_out), "plot": str(plot_out)})
    if result.tracking is not None:
        _track_timeline(result, plot_out, classes)
    else:
        _largest_face_timeline(result, plot_out, classes)
    json_out.write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    return result.outputs


def _largest_face_timeline(result: VideoResult, path: Path, classes: tuple[str, ...]) -> None:
    times = np.array([fr.time for fr in result.frames], dtype=np.float64)
    probs = np.full((len(result.frames), len(classes)), np.nan)
    for i, fr in enumerate(result.frames):
        face = fr.largest()
        if face is not None:
            probs[i] = [face.probabilities.get(c, np.nan) for c in classes]
    timeline_plot(times, probs, path, classes,
                  title=f"{Path(result.input).name}: expression of the largest face per "
                        "processed frame")


def _track_timeline(result: VideoResult, path: Path, classes: tuple[str, ...]) -> None:
    """One row per track (the longest MAX_TIMELINE_ROWS, in id order), NaN where unseen."""
    shown = sorted(sorted(result.tracks, key=lambda t: -t.frames)[:MAX_TIMELINE_ROWS],
                   key=lambda t: t.track)
    where = {t.track: i for i, t in enumerate(shown)}
    position = {fr.index: i for i, fr in enumerate(result.frames)}
    times = np.array([fr.time for fr in result.frames], dtype=np.float64)
    spans = [slice(position[t.first_frame], position[t.last_frame] + 1) for t in shown]
    raw = [np.full((s.stop - s.start, len(classes)), np.nan) for s in spans]
    smooth = [r.copy() for r in raw]
    for i, fr in enumerate(result.frames):
        for face in fr.faces:
            row = where.get(face.track) if face.track is not None else None
            if row is None:
                continue
            at = i - spans[row].start
            raw[row][at] = [face.probabilities.get(c, np.nan) for c in classes]
            if face.smoothed is not None:
                smooth[row][at] = [face.smoothed.get(c, np.nan) for c in classes]
    smoothing = result.tracking is not None and result.tracking.smooth > 0
    rows = []
    for t, span, r, sm in zip(shown, spans, raw, smooth, strict=True):
        top = ", ".join(f"{k} {v:.0%}" for k, v in list(t.expressions.items())[:2])
        rows.append((f"track {t.track}: {t.start:.1f}-{t.end:.1f} s, {top}", times[span], r,
                     sm if smoothing else None))
    more = (f"; the {len(shown)} longest of {len(result.tracks)} tracks"
            if len(shown) < len(result.tracks) else "")
    how = (f"smoothed over {result.tracking.smooth:g} s (faint: raw per frame)"
           if smoothing else "raw per frame")
    track_timeline_plot(rows, path, classes, duration=result.frames_read / result.fps,
                        title=f"{Path(result.input).name}: expression per tracked face, "
                              f"{how}{more}")


def write_frames_csv(result: VideoResult, path: Path, classes: tuple[str, ...]) -> Path:
    """One row per face per processed frame; the track columns come last (empty when
    tracking is off), so readers of the columns before them are unaffected."""
    smoothed_cols = ["smoothed_expression", "smoothed_score", *(f"smoothed_{c}" for c in classes)]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frame", "time", "face", "x", "y", "w", "h", "expression", "score",
                         *classes, "detection_score", "flags", "track", *smoothed_cols])
        for fr in result.frames:
            if not fr.faces:
                writer.writerow([fr.index, f"{fr.time:.4f}", "", "", "", "", "", "", "",
                                 *([""] * len(classes)), "", "", "",
                                 *([""] * len(smoothed_cols))])
            for i, face in enumerate(fr.faces):
                tracked: list = [face.track if face.track is not None else ""]
                if face.smoothed is not None:
                    tracked += [face.shown_expression, f"{face.shown_score:.4f}",
                                *(f"{face.smoothed.get(c, 0.0):.4f}" for c in classes)]
                else:
                    tracked += [""] * len(smoothed_cols)
                writer.writerow([fr.index, f"{fr.time:.4f}", i, *face.box, face.expression,
                                 f"{face.score:.4f}",
                                 *(f"{face.probabilities.get(c, 0.0):.4f}" for c in classes),
                                 f"{face.detection_score:.3f}", ";".join(face.flags), *tracked])
    return path


class _FrameReader:
    """Decodes frames in a thread (OpenCV releases the GIL while decoding) into a short queue,
    so decoding overlaps detection and classification; hands them out as RGB in chunks."""

    def __init__(self, cap, first, size: tuple[int, int], limit: int = -1) -> None:
        self.cap, self.first, self.size, self.limit = cap, first, size, limit
        self.queue: queue.Queue = queue.Queue(maxsize=2 * FRAMES_PER_BATCH)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ferkit-video-read", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        import cv2

        frame, n = self.first, 0
        try:
            while frame is not None and n != self.limit and not self.stop.is_set():
                if (frame.shape[1], frame.shape[0]) != self.size:  # streams that change size
                    frame = cv2.resize(frame, self.size)
                self._put(np.ascontiguousarray(frame[:, :, ::-1]))
                n += 1
                ok, frame = self.cap.read()
                frame = frame if ok else None
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self.error = exc
        finally:
            self._put(None)

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def chunks(self, n: int):
        chunk: list[np.ndarray] = []
        while (rgb := self.queue.get()) is not None:
            chunk.append(rgb)
            if len(chunk) == n:
                yield chunk
                chunk = []
        if self.error is not None:
            raise self.error
        if chunk:
            yield chunk

    def __enter__(self) -> _FrameReader:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


class _FrameWriter:
    """Encodes annotated frames in a thread (OpenCV releases the GIL while encoding); releases
    the cv2.VideoWriter on exit."""

    def __init__(self, writer) -> None:
        self.writer = writer
        self.queue: queue.Queue = queue.Queue(maxsize=2 * FRAMES_PER_BATCH)
        self.thread = threading.Thread(target=self._run, name="ferkit-video-write", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        while (bgr := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.writer.write(bgr)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                    self.error = exc

    def write(self, bgr: np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(bgr)

    def __enter__(self) -> _FrameWriter:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.queue.put(None)
        self.thread.join()
        self.writer.release()
        if self.error is not None and exc[0] is None:
            raise self.error
