"""Many inputs at once, as `ferkit predict` runs them: what is read, what is written where.

`collect_inputs` expands folders (recursively, image and video extensions, hidden folders
skipped) and marks what cannot be read; `run_batch` recognises every input in order (runs of
images through the threaded pipeline, videos one by one) and, with an output folder, writes
the annotated copies (folder structure mirrored, never overwriting one another), results.csv
(one row per face) and each video's outputs. A bad input never stops the others: it becomes an
ItemResult with `error`, counted and listed in the Summary. The caller only shows results.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any, Literal

from ferkit.errors import FerkitError
from ferkit.images import is_image_name, is_video_name
from ferkit.recognition.face import Face
from ferkit.recognition.tracking import TrackerConfig

log = logging.getLogger(__name__)

DEFAULT_VIDEO_OUT = Path("ferkit-out")  # videos always write their outputs somewhere
ANNOTATED_SUFFIX = ".annotated"
RESULTS_CSV = "results.csv"
# Annotated copies keep these extensions; anything else is written as PNG.
_KEPT_EXTENSIONS = (".jpg", ".jpeg", ".png")


@dataclass
class InputItem:
    path: Path
    kind: Literal["image", "video", "error"]
    root: Path | None = None  # the folder it was found in (for output paths)
    error: str = ""


@dataclass
class ItemResult:
    """One input's outcome: its faces (an image), its VideoResult (a video), or `error`."""

    item: InputItem
    faces: list[Face] = field(default_factory=list)
    error: str = ""
    annotated: Path | None = None  # where the annotated copy of an image went
    video: Any = None  # ferkit.recognition.video.VideoResult for a video

    def to_dict(self) -> dict:
        """The JSON line `ferkit predict --json` prints for this input."""
        if self.error:
            return {"input": str(self.item.path), "error": self.error}
        if self.video is not None:
            return self.video.to_dict()
        record: dict = {"input": str(self.item.path), "faces": [f.to_dict() for f in self.faces]}
        if self.annotated is not None:
            record["annotated"] = str(self.annotated)
        return record


@dataclass
class Summary:
    processed: int = 0
    failed: int = 0
    faces: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, message)
    images: int = 0  # images among the inputs (read or not)
    image_seconds: float = 0.0  # wall time spent on runs of images (videos report their fps)

    @property
    def total(self) -> int:
        return self.processed + self.failed

    def add(self, result: ItemResult) -> None:
        if result.error:
            self.failed += 1
            self.failures.append((str(result.item.path), result.error))
        else:
            self.processed += 1
            self.faces += result.video.n_faces if result.video is not None else len(result.faces)


def _is_input(path: Path) -> bool:
    return is_image_name(path) or is_video_name(path)


def collect_inputs(paths: Sequence[Path]) -> list[InputItem]:
    """Expand folders (recursively, image and video extensions) and classify each input."""
    items: list[InputItem] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and _is_input(p)
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                items.append(InputItem(path, "error", error=f"{path}: folder holds no images "
                                                            "or videos"))
            for p in found:
                items.append(InputItem(p, "video" if is_video_name(p) else "image", root=path))
        elif not path.exists():
            items.append(InputItem(path, "error", error=f"{path}: no such file or folder"))
        else:
            items.append(InputItem(path, "video" if is_video_name(path) else "image"))
    return items


def output_path(out: Path, item: InputItem, used: set[Path],
                suffix: str = ANNOTATED_SUFFIX) -> Path:
    """Where the annotated copy of an image goes: mirrors folder structure, never overwrites."""
    rel = Path(item.root.name) / item.path.relative_to(item.root) if item.root else \
        Path(item.path.name)
    ext = item.path.suffix.lower() if item.path.suffix.lower() in _KEPT_EXTENSIONS else ".png"
    target = out / rel.parent / f"{rel.stem}{suffix}{ext}"
    n = 2
    while target in used:
        target = out / rel.parent / f"{rel.stem}{suffix}-{n}{ext}"
        n += 1
    used.add(target)
    return target


def video_out_dir(out: Path | None, item: InputItem) -> Path:
    """A video's output folder: under --out (mirroring its folder), else ./ferkit-out."""
    if out is None:
        return DEFAULT_VIDEO_OUT
    if item.root is not None:
        return out / item.root.name / item.path.relative_to(item.root).parent
    return out


def csv_header(classes: Sequence[str]) -> list[str]:
    return ["input", "face", "x", "y", "w", "h", "expression", "score", *classes,
            "detection_score", "flags"]


def csv_rows(name: str, faces: Sequence[Face], classes: Sequence[str]) -> list[list]:
    return [[name, i, *face.box, face.expression, f"{face.score:.4f}",
             *(f"{face.probabilities.get(c, 0.0):.4f}" for c in classes),
             f"{face.detection_score:.3f}", ";".join(face.flags)] for i, face in enumerate(faces)]


def run_batch(rec, items: Sequence[InputItem], *, out: Path | None = None, every: int = 1,
              workers: int = 0, on_result: Callable[[ItemResult], None] | None = None,
              on_frame: Callable[[InputItem, int, int], None] | None = None,
              tracking: TrackerConfig | None = None) -> Summary:
    """Recognise every input in order; see the module docstring for what is written.

    on_result(result) is called once per input, in input order, as soon as it is done;
    on_frame(item, frames_read, total_or_0) after each frame of a video (for progress bars).
    tracking: how faces are followed through videos (None: the defaults, TrackerConfig()).
    """
    from ferkit.recognition.draw import annotate, save_image
    from ferkit.recognition.pipeline import recognize_images

    classes = tuple(rec.classes)
    summary = Summary(images=sum(1 for it in items if it.kind == "image"))
    rows: list[list] = []
    used: set[Path] = set()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    def done(result: ItemResult) -> None:
        summary.add(result)
        if on_result is not None:
            on_result(result)

    for kind, run in groupby(items, key=lambda it: it.kind):
        group = list(run)
        if kind == "error":
            for item in group:
                done(ItemResult(item, error=item.error))
        elif kind == "video":
            for item in group:
                done(_run_video(rec, item, out, every, on_frame, tracking or TrackerConfig()))
        else:  # a run of images: read and detected in threads, classified in batches
            started = time.perf_counter()
            results = recognize_images(rec, [it.path for it in group], workers=workers)
            for item, image in zip(group, results, strict=True):
                result = ItemResult(item, image.faces, image.error)
                if out is not None and not image.error:
                    result.annotated = save_image(annotate(image.loaded, image.faces),
                                                  output_path(out, item, used))
                    rows.extend(csv_rows(str(item.path), image.faces, classes))
                done(result)
            summary.image_seconds += time.perf_counter() - started

    if out is not None and summary.images:
        with open(out / RESULTS_CSV, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(csv_header(classes))
            writer.writerows(rows)
        log.info("wrote %s (%d faces)", out / RESULTS_CSV, len(rows))
    return summary


def _run_video(rec, item: InputItem, out: Path | None, every: int,
               on_frame: Callable[[InputItem, int, int], None] | None,
               tracking: TrackerConfig) -> ItemResult:
    from ferkit.recognition.video import process_video

    def frame_done(frames: int, total: int) -> None:
        if on_frame is not None:
            on_frame(item, frames, total)

    try:
        video = process_video(rec, item.path, video_out_dir(out, item), every=every,
                              on_frame=frame_done, tracking=tracking)
    except FerkitError as exc:
        return ItemResult(item, error=str(exc))
    return ItemResult(item, video=video)
