"""ferkit CLI: `ferkit predict` (images, folders, videos), `ferkit webcam` and `ferkit demo`.

Options and printing only: reading, recognising and writing outputs for many inputs is
ferkit.recognition.batch.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer

from ferkit.errors import FerkitError
from ferkit.recognition.sizes import DETECT_SIZE, DETECT_SIZE_HELP, MIN_CONFIDENCE
from ferkit.tta import TTA_HELP, TTA_METAVAR, check_tta

PREDICT_HELP = """Find faces in images, folders or videos; name each expression.

INPUT may be image files, folders (searched recursively for images and videos) or video files \
(.mp4 .avi .mov .mkv .webm). Faces that are very small or blurry are still reported, with a \
flag.

Output: a table, or with --json one JSON object per input (JSON Lines) on stdout: \
{"input": ..., "faces": [{"box": \\[x, y, w, h], "expression": ..., "score": ..., \
"probabilities": {...}, "detection_score": ..., "flags": [...]}]}; an input that could not be \
read gives {"input": ..., "error": ...}.

--out DIR writes annotated copies of the images, results.csv (one row per face) and, per \
video, an annotated video, per-frame CSV and JSON and a timeline plot. Videos are always \
written somewhere: to --out, else to ./ferkit-out.

In a video each face is followed from frame to frame: it keeps a track id, and its \
probabilities are averaged along the track (--smooth SECONDS, 0 for none). The label drawn \
is the smoothed one; the CSV and JSON hold the raw and the smoothed probabilities, and the \
JSON and the closing lines a summary per track (time on screen, share of each expression).

One unreadable file does not stop the others; they are counted and listed at the end. The \
exit code is 0 when at least one input was processed, 1 when every input failed.

Examples:

  ferkit predict photo.jpg

  ferkit predict photos/ --json > faces.jsonl

  ferkit predict photos/ clip.mp4 --out results/ --every 5
"""

DEMO_HELP = """Recognise the expressions in the sample photo ferkit ships.

The photo holds three public-domain photographs. It prints the faces and writes the annotated \
photo and a figure with each face's probabilities. Needs no dataset and no network.

Examples:

  ferkit demo

  ferkit demo --out demo/ --model runs/ferkit-vgg
"""

WEBCAM_HELP = """Live expression recognition from a camera, in a window.

It shows boxes, labels and frames per second. Each face keeps a track id and its label is \
smoothed over --smooth seconds. Press q or Esc to quit.

Needs a display and an OpenCV build with GUI support (ferkit installs the headless one: \
`pip uninstall -y opencv-python-headless && pip install opencv-python`).

Examples:

  ferkit webcam

  ferkit webcam --camera 1 --model runs/ferkit-vgg
