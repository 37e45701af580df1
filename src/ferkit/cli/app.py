"""The `ferkit` command: one Typer app; each cli/ module adds its commands in register(app)."""

from __future__ import annotations

import logging
import sys

import typer

from ferkit.cli import TYPER_SETTINGS
from ferkit.errors import ConfigError, FerkitError, printable
from ferkit.training.torchrun import end_worker, exit_code, launched
from ferkit.version import __version__

app = typer.Typer(
    name="ferkit",
    help="Facial expression recognition on FER2013: explore data, train, evaluate, recognise.\n\n"
    "Every command has its own --help with examples: ferkit COMMAND --help.\n\n"
    "Examples:\n\n"
    "  ferkit demo\n\n"
    "  ferkit data inspect fer2013.zip\n\n"
    "  ferkit train --data fer2013.zip --model ferkit-small --epochs 60\n\n"
    "  ferkit predict photo.jpg --json",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    **TYPER_SETTINGS,
)

_state = {"debug": False}
# what an error line may hold unescaped besides printable text (errors.printable escapes the rest)
_KEEP = "\n\t"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ferkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and debug logs."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")


def _register_commands() -> None:
    from ferkit.cli import (
        calibrate,
        data,
        evaluate,
        explain,
        export,
        models,
        predict,
        report,
        serve,
        sweep,
        train,
    )

    for module in (data, models, train, evaluate, calibrate, export, predict, explain, serve,
                   sweep, report):
        module.register(app)


_register_commands()


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 1 (--debug: traceback);
    an option with a bad value (ConfigError) exits 2, as Typer's own usage errors do. The line
    goes through errors.printable: a file name or file bytes it quotes cannot drive the
    terminal.

    Typer's standalone mode handles --help, usage errors (exit 2) and Ctrl-C itself. A torchrun
    worker ends through end_worker, which skips the interpreter's teardown (see there).
    """
    if not launched():
        _run_app()
        return
    try:
        _run_app()
    except SystemExit as exc:
        end_worker(exit_code(exc))
    end_worker(0)


def _run_app() -> None:
    try:
        app()
    except FerkitError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {printable(exc, keep=_KEEP)}", err=True)
        sys.exit(2 if isinstance(exc, ConfigError) else 1)
    except Exception as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {exc.__class__.__name__}: {printable(exc, keep=_KEEP)} (run with "
                   "--debug for a traceback)", err=True)
        sys.exit(1)
