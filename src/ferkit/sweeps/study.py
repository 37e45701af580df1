"""Sweep studies: create or join one, and claim its next trial exactly once.

A new study stores its search space and the options every worker must share (a study user
attribute), so a joining worker needs only --storage, --study and --data. `claim_trial` runs
under `storage.study_lock`: the budget check, the trial's creation and its parameters are one
step for every worker. A grid study gives every cell exactly one trial: GridSampler (same seed in
every worker) maps trial number k to cell k, and a cell whose trial failed is queued again by
the next worker, at most MAX_CELL_FAILURES times.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from ferkit.sweeps.options import SweepOptions
from ferkit.sweeps.space import SearchSpace, parse_space
from ferkit.sweeps.storage import (
    HEARTBEAT_S,
    MAX_CELL_FAILURES,
    SweepError,
    load_optuna,
    normalize_storage,
    set_heartbeat,
)

STUDY_ATTR = "ferkit"  # study user attr: the space and options every worker must share


@dataclass
class SweepSummary:
    study: str
    storage: str
    n_trials: int
    n_complete: int
    n_pruned: int
    n_failed: int
    best_value: float | None
    best_params: dict[str, Any]
    best_run_dir: str | None


def check_not_swept(space: SearchSpace, overrides: dict[str, Any]) -> None:
    """SweepError where an option given to the sweep is one the space varies in [params]: the
    trial would train with one value while Optuna records the other."""
    from ferkit.training.config import flag_name

    swept = {p.key for p in space.params if not p.is_model_kwarg}
    both = [k for k in overrides if k in swept]
    if both:
        raise SweepError("; ".join(f"{flag_name(k)} is also a [params] entry of {space.source} "
                                   f"(params.{k})" for k in both) + ": drop one")


def _effective_train(space: SearchSpace, options: dict[str, Any], name: str) -> dict[str, Any]:
    """Every training setting a trial of the study gets outside its [params]: ferkit train's
    defaults, then the space's [train] table, then `options` (the sweep's, not None)."""
    from ferkit.training.config import TrainConfig

    given = {k: v for k, v in options.items() if v is not None}
    config = TrainConfig().override({**space.train, **given}, f"study {name}")
    swept = {p.key for p in space.params if not p.is_model_kwarg}
    return {k: v for k, v in config.to_dict().items() if k not in swept and k != "device"}


def _join_differences(space: SearchSpace, theirs: dict[str, Any], mine: dict[str, Any],
                      name: str) -> dict[str, tuple[Any, Any]]:
    """Setting -> (this worker's, the study's) where this worker would train its trials
    otherwise than the study does. Both sides are resolved in full (defaults, [train], options),
    so an option the creator left to the space or to the default counts too; a joiner's
    device is its own."""
    study = _effective_train(space, theirs, name)
    worker = _effective_train(space, {**theirs, **mine}, name)
    return {k: (worker.get(k), study.get(k)) for k in {**study, **worker}
            if worker.get(k) != study.get(k)}


def _study_attr(space: SearchSpace, options: SweepOptions) -> dict[str, Any]:
    """What every worker of the study must agree on."""
    budget = options.trials or space.budget
    return {"space": space.to_dict(), "train": options.train_overrides() | {"device": None},
            "budget": budget, "data": options.data, "runs": options.runs,
            "heartbeat": options.heartbeat or HEARTBEAT_S}


def _sampler(space: SearchSpace, seed: int):
    optuna = load_optuna()
    if space.is_grid:

        class GridSampler(optuna.samplers.GridSampler):
            """Optuna's grid, minus the Study.stop() call: claim_trial sees when it is done."""

            def after_trial(self, study, trial, state, values) -> None:
                pass

        # Same seed in every worker: trial k is cell k of the same shuffled grid.
        return GridSampler(space.grid(), seed=space.seed)
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(space: SearchSpace):
    optuna = load_optuna()
    if space.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def create_or_join_study(space: SearchSpace | None, options: SweepOptions, storage: Any
                         ) -> tuple[Any, SearchSpace, dict[str, Any], bool]:
    """(study, space, shared settings, created) for --study in --storage.

    A new study stores the space and the shared options; a worker joining an existing study
    must use the same space (or give none: it is read from the study).
    """
    optuna = load_optuna()
    name = options.study or (space.name if space is not None else None)
    if name is None:
        raise SweepError("give --preset NAME or --space FILE.toml (or --study NAME to join an "
                         "existing study)")
    existing = {s.study_name for s in optuna.study.get_all_study_summaries(storage,
                                                                          include_best_trial=False)}
    created = False
    if name not in existing:
        if space is None:
            raise SweepError(f"study {name!r} is not in {options.storage}; give --preset or "
                             "--space to create it")
        check_not_swept(space, options.train_overrides())
        attr = _study_attr(space, options)
        try:
            study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                        sampler=_sampler(space, space.seed),
                                        pruner=_pruner(space))
            study.set_user_attr(STUDY_ATTR, attr)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            pass  # another worker created it a moment ago: join it below
    if not created:
        study = optuna.load_study(study_name=name, storage=storage)
        attr = _wait_for_attr(study, name, options.storage)
        stored = parse_space(attr["space"], source=f"study {name}")
        if space is not None and space.to_dict() != stored.to_dict():
            mine, theirs = space.to_dict(), stored.to_dict()
            keys = [k for k in {**theirs, **mine} if k != "name" and mine.get(k) != theirs.get(k)]
            raise SweepError(f"study {name!r} in {options.storage} was created with another "
                             f"search space (it differs in: {', '.join(keys) or 'name'}); pass "
                             "--study NEW_NAME for a new study")
        check_not_swept(stored, options.train_overrides())
        clash = _join_differences(stored, attr.get("train") or {}, options.train_overrides(),
                                  name)
        if clash:
            detail = ", ".join(f"{k}={a} (study: {b})" for k, (a, b) in sorted(clash.items()))
            raise SweepError(f"study {name!r} runs with other options: {detail}; drop them to "
                             "use the study's, or pass --study NEW_NAME")
        space = stored
        seed = space.seed + 1 + os.getpid() % 100_000  # joining worker: its own TPE stream
        study = optuna.load_study(study_name=name, storage=storage,
                                  sampler=_sampler(space, seed), pruner=_pruner(space))
    beat = int(attr.get("heartbeat") or HEARTBEAT_S)  # studies made before --heartbeat: 30 s
    if options.heartbeat and options.heartbeat != beat:
        raise SweepError(f"study {name!r} runs with --heartbeat {beat} (every worker must use "
                         "the same, or a live worker's trial could be taken for a dead one's); "
                         "drop --heartbeat, or pass --study NEW_NAME")
    set_heartbeat(storage, beat)
    return study, space, attr, created