"""

# Options that predict, webcam and demo share (one definition each).
DEVICE_OPTION = typer.Option("auto", "--device", metavar="DEVICE",
                             help="auto | cpu | cuda | mps: where to run the classifier.")
MIN_CONFIDENCE_OPTION = typer.Option(MIN_CONFIDENCE, "--min-confidence", min=0.0, max=1.0,
                                     help="Face detector confidence threshold (0-1).")
DETECT_SIZE_OPTION = typer.Option(DETECT_SIZE, "--detect-size", min=0, metavar="PX",
                                  help=DETECT_SIZE_HELP)
# ferkit.recognition.tracking.DEFAULT_SMOOTH, repeated: that module needs numpy, which the
# command line does not import to show --help (a test keeps the two equal).
DEFAULT_SMOOTH = 0.5
SMOOTH_OPTION = typer.Option(DEFAULT_SMOOTH, "--smooth", min=0.0, metavar="SECONDS",
                             help="Videos and webcam: time constant (s) of the moving average "
                                  "of each tracked face's probabilities; the label drawn is "
                                  "the smoothed one (0: off, each frame's own label).")


def _tracking(smooth: float):
    """The TrackerConfig for --smooth, checked before any model loads; a bad value is a usage
    error naming the option."""
    from ferkit.errors import ConfigError
    from ferkit.recognition.tracking import TrackerConfig

    try:
        return TrackerConfig(smooth=smooth)
    except ConfigError as exc:
        raise ConfigError(f"--smooth {smooth}: {exc}") from None


def _rate_column():
    """A Rich progress column showing items per second (Rich's own speed column is bytes/s)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.1f}/s" if task.speed else "", style="progress.data.speed")

    return RateColumn()


def _short(message: str, name: str) -> str:
    """An error message without the leading 'path: ' (the table / list already shows it)."""
    prefix = f"{name}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def faces_table(rows: list[tuple[str, list]], title: str | None = None):
    """A Rich table: one row per face (or per image without faces)."""
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    table.add_column("input", overflow="fold")
    table.add_column("#", justify="right")
    table.add_column("box x,y,w,h", no_wrap=True)
    table.add_column("expression")
    table.add_column("score", justify="right")
    table.add_column("runner-up")
    table.add_column("flags")
    for name, faces in rows:
        if not faces:
            table.add_row(name, "", "", "[dim]no face found[/dim]", "", "", "")
        for i, face in enumerate(faces):
            ranked = sorted(face.probabilities.items(), key=lambda kv: -kv[1])
            second = f"{ranked[1][0]} {ranked[1][1]:.2f}" if len(ranked) > 1 else ""
            table.add_row(name if i == 0 else "", str(i + 1), ",".join(map(str, face.box)),
                          f"[bold]{face.expression}[/bold]", f"{face.score:.2f}", second,
                          ", ".join(face.flags))
    return table


def _print_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def predict(
    inputs: list[Path] = typer.Argument(..., metavar="INPUT",
                                        help="Image files, folders or video files."),
    model: str = typer.Option("default", "--model", "-m", metavar="MODEL",
                              help="'default' (bundled model), a training run directory (its "
                                   "best.pt), a checkpoint file or a `ferkit export` .onnx "
                                   "file."),
    backend: str = typer.Option("auto", "--backend", metavar="BACKEND",
                                help="auto | torch | onnxruntime. auto: onnxruntime for an .onnx "
                                     "model, and on the CPU where the onnx extra is installed "
                                     "(a checkpoint is exported once, cached); else PyTorch."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object per input "
                                                        "(JSON Lines) instead of a table."),
    out: Path | None = typer.Option(None, "--out", "-o", metavar="DIR",
                                    help="Write annotated images, results.csv and video "
                                         "outputs here."),
    every: int = typer.Option(1, "--every", min=1, metavar="K",
                              help="Videos: recognise every K-th frame only (faster)."),
    smooth: float = SMOOTH_OPTION,
    device: str = DEVICE_OPTION,
    min_confidence: float = MIN_CONFIDENCE_OPTION,
    detect_size: int = DETECT_SIZE_OPTION,
    tta: str = typer.Option("none", "--tta", metavar=TTA_METAVAR, help=TTA_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress",
                                  help="Progress bars on stderr."),
    workers: int = typer.Option(0, "--workers", min=0, metavar="N",
                                help="Threads that read and detect images while the "
                                     "classifier runs (0 = one per core, at least 2)."),
) -> None:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from ferkit.errors import ConfigError
    from ferkit.recognition.batch import ItemResult, collect_inputs, run_batch
    from ferkit.recognition.recognizer import Recognizer

    try:
        check_tta(tta)  # before any image is read
    except ConfigError as exc:  # a bad value, not a usage error: exit code 1
        raise FerkitError(f"--tta {tta}: {exc}") from None
    tracking = _tracking(smooth)
    console = Console()
    err = Console(stderr=True)
    items = collect_inputs(list(inputs))
    rec = Recognizer(model=model, device=device, min_confidence=min_confidence, tta=tta,
                     backend=backend, detect_size=detect_size)
    table_rows: list[tuple[str, list]] = []
    video_notes: list[str] = []
    n_images = sum(1 for it in items if it.kind == "image")
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   _rate_column(), TimeRemainingColumn(), console=err, transient=True,
                   disable=not (progress and err.is_terminal))
    image_task = bar.add_task("images", total=n_images) if n_images > 1 else None
    video_tasks: dict[Path, object] = {}

    def on_frame(item, done: int, total: int) -> None:
        if item.path not in video_tasks:
            video_tasks[item.path] = bar.add_task(f"{item.path.name}", total=None)
        bar.update(video_tasks[item.path], completed=done, total=total or None)

    def on_result(result: ItemResult) -> None:
        item = result.item
        if item.path in video_tasks:
            bar.remove_task(video_tasks.pop(item.path))
        if item.kind == "image" and image_task is not None:
            bar.advance(image_task)
        if json_out:
            _print_json(result.to_dict())
        elif result.video is not None:
            video_notes.append(_video_note(result.video, every))
        elif not result.error:
            table_rows.append((str(item.path), result.faces))

    with bar:
        summary = run_batch(rec, items, out=out, every=every, workers=workers,
                            on_result=on_result, on_frame=on_frame,
                            tracking=tracking)

    if not json_out and table_rows:
        console.print(faces_table(table_rows))
    for note in video_notes:
        console.print(note, highlight=False)
    report = err if json_out else console
    total = summary.total
    speed = (f"; images in {summary.image_seconds:.1f} s "
             f"({n_images / summary.image_seconds:.1f}/s)"
             if n_images > 1 and summary.image_seconds > 0 else "")
    report.print(f"{total} input(s): {summary.processed} processed, {summary.failed} failed, "
                 f"{summary.faces} face(s) found{speed}"
                 + (f"; outputs in {out}" if out is not None and summary.processed else ""))
    if summary.failures:
        report.print("[red]failed:[/red]")
        for name, message in summary.failures:
            report.print(f"  {name}: {_short(message, name)}", markup=False, highlight=False)
    if total and summary.processed == 0:
        # A FerkitError, not typer.Exit(1): `ferkit` turns it into one line and exit code 1.
        raise FerkitError(f"every input failed ({summary.failed} of {total})")


