"""ferkit CLI: `ferkit sweep` (Optuna studies of train runs), `ferkit sweep report`, presets."""

from __future__ import annotations

import json
import sys

import typer

from ferkit.cli import TYPER_SETTINGS

SWEEP_HELP = """Run a hyper-parameter or architecture sweep (Optuna).

Each trial is a `ferkit train` run (in-process) with the trial's parameters, its run \
directory under RUNS/STUDY/trial-NNNN.

The search space is a preset or a small TOML file (see sweeps/*.toml). Grid presets run every \
cell exactly once: conv-stages (2-5 conv stages), fc-layers (1-4 FC layers), widths (conv \
kernels x FC neurons). tune is a TPE search over lr, weight decay, augmentation, label \
smoothing and width that prunes poor trials early.

Results go to an Optuna storage (default sqlite:///runs/sweeps.db). Workers never lose or \
duplicate a trial: --workers N runs N local processes, and any number of `ferkit sweep` \
processes, here or on other machines, join the same study with the same --storage (e.g. \
postgresql://user:pw@host/db, with `pip install 'ferkit\\[sweep-postgres]'`) and --study. A \
joining worker needs only --storage, --study and --data; the space and options come from the \
study. A worker that dies mid-trial (killed, machine lost) stops beating: after 4 missed \
heartbeats another worker marks its trial failed and runs the same parameters again.

Examples:

  ferkit sweep --preset conv-stages --data fer2013.zip --epochs 30

  ferkit sweep --preset tune --data fer2013.zip --epochs 20 --trials 40 \\
      --workers 2

  ferkit sweep --space sweeps/tune.toml --data fer2013.zip \\
      --storage postgresql://u:p@db/sweeps

  # another machine joins the study
  ferkit sweep --study tune --data fer2013.zip \\
      --storage postgresql://u:p@db/sweeps

  # the latest study in runs/sweeps.db
  ferkit sweep report
"""

REPORT_HELP = """Show a study's trials and write its plots.

One row per trial (parameters, epochs, time, train/val loss and accuracy of the best epoch); \
params.png (accuracy vs each parameter), history.png (optimisation history) and sweep.json go \
to --out (default RUNS/STUDY/report).

Examples:

  ferkit sweep report

  ferkit sweep report conv-stages --storage sqlite:///s.db --json

  # a table to paste into a README
  ferkit sweep report conv-stages --markdown
"""

PRESETS_HELP = """List the sweep presets and what they vary.

A preset is a search space: a grid of the source projects, or a TPE search (tune). Run \
one with ferkit sweep --preset NAME.

Examples:

  ferkit sweep presets

  ferkit sweep --preset fc-layers --data fer2013.zip --epochs 30
"""


def register(app: typer.Typer) -> None:
    """Add `ferkit sweep` (a group: the sweep itself, `report` and `presets`)."""
    group = typer.Typer(help=SWEEP_HELP, invoke_without_command=True, no_args_is_help=True,
                        **TYPER_SETTINGS)
    group.callback()(sweep_command)
    group.command("report", help=REPORT_HELP)(report_command)
    group.command("presets", help=PRESETS_HELP)(presets_command)
    app.add_typer(group, name="sweep")


