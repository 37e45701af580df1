"""ferkit CLI: `ferkit data inspect|audit|export-csv`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ferkit.cli import TYPER_SETTINGS
from ferkit.errors import DataError, printable

SOURCE_HELP = ("fer2013.csv, a Kaggle image folder or zip (train/<class>/*.jpg, "
               "test/<class>/*.jpg), or a folder/zip of <class>/ folders.")
SKIP_BAD_HELP = ("Leave out bad entries (corrupt or oversized images, malformed CSV rows, "
                 "unknown class folders, non-image files, duplicate or out-of-archive zip "
                 "entries) and list them, instead of stopping at the first. OS junk (__MACOSX/, "
                 ".DS_Store, Thumbs.db, desktop.ini, ._*) is always ignored.")

data_app = typer.Typer(
    name="data",
    help="Explore FER datasets: counts, samples, audit, CSV export.\n\n"
         "Counts per split and class, sample grids, an audit of duplicate and blank images, and "
         "conversion to the Kaggle CSV. Each reads the Kaggle CSV, the Kaggle image folders "
         "(train/CLASS/*.jpg) or your own CLASS/ folders, as a folder or a zip.\n\n"
         "Examples:\n\n"
         "  ferkit data inspect fer2013.zip\n\n"
         "  ferkit data audit fer2013.zip --json\n\n"
         "  ferkit data export-csv fer2013.zip fer2013.csv",
    no_args_is_help=True,
    **TYPER_SETTINGS,
)


def load_with_progress(path: str, skip_bad: bool = False, console=None):
    """load_dataset with a Rich progress bar on stderr while decoding (cold cache only)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ferkit.data import load_dataset

    console = console or Console(stderr=True)
    state: dict = {}

    def progress(done: int, total: int) -> None:
        if "bar" not in state:
            bar = Progress(TextColumn("[bold]reading[/] {task.description}"), BarColumn(),
                           MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                           console=console, transient=True)
            bar.start()
            state["bar"] = bar
            state["task"] = bar.add_task(Path(path).name or path, total=total)
        state["bar"].update(state["task"], completed=done, total=total)

    try:
        return load_dataset(path, skip_bad=skip_bad, progress=progress)
    finally:
        if "bar" in state:
            state["bar"].stop()


def _entries(n: int, kind: str = "") -> str:
    return f"{n} {kind}{' ' if kind else ''}entr{'y' if n == 1 else 'ies'}"


def _print_entries(console, head: str, rows: list[tuple[str, str]], limit: int) -> None:
    console.print(f"[yellow]{head}[/]", highlight=False)
    for entry, text in rows[:limit]:  # names and decoder messages come from the files
        console.print(printable(f"  {entry}: {text}"), highlight=False, markup=False)
    if len(rows) > limit:
        console.print(f"  ... and {len(rows) - limit} more (--json lists all)", highlight=False)


def report_skipped(ds, console, limit: int = 20) -> None:
    """List the entries left out (--skip-bad), then those loaded despite a decoder warning."""
    if ds.skipped:
        _print_entries(console, f"skipped {_entries(len(ds.skipped), 'bad')} of {ds.source}:",
                       [(s.entry, s.reason) for s in ds.skipped], limit)
    if ds.warnings:
        _print_entries(console, f"{_entries(len(ds.warnings))} of {ds.source} loaded with "
                                f"warnings:", [(w.entry, w.message) for w in ds.warnings], limit)


def _note_json_lists(ds, err) -> None:
    """With --json, say on stderr that the report lists skipped entries and warnings."""
    if ds.skipped:
        err.print(f"[yellow]skipped {len(ds.skipped)} bad entries (listed under "
                  f"\"skipped\")[/]", highlight=False)
    if ds.warnings:
        err.print(f"[yellow]{_entries(len(ds.warnings))} loaded with warnings (listed under "
                  f"\"warnings\")[/]", highlight=False)


def _print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2))