# Tracks listed under a video (the longest); all of them are in the JSON.
MAX_TRACKS_SHOWN = 10


def _video_note(result, every: int) -> str:
    """The closing lines about one video (the table is for images): one line per track."""
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result.summary().items(),
                                                      key=lambda kv: -kv[1])) or "none"
    lines = [f"[bold]{result.input}[/bold]: {result.frames_read} frames at {result.fps:.1f} "
             f"fps, {len(result.frames)} processed (every {every}), {result.n_faces} face(s) "
             f"in {len(result.tracks)} track(s); largest face per frame: {counts}"]
    longest = sorted(result.tracks, key=lambda t: -t.frames)[:MAX_TRACKS_SHOWN]
    for t in sorted(longest, key=lambda t: t.track):
        shares = ", ".join(f"{k} {v:.0%}" for k, v in t.expressions.items())
        lines.append(f"  track {t.track}: {t.start:.1f}-{t.end:.1f} s ({t.duration:.1f} s on "
                     f"screen, {t.frames} frames): {shares}")
    if len(result.tracks) > len(longest):
        lines.append(f"  ... {len(result.tracks) - len(longest)} shorter track(s) in "
                     f"{result.outputs['json']}")
    lines.append(f"  wrote {result.outputs['video']}, {result.outputs['csv']}, "
                 f"{result.outputs['json']}, {result.outputs['plot']}")
    return "\n".join(lines)


def webcam(
    camera: int = typer.Option(0, "--camera", "-c", min=0, help="Camera index."),
    model: str = typer.Option("default", "--model", "-m", metavar="MODEL",
                              help="'default' (bundled model), a run directory or a checkpoint."),
    device: str = DEVICE_OPTION,
    min_confidence: float = MIN_CONFIDENCE_OPTION,
    detect_size: int = DETECT_SIZE_OPTION,
    smooth: float = SMOOTH_OPTION,
) -> None:
    from ferkit.recognition.live import check_display, run_webcam
    from ferkit.recognition.recognizer import Recognizer

    _tracking(smooth)
    check_display()  # before loading the model: fail fast on a headless machine
    rec = Recognizer(model=model, device=device, min_confidence=min_confidence,
                     detect_size=detect_size)
    start = time.perf_counter()
    frames = run_webcam(rec, camera, smooth=smooth)
    elapsed = time.perf_counter() - start
    typer.echo(f"{frames} frames in {elapsed:.1f} s ({frames / max(elapsed, 1e-9):.1f} FPS)")


def demo(
    out: Path = typer.Option(Path("ferkit-demo"), "--out", "-o", metavar="DIR",
                             help="Where to write the annotated photo and the figure."),
    model: str = typer.Option("default", "--model", "-m", metavar="MODEL",
                              help="'default' (bundled model), a run directory or a checkpoint."),
    device: str = DEVICE_OPTION,
    image: Path | None = typer.Option(None, "--image", metavar="PATH",
                                      help="Use this photo instead of the bundled sample."),
) -> None:
    from rich.console import Console

    from ferkit.recognition.draw import annotate, demo_figure, save_image
    from ferkit.recognition.images import read_image
    from ferkit.recognition.recognizer import Recognizer
    from ferkit.recognition.samples import sample_photo

    console = Console()
    photo = image if image is not None else sample_photo()
    start = time.perf_counter()
    rec = Recognizer(model=model, device=device)
    loaded = read_image(photo)
    t0 = time.perf_counter()
    faces = rec.predict(loaded)
    took = time.perf_counter() - t0
    model_path = rec.predictor.meta.get("path") or model
    console.print(f"model: {rec.predictor.arch} ({model_path}) on {rec.device}", highlight=False)
    console.print(faces_table([(photo.name, faces)],
                              title=f"{len(faces)} face(s) in {photo.name} ({took * 1000:.0f} ms)"))
    out.mkdir(parents=True, exist_ok=True)
    annotated = save_image(annotate(loaded, faces), out / f"{photo.stem}.annotated.jpg")
    figure = demo_figure(loaded, faces, out / f"{photo.stem}.figure.png", classes=rec.classes,
                         title=f"{photo.name}: {len(faces)} face(s), model {rec.predictor.arch}")
    console.print(f"wrote {annotated}\nwrote {figure}\n"
                  f"{time.perf_counter() - start:.1f} s in all", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("predict", help=PREDICT_HELP)(predict)
    app.command("webcam", help=WEBCAM_HELP)(webcam)
    app.command("demo", help=DEMO_HELP)(demo)
