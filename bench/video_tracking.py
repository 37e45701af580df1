"""What following faces through a video costs: process_video with tracking on and off.

    taskset -c 0 .venv/bin/python bench/video_tracking.py             # the bundled model
    .venv/bin/python bench/video_tracking.py --frames 300 --repeats 7 --threads 2

A 640x480 mp4 of --frames frames at 25 fps is composed from the shipped sample photo's three
faces: two cross (one passes in front of the other), one drops out for a few frames. Each
repeat runs process_video on it twice, tracking off (tracking=None: each frame alone, the
largest-face timeline) and on (the defaults: ids, smoothing over 0.5 s, per-track CSV/JSON
columns, summary and timeline), in alternating order so that a busy machine slows both
alike; everything is timed end to end (decode, detect, classify, annotate, encode, CSV,
JSON, plot) after one untimed pass of each. Printed: the median frames/s of each by the wall
clock and by the CPU time of the whole process (all its threads: steadier where other jobs
share the core), the cost of tracking by each (target: under 5%); then the parts tracking
adds, each timed alone in CPU time, steadier still: FaceTracker.update replayed over the
faces the clip gave (microseconds per frame, the part that grows with the video) and the
outputs with tracking against without (per-track summary, CSV columns, JSON, the per-track
timeline against the largest-face one; once per video), summed as a share of a frame's CPU
time with tracking off.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# The sample photo's faces (x, y, w, h), as `ferkit demo` finds them.
SAMPLE_FACES = {"grace_hopper": (116, 71, 124, 151), "astronaut": (489, 63, 92, 111),
                "cameraman": (934, 106, 58, 76)}
SIZE, FPS, TILE = (640, 480), 25.0, 180


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_clip(path: Path, frames: int) -> Path:
    """Three faces on grey: one moving right, one left and in front of it where they cross,
    one drifting and gone for a fifth of a second in the middle."""
    import cv2
    from PIL import Image

    from ferkit.recognition.samples import sample_photo

    photo = np.asarray(Image.open(sample_photo()).convert("RGB"))
    tiles = []
    for x, y, w, h in SAMPLE_FACES.values():
        cx, cy, half = x + w / 2, y + h / 2, 0.9 * max(w, h)
        crop = photo[int(max(0, cy - half)):int(cy + half), int(max(0, cx - half)):int(cx + half)]
        tiles.append(cv2.resize(crop, (TILE, TILE), interpolation=cv2.INTER_AREA))
    w, h = SIZE
    gone = range(frames // 2 - 2, frames // 2 + 3)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h))
    for i in range(frames):
        t = i / max(1, frames - 1)
        canvas = np.full((h, w, 3), 90, np.uint8)
        run = t * (w - TILE - 20)
        spots = [(int(10 + run), 20), (int(w - TILE - 10 - run), 70)]
        if i not in gone:
            spots.append((int(200 + 60 * t), h - TILE - 10))
        for tile, (x, y) in zip(tiles, spots, strict=False):
            canvas[y:y + TILE, x:x + TILE] = tile
        writer.write(np.ascontiguousarray(canvas[:, :, ::-1]))
    writer.release()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--model", default="default", help="'default', a run dir or checkpoint")
    parser.add_argument("--frames", type=int, default=150, help="frames in the clip")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and OpenCV threads (1 for `taskset -c 0`)")
    args = parser.parse_args()

    import cv2

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    from ferkit.recognition.recognizer import Recognizer

    rec = Recognizer(model=args.model, device="cpu")
    backend = rec.predictor.meta.get("backend", "torch")
    print(f"cpu: {cpu_name()}, {len(_affinity())} core(s) usable, threads {args.threads}; "
          f"model {rec.predictor.arch} ({args.model}, {backend}); torch {torch.__version__}, "
          f"opencv {cv2.__version__}; {time.strftime('%Y-%m-%d %H:%M')}")
    with tempfile.TemporaryDirectory(prefix="ferkit-tracking-") as folder:
        run(args, rec, Path(folder))


def run(args: argparse.Namespace, rec, tmp: Path) -> None:
    """The timings, with the clip and every output written under tmp."""
    from ferkit.recognition.tracking import FaceTracker, TrackerConfig, summarize_tracks
    from ferkit.recognition.video import process_video, write_outputs

    clip = write_clip(tmp / "clip.mp4", args.frames)
    configs = {"off": None, "on": TrackerConfig()}
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    cpu: dict[str, list[float]] = {name: [] for name in configs}
    results = {}
    for rep in range(args.repeats + 1):  # the first round warms up, untimed
        order = list(configs) if rep % 2 == 0 else list(reversed(configs))
        for name in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            out = process_video(rec, clip, tmp / name, tracking=configs[name])
            took, took_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            if rep:
                seconds[name].append(took)
                cpu[name].append(took_cpu)
            results[name] = out
    result = results["on"]
    fps = {name: args.frames / statistics.median(s) for name, s in seconds.items()}
    cpu_fps = {name: args.frames / statistics.median(s) for name, s in cpu.items()}
    print(f"{args.frames} frames, {result.n_faces} faces in {len(result.tracks)} track(s); "
          f"median of {args.repeats} runs each, alternating")
    for name in configs:
        spread = ", ".join(f"{args.frames / s:.1f}" for s in seconds[name])
        print(f"  tracking {name:>3}: {fps[name]:.1f} frames/s wall (runs: {spread}), "
              f"{cpu_fps[name]:.1f} frames per CPU-second")
    print(f"  tracking costs {fps['off'] / fps['on'] - 1:+.1%} of the wall time, "
          f"{cpu_fps['off'] / cpu_fps['on'] - 1:+.1%} of the CPU time (target: under 5%)")

    # The tracker alone, replayed over the faces the clip gave: the per-frame part.
    frames = [(fr.time, fr.faces) for fr in result.frames]
    laps = []
    for _ in range(5):
        tracker = FaceTracker(TrackerConfig(), rec.classes)
        start = time.process_time()
        for t, faces in frames:
            tracker.update(faces, t)
        laps.append((time.process_time() - start) / len(frames))
    per_frame = statistics.median(laps)
    print(f"  FaceTracker.update alone: {per_frame * 1e6:.0f} us of CPU per frame, "
          f"{per_frame * cpu_fps['off']:.2%} of a frame's CPU time with tracking off")

    # The outputs, written again from each run's results: tracking's share of them.
    writing: dict[str, list[float]] = {name: [] for name in configs}
    for rep in range(args.repeats + 1):
        for name in configs if rep % 2 == 0 else reversed(configs):
            r = results[name]
            folder = tmp / f"outputs-{name}"
            folder.mkdir(exist_ok=True)
            start = time.process_time()
            if r.tracking is not None:
                summarize_tracks([(fr.index, fr.time, fr.faces) for fr in r.frames],
                                 r.every / r.fps, r.frames_read / r.fps)
            write_outputs(r, folder, "clip", tuple(rec.classes))
            if rep:
                writing[name].append(time.process_time() - start)
    w = {name: statistics.median(v) for name, v in writing.items()}
    extra = (w["on"] - w["off"]) / args.frames
    print(f"  outputs: {w['on'] * 1000:.0f} ms of CPU with tracking, {w['off'] * 1000:.0f} ms "
          f"without ({extra * 1e6:+.0f} us a frame over this clip)")
    print(f"  tracking's parts together: {(per_frame + extra) * cpu_fps['off']:+.2%} of a "
          f"frame's CPU time with tracking off (target: under 5%)")


def _affinity() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else {0}


if __name__ == "__main__":
    main()