INSPECT_HELP = f"""Count the faces of a dataset per split and class.

PATH: {SOURCE_HELP}

Decoded faces are cached under $FERKIT_CACHE_DIR (default ~/.cache/ferkit), so the second \
look at the same unchanged source takes well under a second. --out also draws the class \
distribution and a grid of sample faces per class.

Images of any size or mode become 48x48 grayscale (centre square crop, then resize). Kaggle \
file names Training_*, PublicTest_*, PrivateTest_* give the train/val/test split; otherwise \
the train/, val/ (or validation/) and test/ folders do; a folder or zip of <class>/ folders is \
all train. Class folders match case-insensitively, with synonyms (anger, happiness, ...).

Examples:

  ferkit data inspect fer2013.zip

  ferkit data inspect fer2013.csv --json

  ferkit data inspect my_faces/ --out report/ --skip-bad
"""


@data_app.command("inspect", help=INSPECT_HELP, no_args_is_help=True)
def inspect_command(
    path: str = typer.Argument(..., metavar="PATH", help=SOURCE_HELP),
    out: Path | None = typer.Option(None, "--out", "-o", metavar="DIR",
                                    help="Also write class_distribution.png and "
                                         "samples_<split>.png (7 classes x 10 faces) here."),
    json_out: bool = typer.Option(False, "--json",
                                  help="Print {source, splits: {split: {count, per_class}}, "
                                       "skipped, warnings} as JSON on stdout."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help=SKIP_BAD_HELP),
) -> None:
    from rich.console import Console
    from rich.table import Table

    from ferkit.classes import CLASSES
    from ferkit.data.report import summarize, write_figures

    err = Console(stderr=True)
    ds = load_with_progress(path, skip_bad, err)
    summary = summarize(ds)
    written = write_figures(ds, out) if out is not None else []
    if json_out:
        _print_json(summary)
        _note_json_lists(ds, err)
        for p in written:
            err.print(f"wrote {p}", highlight=False, markup=False)
        return

    console = Console()
    splits = summary["splits"]
    table = Table(title=f"{ds.source}: {len(ds):,} faces", title_justify="left")
    table.add_column("class")
    for s in splits:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right")
    for c in CLASSES:
        cells = []
        for info in splits.values():
            v = info["per_class"][c]
            share = 100 * v / info["count"] if info["count"] else 0
            cells.append(f"{v:,} ({share:4.1f}%)")
        total = sum(info["per_class"][c] for info in splits.values())
        table.add_row(c, *cells, f"{total:,}")
    table.add_section()
    table.add_row("all", *[f"{info['count']:,}" for info in splits.values()], f"{len(ds):,}",
                  style="bold")
    console.print(table)
    report_skipped(ds, err)
    for p in written:
        console.print(f"wrote {p}", highlight=False, markup=False)


AUDIT_HELP = f"""Find duplicate, leaked, conflicting and blank faces.

Reports pixel-identical faces within a split and across splits (train/val/test leakage), \
duplicate groups whose labels disagree, and blank faces (max - min pixel <= 5), with counts \
and example entries.

PATH: {SOURCE_HELP}

Examples:

  ferkit data audit fer2013.zip

  ferkit data audit fer2013.csv --json > audit.json

  ferkit data audit my_faces.zip --skip-bad
"""


def _examples_table(title: str, groups: list[dict]):
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("faces", justify="right")
    table.add_column("splits")
    table.add_column("labels")
    table.add_column("entries (first 3)", overflow="fold")
    for g in groups:
        names = [m["name"] for m in g["members"][:3]]
        more = g["size"] - len(names)
        entries = "\n".join(names) + (f"\n+{more} more" if more > 0 else "")
        size = f"{g['size']}" + (" blank" if g["blank"] else "")
        table.add_row(size, ",".join(g["splits"]), ",".join(g["labels"]), entries)
    return table


