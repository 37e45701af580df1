"""ferkit CLI: `ferkit sweep` (Optuna studies of train runs), `ferkit sweep report`, presets."""

from __future__ import annotations

import inspect
import json
import sys
import typing
from typing import Any

import typer

from ferkit.cli import TYPER_SETTINGS
from ferkit.sweeps.storage import DEFAULT_STORAGE

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
    group.callback()(make_sweep_command())
    group.command("report", help=REPORT_HELP)(report_command)
    group.command("presets", help=PRESETS_HELP)(presets_command)
    app.add_typer(group, name="sweep")


def _own_options() -> dict[str, list[inspect.Parameter]]:
    """The options of `ferkit sweep` that are not SweepOptions fields: the search space."""
    from ferkit.cli.fields import cli_option

    return {"Space": [
        cli_option("preset", str | None, None, "--preset", "-p", rich_help_panel="Space",
                   help="conv-stages | fc-layers | widths | tune (see `ferkit sweep presets`)."),
        cli_option("space", str | None, None, "--space", "-s", rich_help_panel="Space",
                   help="Search space TOML file."),
    ]}


def _sweep_command(ctx: typer.Context, preset: str | None = None, space: str | None = None,
                   **options: Any) -> None:
    """`ferkit sweep` without a subcommand: run (or join) a study with the SweepOptions typed
    here."""
    if ctx.invoked_subcommand is not None:
        return
    from ferkit.sweeps.options import SweepOptions
    from ferkit.sweeps.space import resolve_space
    from ferkit.sweeps.worker import run_sweep

    sweep = SweepOptions(**options)  # checks every option
    joining = not preset and not space and sweep.study
    search = None if joining else resolve_space(preset, space)
    summary = run_sweep(search, sweep, say=lambda s: typer.echo(s))
    typer.echo(f"study {summary.study!r}: {summary.n_complete} complete, {summary.n_pruned} "
               f"pruned, {summary.n_failed} failed of {summary.n_trials} trials")
    if summary.best_value is not None:
        params = ", ".join(f"{k}={v}" for k, v in summary.best_params.items())
        typer.echo(f"best: val acc {summary.best_value:.4f} with {params} -> "
                   f"{summary.best_run_dir}")
    storage_arg = "" if sweep.storage == DEFAULT_STORAGE else f" --storage {sweep.storage}"
    typer.echo(f"table and plots: ferkit sweep report {summary.study}{storage_arg}")


def make_sweep_command():
    """_sweep_command with one option per SweepOptions field (see ferkit.cli.fields), plus
    --preset and --space."""
    from ferkit.cli.fields import options_from, with_signature
    from ferkit.options import option_fields
    from ferkit.sweeps.options import PANELS, SweepOptions

    def sweep_command(ctx: typer.Context, **kwargs: Any) -> None:
        _sweep_command(ctx, **kwargs)

    ctx = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                            annotation=typer.Context)
    params = options_from(option_fields(SweepOptions, PANELS),
                          typing.get_type_hints(SweepOptions), _own_options(), PANELS)
    return with_signature(sweep_command, [ctx, *params])


def report_command(
    study: str = typer.Argument(None, metavar="STUDY",
                                help="Study name (default: the latest in the storage)."),
    storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help="Optuna storage URL."),
    out: str = typer.Option(None, "--out", "-o", help="Folder for the plots and sweep.json "
                            "(default RUNS/STUDY/report)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the table as Markdown."),
) -> None:
    from ferkit.sweeps import report as sr

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
