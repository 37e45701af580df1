"""ferkit CLI: `ferkit explain`, a saliency map of each face's predicted expression."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ferkit.cli.predict import DETECT_SIZE_OPTION, DEVICE_OPTION, MIN_CONFIDENCE_OPTION

# ferkit.models.saliency.METHODS, repeated: that module needs torch, which --help does not
# import (a test keeps the two equal).
METHODS = ("auto", "gradcam", "gradient", "gradient-x-input")
DEFAULT_OUT = Path("ferkit-out") / "explain"

HELP = """Show which parts of each face made the model name its expression.

For each face in IMAGE: a saliency map of the predicted expression, drawn over the aligned \
48x48 face the model saw and over the photo. auto uses Grad-CAM on the model's last conv \
block; a model without a usable one (an ensemble) gets the input gradient, averaged over \
noisy copies of the face and smoothed (--method gradient; gradient-x-input weights it by \
the pixels). Red: much, blue: little.

Writes NAME.explain.png (the photo with the maps, and every face beside its map) and \
NAME.faceN.png per face to --out (NAME: the image's file name without its extension), and \
prints what it wrote.

Examples:

  ferkit explain photo.jpg

  ferkit explain photo.jpg --method gradient --out why/

  ferkit explain photo.jpg --model runs/ferkit-vgg
"""


def explain(
    image: Path = typer.Argument(..., metavar="IMAGE", help="A photo with one or more faces."),
    model: str = typer.Option("default", "--model", "-m", metavar="MODEL",
                              help="'default' (bundled model), a training run directory or a "
                                   "checkpoint file (not an .onnx file: it has no gradients)."),
    out: Path = typer.Option(DEFAULT_OUT, "--out", "-o", metavar="DIR",
                             help="Where to write the pictures."),
    method: str = typer.Option("auto", "--method", metavar="METHOD",
                               help="auto | gradcam | gradient | gradient-x-input."),
    device: str = DEVICE_OPTION,
    min_confidence: float = MIN_CONFIDENCE_OPTION,
    detect_size: int = DETECT_SIZE_OPTION,
) -> None:
    from ferkit.errors import ConfigError, InputError, ModelError
    from ferkit.images import is_video_name
    from ferkit.recognition.sizes import check_detect_size

    if method not in METHODS:
        raise ConfigError(f"--method {method}: expected one of {', '.join(METHODS)}")
    check_detect_size(detect_size)
    if str(model).lower().endswith(".onnx"):
        raise ModelError(f"{model}: explaining needs the PyTorch checkpoint (an ONNX file has "
                         "no gradients); give the checkpoint or run directory it came from")
    if image.is_dir():
        raise InputError(f"{image}: is a folder; explain takes one image")
    if is_video_name(image):
        raise InputError(f"{image}: is a video; explain takes one image (a frame of it)")
    if not image.is_file():
        raise InputError(f"{image}: no such file")

    from ferkit.recognition.explain import face_caption, write_explanations
    from ferkit.recognition.recognizer import Recognizer

    start = time.perf_counter()
    # PyTorch for both: the classes explained are the ones the same weights predict, and no
    # ONNX export is made for a one-off run.
    rec = Recognizer(model=model, device=device, min_confidence=min_confidence,
                     detect_size=detect_size, backend="torch")
    prepared = rec.prepare(image)
    if not len(prepared.crops):
        raise InputError(f"{image}: no face found (try --min-confidence lower, or a photo "
                         "with larger, frontal faces)")
    explanations = rec.explain_prepared(prepared, method)
    written = write_explanations(prepared.loaded, explanations, out, image.stem)
    model_path = rec.predictor.meta.get("path") or model
    # typer.echo, not Rich: a long path in a line must not be wrapped into two
    typer.echo(f"model: {rec.predictor.arch} ({model_path}) on {rec.device}")
    for i, (e, path) in enumerate(zip(explanations, written.faces, strict=True), 1):
        layer = f" on {e.layer}" if e.layer else ""
        typer.echo(f"{face_caption(i, e)}{layer}, box {','.join(map(str, e.face.box))}")
        typer.echo(f"  wrote {path}")
    typer.echo(f"wrote {written.overlay}\n{time.perf_counter() - start:.1f} s in all")


def register(app: typer.Typer) -> None:
    """Add this module's command to the root app."""
    app.command("explain", help=HELP, no_args_is_help=True)(explain)
