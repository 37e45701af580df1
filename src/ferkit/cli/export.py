"""ferkit CLI: `ferkit export`, a checkpoint as an ONNX file checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import typer

HELP = (
    "Export a model to ONNX and check it against PyTorch.\n\n"
    "The file holds the whole classifier (normalisation inside, any batch size, class names in "
    "the metadata); the onnxruntime probabilities of 256 random faces must match PyTorch's "
    "within 1e-4. Run it with `ferkit predict --model FILE.onnx` or `ferkit serve --model "
    "FILE.onnx`, or from any ONNX runtime: input `faces` float32 (N, 1, 48, 48) grey levels "
    "0..255, output `probabilities` (N, 7). Needs the onnx extra "
    "(pip install 'ferkit\\[onnx]').\n\n"
    "Examples:\n\n"
    "  ferkit export default --out ferkit-small.onnx\n\n"
    "  ferkit export runs/20261201-120000-ferkit-small --format onnx \\\n"
    "      --out model.onnx\n\n"
    "  ferkit export default --int8 --calibration-data fer2013.zip \\\n"
    "      --out ferkit-int8.onnx\n\n"
    "--int8 writes a static int8 model calibrated on 512 training faces of --calibration-data "
    "and prints its accuracy next to fp32's on that data's val split (FER2013 PublicTest)."
)

PARITY_TOLERANCE = 1e-4


def register(app: typer.Typer) -> None:
    app.command("export", help=HELP, no_args_is_help=True)(export_command)


def export_command(
    model: str = typer.Argument(..., metavar="MODEL",
                                help="'default', a run directory or a checkpoint file."),
    fmt: str = typer.Option("onnx", "--format", help="Export format (onnx)."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Output file (default: <model name>.onnx here)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset version."),
    int8: bool = typer.Option(False, "--int8", help="Quantise to int8 (static, calibrated)."),
    calibration_data: str = typer.Option("", "--calibration-data", metavar="PATH",
                                         help="Dataset for --int8 calibration (its training "
                                         "faces) and the accuracy check (its val split)."),
) -> None:
    import numpy as np

    from ferkit.errors import ConfigError, ModelError
    from ferkit.models.export import export_onnx
    from ferkit.models.onnx_predictor import OnnxPredictor
    from ferkit.models.predictor import Predictor

    if fmt != "onnx":
        raise ConfigError(f"--format {fmt!r}: only onnx is supported")
    if int8 and not calibration_data:
        raise ConfigError("--int8 needs --calibration-data PATH (faces to calibrate on)")
    if out is None:
        out = Path(f"{Path(model).name if model != 'default' else 'ferkit-default'}.onnx")
    if int8:
        _export_int8(model, out, opset, calibration_data)
        return
    result = export_onnx(model, out, opset=opset)
    faces = np.random.default_rng(0).integers(0, 256, (256, 48, 48), dtype=np.uint8)
    reference = Predictor.load(model, device="cpu").predict_proba(faces)
    exported = OnnxPredictor.load(result.path).predict_proba(faces)
    diff = float(np.abs(reference - exported).max())
    if diff > PARITY_TOLERANCE:
        raise ModelError(f"{result.path}: onnxruntime differs from PyTorch by {diff:.2e} "
                         f"(> {PARITY_TOLERANCE:g}); the export is not faithful")
    typer.echo(f"wrote {result.path} ({result.size_bytes / 1e6:.2f} MB): {result.arch}, "
               f"opset {result.opset}, classes {', '.join(result.classes)}")
    typer.echo(f"checked: onnxruntime matches PyTorch on 256 faces (max |diff| {diff:.1e})")


def _export_int8(model: str, out: Path, opset: int, calibration_data: str) -> None:
    """fp32 export to a temp file, int8 quantisation into `out`, accuracies side by side."""
    import tempfile

    from ferkit.data import load_dataset
    from ferkit.evaluation.evaluate import evaluate
    from ferkit.models.export import CALIBRATION_FACES, export_onnx, quantize_int8
    from ferkit.models.onnx_predictor import OnnxPredictor

    dataset = load_dataset(calibration_data)
    train = dataset.images[dataset.splits == "train"]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", opset=opset)
        quantize_int8(fp32.path, out, train)
        typer.echo(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {fp32.arch} int8 (static, "
                   f"calibrated on {min(len(train), CALIBRATION_FACES)} training faces of "
                   f"{calibration_data})")
        is_val = dataset.splits == "val"
        if not is_val.any():
            typer.echo("no val split in the calibration data: accuracy not checked")
            return
        accuracies = {name: evaluate(OnnxPredictor.load(path), dataset, split="val").accuracy
                      for name, path in (("fp32", fp32.path), ("int8", out))}
    typer.echo(f"val accuracy ({int(is_val.sum()):,} faces): fp32 {accuracies['fp32']:.2%}, int8 "
               f"{accuracies['int8']:.2%} ({accuracies['int8'] - accuracies['fp32']:+.2%})")
