"""ferkit CLI: `ferkit evaluate` (metrics of a model on a dataset split) and `ferkit ensemble`."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import typer

from ferkit.errors import FerkitError
from ferkit.tta import TTA_HELP, TTA_METAVAR, check_tta

EVALUATE_HELP = """Measure a model on one split: accuracy, F1, confusion matrix.

Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix (rows = \
true class, columns = predicted). The split defaults to test if the data has one, else val, \
else its only split. Macro-F1 averages F1 over the classes present in the split; every class \
of the model gets a row. Model classes are matched to the data's by name.

Calibration: the expected calibration error (ECE, 15 equal-width confidence bins; 0 means a \
confidence of 0.8 is right 80% of the time) and the mean confidence against the accuracy. \
A checkpoint calibrated with `ferkit calibrate` is measured with its temperature applied.

Examples:

  ferkit evaluate --model runs/ferkit-vgg --data fer2013.zip

  ferkit evaluate --model best.pt --data fer2013.csv --split val \\
      --tta flip --json

  ferkit evaluate --model ensemble.pt --data faces/ --out report/

  ferkit evaluate --model ferkit-int8.onnx --data fer2013.zip
"""

ENSEMBLE_HELP = """Combine trained models into one checkpoint that averages them.

Their probabilities are averaged (optionally weighted). Members may differ in architecture \
and normalisation but must share the class list.

The result is an ordinary checkpoint (arch "ensemble") holding every member's weights and \
normalisation: it loads wherever a checkpoint does (evaluate, predict, serve, ...) and takes \
--tta like any model.

Examples:

  ferkit ensemble runs/ferkit-vgg runs/resnet18 --out ensemble.pt

  ferkit ensemble a.pt b.pt c.pt --weights 2,1,1 --out ensemble.pt

  ferkit evaluate --model ensemble.pt --data fer2013.zip --tta flip
