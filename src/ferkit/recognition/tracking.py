"""Faces followed through a video: a track id per face and expression probabilities smoothed
along each track.

Each processed frame's faces are matched to the tracks alive before it, greedily: first by the
overlap (IoU) of each face's box with where its track is expected now (its last box moved on
at its recent speed, fitted over its last few sightings so one jittery box does not throw it),
best overlaps first, then, for what is left, by the distance between centres in face sizes,
nearest first, within a reach that grows with each frame the track went unseen (the longer a
face is hidden, the less sure its position). The expected position is what keeps ids apart
when two faces cross and one hides the other for a few frames. A face that matches no track
starts a new one; a track unseen for more than `max_missed` processed frames ends (a face that
comes back later gets a new id). Every face gets an id: nothing is dropped or held back.

No SORT/ByteTrack package was used: none installs offline here, and on the test clips (faces
moving, crossing, dropping out) this greedy matcher keeps every id.

Smoothing is an exponential moving average of each track's probabilities with a time constant
of `smooth` seconds: a new frame `dt` seconds after the track's last one has the weight
alpha = 1 - exp(-dt / smooth), so the result is the same at any frame rate or `--every`, and
a face seen again after a gap leans more on what it shows now. smooth = 0 keeps the raw
probabilities.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ferkit.errors import ConfigError
from ferkit.recognition.face import Face

log = logging.getLogger(__name__)

DEFAULT_SMOOTH = 0.5  # seconds: steadies frame-to-frame flicker, follows a change within ~1 s
SMOOTH_HELP = ("Videos and webcam: time constant in seconds of the moving average of each "
               "tracked face's probabilities; the label drawn is the smoothed one (0: off, "
               "the raw per-frame label).")


@dataclass(frozen=True)
class TrackerConfig:
    """How faces are followed from frame to frame and how their probabilities are smoothed.

    smooth: EMA time constant in seconds (0: no smoothing).
    max_missed: processed frames a track may go unseen and still be continued.
    min_iou: least overlap of a face with a track's expected box to match by overlap.
    max_distance: beyond overlap, the farthest centre distance that still matches, in face
        sizes (the square root of the track's box area), for a track seen in the frame before.
    reach_growth: the fraction of max_distance that reach grows by per processed frame a
        track went unseen, up to max_reach face sizes.
    history: sightings a track's speed is fitted over (least squares): damps the detector's
        jitter and boxes shrunk by a face in front.
    """

    smooth: float = DEFAULT_SMOOTH
    max_missed: int = 25  # a second at 25 frames/s: a face hidden while another passes
    min_iou: float = 0.2
    max_distance: float = 1.0
    reach_growth: float = 0.5
    max_reach: float = 4.0
    history: int = 5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.smooth) and self.smooth >= 0):
            raise ConfigError(f"smooth must be a number of seconds >= 0, got {self.smooth}")
        if self.max_missed < 0:
            raise ConfigError(f"max_missed must be >= 0, got {self.max_missed}")
        if not 0 < self.min_iou <= 1:
            raise ConfigError(f"min_iou must be in (0, 1], got {self.min_iou}")
        if self.max_distance < 0:
            raise ConfigError(f"max_distance must be >= 0, got {self.max_distance}")
        if self.reach_growth < 0:
            raise ConfigError(f"reach_growth must be >= 0, got {self.reach_growth}")
        if self.max_reach < self.max_distance:
            raise ConfigError(f"max_reach must be >= max_distance ({self.max_distance}), "
                              f"got {self.max_reach}")
        if self.history < 2:
            raise ConfigError(f"history must be >= 2 sightings, got {self.history}")


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of (N, 4) and (M, 4) boxes given as x, y, w, h."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ax1, ay1 = a[:, 0:1], a[:, 1:2]
    ax2, ay2 = ax1 + a[:, 2:3], ay1 + a[:, 3:4]
    bx1, by1 = b[:, 0], b[:, 1]
    bx2, by2 = bx1 + b[:, 2], by1 + b[:, 3]
    inter = (np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0, None)
             * np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0, None))
    union = a[:, 2:3] * a[:, 3:4] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def centre_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) distance between the centres of a's and b's boxes, in sizes of a's boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ca = a[:, :2] + a[:, 2:] / 2
    cb = b[:, :2] + b[:, 2:] / 2
    size = np.sqrt(np.clip(a[:, 2] * a[:, 3], 1.0, None))
    return np.linalg.norm(ca[:, None, :] - cb[None, :, :], axis=2) / size[:, None]


def match_boxes(tracks: np.ndarray, faces: np.ndarray, min_iou: float = 0.2,
                max_distance: float | np.ndarray = 1.0) -> list[tuple[int, int]]:
    """Pairs (track index, face index), each index at most once: greedy by overlap, best
    first, for IoU >= min_iou; then greedy by centre distance (in track box sizes), nearest
    first, for distance <= max_distance (one for all tracks, or one per track) among what is
    left. Ties go to the lower indices."""
    n, m = len(tracks), len(faces)
    if n == 0 or m == 0:
        return []
    pairs: list[tuple[int, int]] = []
    used_t: set[int] = set()
    used_f: set[int] = set()

    def take(order: np.ndarray, ok: np.ndarray) -> None:
        for flat in order:
            t, f = divmod(int(flat), m)
            if not ok[t, f]:
                break  # sorted: nothing after this qualifies either
            if t not in used_t and f not in used_f:
                pairs.append((t, f))
                used_t.add(t)
                used_f.add(f)

    iou = iou_matrix(tracks, faces)
    take(np.argsort(-iou, axis=None, kind="stable"), iou >= min_iou)
    reach = np.broadcast_to(np.asarray(max_distance, dtype=np.float64), (n,))
    if len(pairs) < min(n, m) and np.any(reach > 0):
        dist = centre_distance(tracks, faces)
        ok = dist <= reach[:, None]
        dist = np.where(ok, dist, np.inf)  # so that the first one out of reach ends the scan
        take(np.argsort(dist, axis=None, kind="stable"), ok)
    return pairs


@dataclass
class Track:
    """One face followed through the frames: where it was last seen, its speed and its
    smoothed probabilities."""

    id: int
    box: np.ndarray  # x, y, w, h (float) where last seen
    time: float  # seconds, when last seen
    probs: np.ndarray  # smoothed probabilities, in the tracker's class order
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # px/s of the centre
    missed: int = 0  # processed frames since last seen
    seen: int = 1  # processed frames it was seen in
    # (time, centre x, centre y) of its last few sightings, for the speed
    recent: deque = field(default_factory=deque)

    def sighted(self, box: np.ndarray, time: float, history: int) -> None:
        """Record a sighting and refit the speed over the last `history` of them."""
        self.box, self.time = box.copy(), time
        self.recent.append((time, float(box[0] + box[2] / 2), float(box[1] + box[3] / 2)))
        while len(self.recent) > history:
            self.recent.popleft()
        n = len(self.recent)
        if n >= 2:  # plain floats: a handful of points, where numpy's overhead dominates
            tm = sum(r[0] for r in self.recent) / n
            xm = sum(r[1] for r in self.recent) / n
            ym = sum(r[2] for r in self.recent) / n
            spread = sum((r[0] - tm) ** 2 for r in self.recent)
            if spread > 0:
                vx = sum((r[0] - tm) * (r[1] - xm) for r in self.recent) / spread
                vy = sum((r[0] - tm) * (r[2] - ym) for r in self.recent) / spread
                self.velocity = np.array([vx, vy])

    def expected_box(self, now: float) -> np.ndarray:
        """Where the face should be at `now`, if it kept its speed."""
        box = self.box.copy()
        box[:2] += self.velocity * (now - self.time)
        return box


class FaceTracker:
    """Gives each face a track id and smoothed probabilities, frame after frame.

        tracker = FaceTracker(TrackerConfig(smooth=0.5), classes=rec.classes)
        for t, frame in frames:
            faces = tracker.update(rec.predict(frame), t)   # face.track, face.smoothed set
    """

    def __init__(self, config: TrackerConfig | None = None,
                 classes: Sequence[str] | None = None) -> None:
        self.config = config or TrackerConfig()
        self.classes: tuple[str, ...] | None = tuple(classes) if classes is not None else None
        self.tracks: list[Track] = []
        self.next_id = 1
        self.time: float | None = None

    def update(self, faces: list[Face], time: float) -> list[Face]:
        """Match one processed frame's faces (taken at `time` seconds) to the tracks; sets
        each face's `track` and `smoothed` in place and returns the same list."""
        if self.time is not None and time < self.time:
            raise ValueError(f"frame times must not go back: {time} after {self.time}")
        self.time = time
        if faces and self.classes is None:
            self.classes = tuple(faces[0].probabilities)
        cfg = self.config
        expected = np.array([t.expected_box(time) for t in self.tracks]).reshape(-1, 4)
        reach = np.array([min(cfg.max_distance * (1 + cfg.reach_growth * t.missed),
                              cfg.max_reach) for t in self.tracks])
        boxes = np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4)
        pairs = match_boxes(expected, boxes, cfg.min_iou, reach)
        matched_tracks = {t for t, _ in pairs}
        matched_faces = {f for _, f in pairs}
        for t, f in pairs:
            self._continue(self.tracks[t], faces[f], boxes[f], time)
        for f, face in enumerate(faces):
            if f not in matched_faces:
                self._start(face, boxes[f], time)
        kept = []
        for t, track in enumerate(self.tracks):
            if t < len(expected) and t not in matched_tracks:
                track.missed += 1
            if track.missed <= cfg.max_missed:
                kept.append(track)
            else:
                log.debug("track %d ended after %d frames", track.id, track.seen)
        self.tracks = kept
        return faces

    def _probs(self, face: Face) -> np.ndarray:
        return np.array([face.probabilities.get(c, 0.0) for c in self.classes or ()])

    def _smoothed(self, probs: np.ndarray) -> dict[str, float]:
        return {c: float(p) for c, p in zip(self.classes or (), probs, strict=True)}

    def _start(self, face: Face, box: np.ndarray, time: float) -> None:
        track = Track(self.next_id, box.copy(), time, self._probs(face))
        track.sighted(box, time, self.config.history)
        self.next_id += 1
        self.tracks.append(track)
        face.track = track.id
        face.smoothed = self._smoothed(track.probs)

    def _continue(self, track: Track, face: Face, box: np.ndarray, time: float) -> None:
        dt = time - track.time
        tau = self.config.smooth
        alpha = 1.0 if tau == 0 else -math.expm1(-dt / tau)
        track.probs = track.probs + alpha * (self._probs(face) - track.probs)
        track.sighted(box, time, self.config.history)
        track.missed = 0
        track.seen += 1
        face.track = track.id
        face.smoothed = self._smoothed(track.probs)