@data_app.command("audit", help=AUDIT_HELP, no_args_is_help=True)
def audit_command(
    path: str = typer.Argument(..., metavar="PATH", help=SOURCE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help=SKIP_BAD_HELP),
) -> None:
    from rich.console import Console
    from rich.table import Table

    from ferkit.data.audit import audit

    err = Console(stderr=True)
    ds = load_with_progress(path, skip_bad, err)
    report = audit(ds).to_dict()
    if json_out:
        _print_json(report)
        _note_json_lists(ds, err)
        return

    console = Console()
    dup = report["duplicates"]
    table = Table(title=f"{ds.source}: audit of {len(ds):,} faces", title_justify="left")
    table.add_column("finding")
    table.add_column("groups", justify="right")
    table.add_column("faces", justify="right")
    table.add_row("pixel-identical groups (all)", f"{dup['groups']:,}", f"{dup['images']:,}")
    for s, info in dup["within_split"].items():
        table.add_row(f"  within {s}", f"{info['groups']:,}", f"{info['images']:,}")
    across = dup["across_splits"]
    table.add_row("  across splits", f"{across['groups']:,}", f"{across['images']:,}")
    for pair, count in across["pairs"].items():
        table.add_row(f"    {pair}", f"{count:,}", "")
    order = list(dup["within_split"])
    for s, count in across["leaked"].items():
        earlier = " or ".join(order[:order.index(s)])
        table.add_row(f"  {s} faces also in {earlier}", "", f"{count:,}")
    conf = dup["conflicting_labels"]
    table.add_row("groups with conflicting labels", f"{conf['groups']:,}", f"{conf['images']:,}")
    blank = report["blank"]
    per_split = ", ".join(f"{s} {n}" for s, n in blank["per_split"].items())
    table.add_row(f"blank faces (max-min <= {blank['max_range']})", "",
                  f"{blank['count']:,}" + (f" ({per_split})" if blank["count"] else ""))
    console.print(table)
    nb = dup["blank_groups"]
    blank_note = f" ({nb} group{'s' if nb != 1 else ''} of blank faces among them)" if nb else ""
    console.print(f"Keeping one face per group would drop {dup['redundant']:,} redundant "
                  f"copies{blank_note}.", highlight=False)
    for key, title in (("across_splits", "Example groups across splits"),
                       ("conflicting_labels", "Example groups with conflicting labels"),
                       ("within_split", "Example groups within a split")):
        if dup["examples"][key]:
            console.print(_examples_table(title, dup["examples"][key]))
    if blank["examples"]:
        console.print("Blank faces (first 10): " + ", ".join(
            f"{b['name']} ({b['label']}, pixels {b['min']}-{b['max']})"
            for b in blank["examples"]), highlight=False, markup=False)
    report_skipped(ds, err)


EXPORT_HELP = f"""Write any source as a Kaggle-format fer2013.csv.

Columns emotion,pixels,Usage; train/val/test become Training/PublicTest/PrivateTest. \
Loading the CSV back gives the same faces, labels and splits. An existing OUT.csv is only \
replaced with --force.

PATH: {SOURCE_HELP}

Examples:

  ferkit data export-csv fer2013.zip fer2013.csv

  ferkit data export-csv my_faces/ my_faces.csv --skip-bad

  ferkit data export-csv fer2013.zip fer2013.csv --force
"""


@data_app.command("export-csv", help=EXPORT_HELP, no_args_is_help=True)
def export_csv_command(
    path: str = typer.Argument(..., metavar="PATH", help=SOURCE_HELP),
    out: Path = typer.Argument(..., metavar="OUT.csv",
                               help="CSV file to write; must not exist yet unless --force."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help=SKIP_BAD_HELP),
    force: bool = typer.Option(False, "--force", "-f",
                               help="Replace OUT.csv if it exists (never the source itself)."),
) -> None:
    from rich.console import Console

    from ferkit.data.csvio import write_csv

    src = Path(path).expanduser()
    if src.exists() and out.exists() and src.resolve() == out.resolve():
        raise DataError(f"{out}: refusing to overwrite the source itself; choose another name")
    if out.is_dir():
        raise DataError(f"{out}: is a folder; give the CSV file name to write")
    if (out.exists() or out.is_symlink()) and not force:
        raise DataError(f"{out}: already exists; pass --force to replace it")
    err = Console(stderr=True)
    ds = load_with_progress(path, skip_bad, err)
    n = write_csv(ds, out)
    report_skipped(ds, err)
    counts = ", ".join(f"{s} {int((ds.splits == s).sum()):,}" for s in ds.split_names)
    Console().print(f"wrote {n:,} rows ({counts}) to {out}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(data_app, name="data")
