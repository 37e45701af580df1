"""SweepOptions: the options every trial of a sweep shares, each written once.

`ferkit sweep`'s options are generated from these fields (ferkit.cli.fields). A module of its
own, with no search-space or Optuna code, because the command line builds --help from it on
every `ferkit` start.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ferkit.options import check_fields, option
from ferkit.sweeps.storage import DEFAULT_STORAGE, GRACE_BEATS, HEARTBEAT_S
from ferkit.training.config import train_option

DEFAULT_RUNS = "runs/sweeps"  # trial run dirs go to <runs>/<study>/trial-NNNN
# The `ferkit sweep --help` panels, in order (the command's --preset and --space are "Space").
PANELS = ("Space", "Study", "Training", "Workers")
_GIVEN = " For every trial; default: the space's \\[train] value, else ferkit train's."


def _override(name: str) -> Any:
    """A `ferkit train` option the sweep sets for every trial: None (not given) leaves the
    space's [train] value; see SweepOptions."""
    return train_option(name, None, panel="Training", more_help=_GIVEN, override=True)


@dataclass(frozen=True)
class SweepOptions:
    """Options shared by every trial of a sweep, on top of the search space's [train] table.
    `ferkit sweep`'s options are generated from these fields (ferkit.cli.fields); the training
    ones take their flag, help and checks from TrainConfig's.

    The training overrides (epochs, limit, device, batch_size, seed) are None unless given:
    None leaves the space's [train] value (else ferkit train's default), a value replaces it.
    One that the space varies in [params] is an error (check_not_swept): Optuna records the
    sampled value, so nothing may train with another. The device is per worker (not stored
    with the study); so are the data path and the threads."""

    data: str = train_option("data", "", panel="Training")
    epochs: int | None = _override("epochs")
    limit: int | None = _override("limit")
    batch_size: int | None = _override("batch_size")
    seed: int | None = _override("seed")
    device: str | None = _override("device")
    storage: str = option(DEFAULT_STORAGE, panel="Study",
                          help="Optuna storage URL; a bare path is a SQLite file.")
    study: str | None = option(None, panel="Study", help="Study name (default: the space's "
                               "name).")
    trials: int | None = option(None, short="-n", panel="Study", positive=True,
                                help="The study's trial budget, all workers together (default: "
                                "the space's; grid: every cell).")
    workers: int = option(1, short="-w", panel="Workers", positive=True,
                          help="Local worker processes.")
    runs: str = option(DEFAULT_RUNS, panel="Workers",
                       help="Root of the trial run dirs: <runs>/<study>/trial-NNNN.")
    threads: int = train_option("threads", 0, panel="Workers",
                                help="Torch CPU threads per worker (0: this machine's cores "
                                "shared out among --workers).")
    heartbeat: int | None = option(None, panel="Workers", positive=True,
                                   help=f"Seconds between a running trial's heartbeats, for a "
                                   f"new study (default {HEARTBEAT_S}); a trial silent for "
                                   f"{GRACE_BEATS} heartbeats is failed and retried by another "
                                   "worker. Joining workers use the study's.")

    def __post_init__(self) -> None:
        check_fields(self)

    def train_overrides(self) -> dict[str, Any]:
        """The training options given (not None), by TrainConfig field name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata.get("override") and getattr(self, f.name) is not None}
