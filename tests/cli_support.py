"""Run the `ferkit` command in-process, as a user's shell would (through main(), exit codes too)."""

from __future__ import annotations

import sys

from ferkit.cli.app import main


def run_ferkit(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`ferkit ARGS...` -> (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["ferkit", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err