"""


def evaluate_command(
    model: str = typer.Option("default", "--model", "-m", metavar="MODEL",
                              help="Run directory (uses its best.pt), checkpoint file, "
                                   "'default' for the bundled model, or a `ferkit export` .onnx "
                                   "file (run with onnxruntime)."),
    data: str = typer.Option(..., "--data", "-d", metavar="PATH",
                             help="Dataset: fer2013.csv, an image folder or a zip of either."),
    split: str | None = typer.Option(None, "--split", metavar="NAME",
                                     help="Split to evaluate (train, val, test). "
                                          "Default: test, else val, else the only one."),
    tta: str = typer.Option("none", "--tta", metavar=TTA_METAVAR, help=TTA_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the metrics as JSON on stdout."),
    out: Path | None = typer.Option(None, "--out", "-o", metavar="DIR",
                                    help="Also write metrics.json, predictions.csv, "
                                         "confusion_matrix.png, reliability.png and "
                                         "mistakes.png here."),
    device: str = typer.Option("auto", "--device", metavar="auto|cpu|cuda",
                               help="Where to run the model."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Faces per forward pass."),
    skip_bad: bool = typer.Option(False, "--skip-bad",
                                  help="Leave out unreadable entries of the data (listed) "
                                       "instead of stopping at the first."),
) -> None:
    from rich.console import Console

    from ferkit.errors import ConfigError

    try:
        check_tta(tta)  # before the data is loaded
    except ConfigError as exc:  # a bad value, not a usage error: exit code 1
        raise FerkitError(f"--tta {tta}: {exc}") from None
    err = Console(stderr=True)
    from ferkit.cli.data import load_with_progress, report_skipped
    from ferkit.evaluation.evaluate import evaluate, load_predictor

    predictor = load_predictor(model, device=device)
    dataset = load_with_progress(data, skip_bad, err)
    report_skipped(dataset, err)
    busy = (err.status(f"evaluating on {predictor.device}", spinner="dots") if err.is_terminal
            else contextlib.nullcontext())
    with busy:
        report = evaluate(predictor, dataset, split=split, tta=tta, batch_size=batch_size)
    report.data = str(data)
    files = report.save(out) if out is not None else {}

    if json_out:
        extra = {"arch": predictor.arch}
        if dataset.skipped:
            extra["skipped"] = len(dataset.skipped)
        typer.echo(report.to_json(**extra))
        for path in files.values():
            err.print(f"wrote {path}", highlight=False)
        return
    console = Console()
    print_report(console, report, predictor.arch)
    for path in files.values():
        console.print(f"wrote {path}", soft_wrap=True, highlight=False)


def print_report(console, report, arch: str = "") -> None:
    """The report as Rich tables: per-class metrics with totals, then the confusion matrix."""
    from rich.table import Table

    def fmt(value) -> str:
        return "—" if value is None else f"{value:.4f}"

    console.print(f"[bold]model[/] {report.model}{f' ({arch})' if arch else ''}",
                  soft_wrap=True, highlight=False)
    console.print(f"[bold]data[/]  {report.data}: split {report.split}, tta {report.tta}, "
                  f"{report.n} faces", soft_wrap=True, highlight=False)
    table = Table()
    table.add_column("class")
    for name in ("precision", "recall", "F1", "support"):
        table.add_column(name, justify="right")
    for name, m in report.per_class.items():
        style = "dim" if m["support"] == 0 else None
        table.add_row(name, fmt(m["precision"]), fmt(m["recall"]), fmt(m["f1"]),
                      str(m["support"]), style=style)
    present = sum(1 for m in report.per_class.values() if m["support"])
    table.add_section()
    table.add_row("accuracy", "", "", f"[bold]{report.accuracy:.4f}[/]", str(report.n))
    table.add_row(f"macro-F1 ({present} classes present)", "", "",
                  f"[bold]{report.macro_f1:.4f}[/]", str(report.n))
    table.add_section()
    cal = report.calibration
    t = getattr(report, "temperature", 1.0)
    table.add_row(f"mean confidence (vs accuracy {cal['accuracy']:.4f})", "", "",
                  f"{cal['mean_confidence']:.4f}", str(report.n))
    table.add_row(f"ECE ({cal['bins']} bins, "
                  f"{'uncalibrated' if t == 1.0 else f'temperature {t:.3f}'})", "", "",
                  f"[bold]{cal['ece']:.4f}[/]", str(report.n))
    console.print(table)

    cm = Table(title="confusion matrix (rows = true, columns = predicted)", title_justify="left")
    cm.add_column("true \\ pred")
    for name in report.classes:
        cm.add_column(name[:8], justify="right")
    for i, name in enumerate(report.classes):
        row = report.confusion_matrix[i]
        cells = [f"[bold green]{v}[/]" if i == j and v else ("[dim]0[/]" if v == 0 else str(v))
                 for j, v in enumerate(row.tolist())]
        cm.add_row(name, *cells)
    console.print(cm)


def ensemble_command(
    models: list[str] = typer.Argument(..., metavar="MODEL",
                                       help="Run directories, checkpoint files or 'default' "
                                            "(at least two)."),
    out: Path = typer.Option(..., "--out", "-o", metavar="FILE",
                             help="Where to write the ensemble checkpoint, e.g. ensemble.pt."),
    weights: str | None = typer.Option(None, "--weights", "-w", metavar="W1,W2,...",
                                       help="One non-negative weight per model (scaled to sum "
                                            "to 1). Default: equal."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    from ferkit.errors import ModelError
    from ferkit.models.ensemble import save_ensemble

    if len(models) < 2:
        raise ModelError(f"an ensemble needs at least two models, got {len(models)}")
    parsed = None
    if weights is not None:
        try:
            parsed = [float(w) for w in weights.split(",")]
        except ValueError:
            raise FerkitError(f"--weights {weights}: expected comma-separated numbers, "
                              "e.g. 2,1,1") from None
        if len(parsed) != len(models):
            raise FerkitError(f"--weights {weights}: {len(parsed)} weights for "
                              f"{len(models)} models")
    payload = save_ensemble(models, out, parsed)
    members = payload["config"]["ensemble"]["members"]
    specs = payload["arch_kwargs"]["members"]
    size_mb = Path(out).stat().st_size / 2**20
    if json_out:
        typer.echo(json.dumps({
            "out": str(out), "classes": payload["classes"], "size_mb": round(size_mb, 2),
            "members": [{"path": m["path"], "arch": m["arch"], "weight": round(m["weight"], 6),
                         "normalization": s["normalization"]}
                        for m, s in zip(members, specs, strict=True)],
        }, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ensemble of {len(members)} models", title_justify="left")
    for name in ("model", "arch", "mean", "std", "weight"):
        table.add_column(name, justify="left" if name in ("model", "arch") else "right")
    for m, s in zip(members, specs, strict=True):
        norm = s["normalization"]
        table.add_row(m["path"], m["arch"], f"{norm['mean']:.4f}", f"{norm['std']:.4f}",
                      f"{m['weight']:.3f}")
    console = Console()
    console.print(table)
    console.print(f"wrote {out} ({size_mb:.1f} MB, classes {', '.join(payload['classes'])})",
                  soft_wrap=True, highlight=False)
    console.print(f"use it like any checkpoint: ferkit evaluate --model {out} --data PATH",
                  soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add `evaluate` and `ensemble` to the root app."""
    app.command("evaluate", help=EVALUATE_HELP, no_args_is_help=True)(evaluate_command)
    app.command("ensemble", help=ENSEMBLE_HELP, no_args_is_help=True)(ensemble_command)