def _wait_for_attr(study: Any, name: str, url: str, timeout: float = 30.0) -> dict[str, Any]:
    """The creator sets the study attribute right after creating it; wait that moment out."""
    deadline = time.monotonic() + timeout
    while True:
        attr = study.user_attrs.get(STUDY_ATTR)
        if attr:
            return attr
        if time.monotonic() > deadline:
            raise SweepError(f"study {name!r} in {url} was not made by ferkit sweep (no "
                             f"{STUDY_ATTR!r} attribute); pass --study NEW_NAME")
        time.sleep(0.2)
        study = load_optuna().load_study(study_name=name, storage=study._storage)


def _active_states():
    ts = load_optuna().trial.TrialState
    return (ts.COMPLETE, ts.PRUNED, ts.RUNNING, ts.WAITING)


def cell_key(params: dict[str, Any], names: list[str]) -> str:
    return json.dumps([params.get(n) for n in names])


def _trial_cell(t: Any, names: list[str]) -> str:
    return cell_key(t.params or t.system_attrs.get("fixed_params", {}), names)


def _missing_cells(study: Any, space: SearchSpace, trials: list[Any], active: list[Any],
                   skip_cells: set[str]) -> list[dict[str, Any]]:
    """Grid cells that no running, finished or queued trial covers (and that have not failed
    MAX_CELL_FAILURES times)."""
    names = [p.name for p in space.params]
    covered = {_trial_cell(t, names) for t in active}
    fail = load_optuna().trial.TrialState.FAIL
    failures: dict[str, int] = {}
    for t in trials:
        if t.state == fail:
            key = _trial_cell(t, names)
            failures[key] = failures.get(key, 0) + 1
    given_up = {k for k, n in failures.items() if n >= MAX_CELL_FAILURES}
    return [c for c in space.grid_cells()
            if cell_key(c, names) not in covered | skip_cells | given_up]


def _waiting(trials: list[Any]) -> list[Any]:
    """Queued trials (a dead worker's, re-queued by the retry callback) that nobody runs yet."""
    return [t for t in trials if t.state == load_optuna().trial.TrialState.WAITING]


def running_trials(study: Any) -> list[Any]:
    """Trials that some worker runs now (or ran, until its heartbeat goes stale)."""
    running = load_optuna().trial.TrialState.RUNNING
    return [t for t in study.get_trials(deepcopy=False) if t.state == running]


def has_work(study: Any, space: SearchSpace, budget: int | None) -> bool:
    """Whether claim_trial would give a trial now (without creating one)."""
    trials = study.get_trials(deepcopy=False)
    active = [t for t in trials if t.state in _active_states()]
    if _waiting(trials):
        return True
    if budget is not None and len(active) >= budget:
        return False
    return not space.is_grid or bool(_missing_cells(study, space, trials, active, set()))


def claim_trial(study: Any, space: SearchSpace, budget: int | None,
                skip_cells: set[str]) -> tuple[Any, dict[str, Any]] | None:
    """Create the next trial and draw its parameters, or None when the study is done.

    Call under study_lock: the budget check, the trial's creation and its parameters are one
    step for every worker of the study.
    """
    optuna = load_optuna()
    with contextlib.suppress(Exception):
        # dead workers' trials become FAIL, and the retry callback queues their parameters
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    active = [t for t in trials if t.state in _active_states()]
    if not _waiting(trials):  # a queued retry is inside the budget already: ask() takes it
        if budget is not None and len(active) >= budget:
            return None
        if space.is_grid:
            missing = _missing_cells(study, space, trials, active, skip_cells)
            if not missing:
                return None
            if len(trials) >= len(space.grid_cells()):
                # GridSampler gives trial k cell k; past the grid, requeue a failed cell
                study.enqueue_trial(missing[0], skip_if_exists=False)
    trial = study.ask()
    values = space.suggest(trial)
    return trial, values



def summarize(study: Any, storage_url: str = "") -> SweepSummary:
    optuna = load_optuna()
    ts = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == ts.COMPLETE]
    best = max(complete, key=lambda t: t.value) if complete else None
    return SweepSummary(
        study=study.study_name, storage=normalize_storage(storage_url) if storage_url else "",
        n_trials=len(trials), n_complete=len(complete),
        n_pruned=sum(t.state == ts.PRUNED for t in trials),
        n_failed=sum(t.state == ts.FAIL for t in trials),
        best_value=best.value if best else None, best_params=dict(best.params) if best else {},
        best_run_dir=best.user_attrs.get("run_dir") if best else None)