def sweep_command(
    ctx: typer.Context,
    preset: str = typer.Option(None, "--preset", "-p", help="conv-stages | fc-layers | widths | "
                               "tune (see `ferkit sweep presets`)."),
    space: str = typer.Option(None, "--space", "-s", help="Search space TOML file."),
    data: str = typer.Option("", "--data", "-d", help="Dataset: FER2013 CSV, image folder or zip."),
    epochs: int = typer.Option(None, "--epochs", "-e", help="Epochs per trial (default: the "
                               "space's, else ferkit train's)."),
    limit: int = typer.Option(None, "--limit", help="Train on the first N training images only."),
    batch_size: int = typer.Option(None, "--batch-size", "-b"),
    device: str = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N | mps "
                               "(default: the space's, else auto)."),
    seed: int = typer.Option(None, "--seed", help="Training seed of every trial."),
    storage: str = typer.Option(None, "--storage", help="Optuna storage URL (default "
                                "sqlite:///runs/sweeps.db); a bare path is a SQLite file."),
    study: str = typer.Option(None, "--study", help="Study name (default: the space's name)."),
    trials: int = typer.Option(None, "--trials", "-n", help="The study's trial budget, all "
                               "workers together (default: the space's; grid: every cell)."),
    workers: int = typer.Option(1, "--workers", "-w", help="Local worker processes."),
    runs: str = typer.Option(None, "--runs", help="Root of the trial run dirs (default "
                             "runs/sweeps)."),
    threads: int = typer.Option(0, "--threads", help="Torch CPU threads per worker (0: this "
                                "machine's cores shared out among --workers)."),
    heartbeat: int = typer.Option(None, "--heartbeat", help="Seconds between a running trial's "
                                  "heartbeats, for a new study (default 30); a trial silent for "
                                  "4 heartbeats is failed and retried by another worker. "
                                  "Joining workers use the study's."),
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    from ferkit.sweeps.space import resolve_space
    from ferkit.sweeps.storage import DEFAULT_STORAGE, SweepError
    from ferkit.sweeps.study import DEFAULT_RUNS, SweepOptions
    from ferkit.sweeps.worker import run_sweep

    if workers < 1:
        raise SweepError(f"--workers must be >= 1, got {workers}")
    if trials is not None and trials < 1:
        raise SweepError(f"--trials must be >= 1, got {trials}")
    if heartbeat is not None and heartbeat < 1:
        raise SweepError(f"--heartbeat must be >= 1 second, got {heartbeat}")
    if threads < 0:
        raise SweepError(f"--threads must be >= 0 (0 = cores / workers), got {threads}")
    joining = not preset and not space and study
    search = None if joining else resolve_space(preset, space)
    options = SweepOptions(data=data, epochs=epochs, limit=limit, device=device,
                           batch_size=batch_size, seed=seed, storage=storage or DEFAULT_STORAGE,
                           study=study, trials=trials, workers=workers,
                           runs=runs or DEFAULT_RUNS, threads=threads, heartbeat=heartbeat)
    summary = run_sweep(search, options, say=lambda s: typer.echo(s))
    typer.echo(f"study {summary.study!r}: {summary.n_complete} complete, {summary.n_pruned} "
               f"pruned, {summary.n_failed} failed of {summary.n_trials} trials")
    if summary.best_value is not None:
        params = ", ".join(f"{k}={v}" for k, v in summary.best_params.items())
        typer.echo(f"best: val acc {summary.best_value:.4f} with {params} -> "
                   f"{summary.best_run_dir}")
    storage_arg = "" if options.storage == DEFAULT_STORAGE else f" --storage {options.storage}"
    typer.echo(f"table and plots: ferkit sweep report {summary.study}{storage_arg}")


def report_command(
    study: str = typer.Argument(None, metavar="STUDY",
                                help="Study name (default: the latest in the storage)."),
    storage: str = typer.Option(None, "--storage", help="Optuna storage URL (default "
                                "sqlite:///runs/sweeps.db)."),
    out: str = typer.Option(None, "--out", "-o", help="Folder for the plots and sweep.json "
                            "(default RUNS/STUDY/report)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the table as Markdown."),
) -> None:
    from ferkit.sweeps import report as sr
    from ferkit.sweeps.storage import DEFAULT_STORAGE

    url = storage or DEFAULT_STORAGE
    st = sr.load_study(url, study)
    report = sr.report_dict(st, url)
    written = sr.write_report(st, report, out or sr.default_out_dir(st))
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        typer.echo(f"plots: {', '.join(str(p) for p in written.values())}", err=True)
        return
    if markdown:
        typer.echo(sr.markdown_table(report))
    else:
        _print_table(report)
    best = report["best"]
    if best is not None:
        params = ", ".join(f"{k}={v}" for k, v in best["params"].items())
        typer.echo(f"best: trial {best['trial']}, val acc {best['value']:.4f} ({params}) -> "
                   f"{best['run_dir']}")
    typer.echo(f"plots: {', '.join(str(p) for p in written.values())}")


def _print_table(report: dict) -> None:
    from ferkit.sweeps.report import table_rows

    header, cells = table_rows(report)
    if not sys.stdout.isatty():  # pipes and files get plain aligned text
        from ferkit.sweeps.report import plain_table

        typer.echo(f"study {report['study']} ({report['storage']}): {len(cells)} trials")
        typer.echo(plain_table(report))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"study {report['study']} ({report['storage']}): {len(cells)} trials")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i in (1,) else "right")
    for row in cells:
        table.add_row(*row)
    Console().print(table)


def presets_command() -> None:
    from ferkit.sweeps.space import PRESETS, preset

    for name in PRESETS:
        typer.echo(preset(name).summary())
        typer.echo("")
