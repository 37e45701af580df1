"""The run directory: writing and reading its files (their names: ferkit.run_files).

Names are re-exported here (run_dir.BEST, ...) for the training code that writes them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ferkit.errors import DataError, ModelError
from ferkit.run_files import BEST, CONFIG, CURVES, LAST, METRICS
from ferkit.training.config import EXECUTION_KEY

__all__ = ["BEST", "CONFIG", "CURVES", "DATA_RESOLVED", "LAST", "METRICS", "append_metrics",
           "check_fresh", "default_run_dir", "read_metrics", "rewrite_metrics", "saved_data",
           "write_json"]

DATA_RESOLVED = "data_resolved"  # config.json's execution record: --data as an absolute path


def default_run_dir(model: str, root: str | Path = "runs") -> Path:
    """runs/<YYYYmmdd-HHMMSS>-<model>, with -2, -3 ... if that name is taken."""
    base = Path(root) / f"{time.strftime('%Y%m%d-%H%M%S')}-{model}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def check_fresh(run_dir: Path) -> None:
    """A new run must not overwrite another run's results."""
    taken = [n for n in (LAST, BEST, METRICS) if (run_dir / n).exists()]
    if taken:
        raise ModelError(f"{run_dir} already holds a run ({', '.join(taken)}); pass --resume to "
                         "continue it, or choose another --out")


def saved_data(run_dir: Path, given: str, required: bool = True) -> str:
    """The dataset of a run resumed without --data: its --data as given when it started
    (relative to the folder it started in), else the absolute path config.json's execution
    record keeps beside it, so a run resumes from any folder. Neither there (another machine, a
    moved file): a DataError naming the dataset and --data, or `given` if not `required`."""
    if not given or Path(given).exists():
        return given
    try:
        execution = json.loads((Path(run_dir) / CONFIG).read_text()).get(EXECUTION_KEY)
        resolved = execution.get(DATA_RESOLVED) if isinstance(execution, dict) else None
    except (OSError, ValueError, AttributeError):  # no config.json (a carried last.pt)
        resolved = None
    if resolved and Path(resolved).exists():
        return resolved
    if not required:
        return given
    nor = f", nor at {resolved}" if resolved and resolved != given else ""
    raise DataError(f"{run_dir}: the run's dataset {given} is missing (from {Path.cwd()}{nor}); "
                    "pass --data PATH to resume on the same data")


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    with open(run_dir / METRICS, "a") as f:
        f.write(json.dumps(row) + "\n")


def rewrite_metrics(run_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
    """metrics.jsonl as exactly these rows (on resume: drops lines of epochs after last.pt)."""
    tmp = run_dir / f".{METRICS}.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, run_dir / METRICS)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """metrics.jsonl's rows, one per finished epoch ([] without the file). A line that is not
    JSON is a ModelError naming the file and the line; lines that are not objects are left out."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path}: line {i} is not JSON ({exc})") from exc
        if isinstance(row, dict):
            rows.append(row)
    return rows