@dataclass
class TrackSummary:
    """One track over a video: when it was on screen and how often each label was shown."""

    track: int
    first_frame: int
    last_frame: int
    start: float  # seconds
    end: float  # seconds, the last processed frame it was seen in
    duration: float  # seconds on screen: first sighting to the frame after the last one
    frames: int  # processed frames it was seen in
    expressions: dict[str, float]  # share of its frames per smoothed label, largest first
    raw_expressions: dict[str, float]  # the same for the raw per-frame labels

    def to_dict(self) -> dict:
        return {"track": self.track, "first_frame": self.first_frame,
                "last_frame": self.last_frame, "start": round(self.start, 4),
                "end": round(self.end, 4), "duration": round(self.duration, 4),
                "frames": self.frames,
                "expressions": {k: round(v, 4) for k, v in self.expressions.items()},
                "raw_expressions": {k: round(v, 4) for k, v in self.raw_expressions.items()}}


def _shares(labels: list[str]) -> dict[str, float]:
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return {k: v / len(labels) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


def summarize_tracks(frames: Sequence[tuple[int, float, Sequence[Face]]], frame_time: float,
                     end_time: float | None = None) -> list[TrackSummary]:
    """Per-track summaries from (frame index, time, faces) of the processed frames, by id.

    frame_time: seconds one processed frame stands for (every / fps), added after a track's
    last sighting; end_time caps that at the end of the video.
    """
    seen: dict[int, list[tuple[int, float, Face]]] = {}
    for index, time, faces in frames:
        for face in faces:
            if face.track is not None:
                seen.setdefault(face.track, []).append((index, time, face))
    out = []
    for track, rows in sorted(seen.items()):
        first, last = rows[0], rows[-1]
        stop = last[1] + frame_time
        if end_time is not None:
            stop = max(last[1], min(stop, end_time))
        out.append(TrackSummary(
            track=track, first_frame=first[0], last_frame=last[0], start=first[1], end=last[1],
            duration=stop - first[1], frames=len(rows),
            expressions=_shares([f.shown_expression for _, _, f in rows]),
            raw_expressions=_shares([f.expression for _, _, f in rows])))
    return out


def label_changes(labels: Sequence[str]) -> int:
    """How often consecutive labels differ: the flicker smoothing is there to remove."""
    return sum(1 for a, b in zip(labels, labels[1:], strict=False) if a != b)
