"""ferkit CLI: `ferkit calibrate`, temperature scaling fitted on a Training slice."""

from __future__ import annotations

import json
from pathlib import Path

import typer

HELP = """Fit a temperature so a model's confidence matches its accuracy.

Temperature scaling divides the logits by one number T before the softmax, fitted by \
minimising the negative log-likelihood on a --holdout slice of Training (the slice `ferkit \
train --holdout` draws, same fraction and seed), never on the val or test split. The top \
class, so accuracy, does not change; the probabilities do. T is written into a copy of the \
checkpoint (--out) with every other entry kept, and every inference path applies it: \
evaluate, predict, the Recognizer, serve and `ferkit export`.

A run that held out a slice itself is calibrated on that slice by default (faces it never \
trained on). A model trained on all of Training (the bundled one) has seen the slice, so \
the fit there is optimistic; check the result on the val split with `ferkit evaluate`.

Examples:

  ferkit calibrate --model runs/ferkit-small --data fer2013.zip \\
      --out calibrated.pt

  ferkit calibrate --model default --data fer2013.zip --holdout 0.1 \\
      --out default-calibrated.pt

  ferkit evaluate --model calibrated.pt --data fer2013.zip --split val \\
      --out report/
"""


def register(app: typer.Typer) -> None:
    app.command("calibrate", help=HELP, no_args_is_help=True)(calibrate_command)


def calibrate_command(
    model: str = typer.Option("default", "--model", "-m", metavar="MODEL",
                              help="Run directory (uses its best.pt), checkpoint file or "
                                   "'default' for the bundled model."),
    data: str = typer.Option(..., "--data", "-d", metavar="PATH",
                             help="Dataset with a train split: fer2013.csv, an image folder "
                                  "or a zip of either."),
    out: Path = typer.Option(..., "--out", "-o", metavar="FILE",
                             help="Where to write the calibrated checkpoint (may be the "
                                  "input file: it is replaced atomically)."),
    holdout: float | None = typer.Option(None, "--holdout", metavar="FRACTION",
                                         help="Fraction of Training to fit on. Default: the "
                                              "run's own holdout, else 0.1."),
    holdout_seed: int | None = typer.Option(None, "--holdout-seed", metavar="N",
                                            help="Seed of the slice. Default: the run's own, "
                                                 "else 0."),
    device: str = typer.Option("auto", "--device", metavar="auto|cpu|cuda",
                               help="Where to run the model."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Faces per forward pass."),
    json_out: bool = typer.Option(False, "--json", help="Print the calibration entry as JSON."),
    skip_bad: bool = typer.Option(False, "--skip-bad",
                                  help="Leave out unreadable entries of the data (listed) "
                                       "instead of stopping at the first."),
) -> None:
    from rich.console import Console

    from ferkit.cli.data import load_with_progress, report_skipped
    from ferkit.evaluation.calibration import calibrate, calibrated_payload, plan_holdout
    from ferkit.models.checkpoint import load_checkpoint, save_checkpoint

    err = Console(stderr=True)
    ckpt = load_checkpoint(model)
    plan_holdout(ckpt, holdout, holdout_seed)  # a bad --holdout fails before the data loads
    dataset = load_with_progress(data, skip_bad, err)
    report_skipped(dataset, err)
    entry = calibrate(ckpt, dataset, holdout, holdout_seed, batch_size, device)
    save_checkpoint(Path(out), calibrated_payload(ckpt, entry))
    caveat = _caveat(entry)

    if json_out:
        typer.echo(json.dumps({"out": str(out), "model": str(ckpt["path"]),
                               "calibration": entry}, indent=2))
        if caveat:
            err.print(f"note: {caveat}", highlight=False, soft_wrap=True)
        return
    console = Console()
    console.print(f"[bold]model[/] {ckpt['path']} ({ckpt['arch']})", soft_wrap=True,
                  highlight=False)
    console.print(f"[bold]fitted on[/] {entry['fitted_on']}", soft_wrap=True, highlight=False)
    console.print(f"temperature [bold]{entry['temperature']:.4f}[/] "
                  f"({'softens' if entry['temperature'] > 1 else 'sharpens'} the probabilities)",
                  highlight=False)
    console.print(f"on that slice: NLL {entry['nll_before']:.4f} -> {entry['nll_after']:.4f}, "
                  f"ECE ({entry['bins']} bins) {entry['ece_before']:.4f} -> "
                  f"{entry['ece_after']:.4f}", highlight=False)
    if caveat:
        console.print(f"[yellow]note[/]: {caveat}", soft_wrap=True, highlight=False)
    console.print(f"wrote {out}", soft_wrap=True, highlight=False)
    console.print(f"measure it on faces it never saw: ferkit evaluate --model {out} --data "
                  f"{data} --split val", soft_wrap=True, highlight=False)


def _caveat(entry: dict) -> str:
    if entry.get("seen_in_training") is True:
        return ("the model trained on these faces, so its NLL there is optimistic and T is "
                "fitted to faces it knows; the numbers above are not a held-out measurement")
    if entry.get("seen_in_training") is None:
        return ("the checkpoint does not record its training slice: these faces may be ones "
                "it trained on")
    return ""
