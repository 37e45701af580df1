"""Sweep workers: claim a trial, train it in-process, report it; locally in N processes.

Each trial is one `ferkit.training.trainer.train` run with the trial's parameters (TrainConfig
options and model kwargs, which reach the checkpoint as arch_kwargs), written to
`<runs>/<study>/trial-NNNN`. The objective is the run's best validation accuracy; per trial the
user attributes record epochs, wall/train time, train/val loss and accuracy (of the best epoch)
and the run directory. Any number of workers, here or on other machines, join the same study.

A worker that dies (SIGKILL, a lost machine) stops its trial's heartbeat; once the study's grace
period has passed, the next worker to claim a trial marks it failed and Optuna's retry callback
queues the same parameters again (see ferkit.sweeps.storage). A worker with nothing left to
claim waits while other workers' trials run, so such a retry is never left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ferkit.errors import FerkitError
from ferkit.sweeps.space import SearchSpace
from ferkit.sweeps.storage import (
    GRACE_BEATS,
    Heartbeat,
    SweepError,
    heartbeat_of,
    load_optuna,
    normalize_storage,
    open_storage,
    study_lock,
)
from ferkit.sweeps.study import (
    SweepOptions,
    SweepSummary,
    cell_key,
    claim_trial,
    create_or_join_study,
    has_work,
    running_trials,
    summarize,
)

MAX_CONSECUTIVE_FAILURES = 3
_POLL_S = 2.0  # how often an idle worker looks again while other workers' trials run
# Trial user attributes (what `ferkit sweep report` shows).
ATTR_KEYS = ("run_dir", "epochs", "best_epoch", "wall_seconds", "train_seconds", "train_loss",
             "train_acc", "val_loss", "val_acc", "final_val_acc", "images_per_s", "error")
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # trial user attr "worker": who ran it


def _run_dir(root: Path, study: str, number: int) -> Path:
    base = root / study / f"trial-{number:04d}"
    path, n = base, 1
    while path.exists() and any(path.iterdir()):
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def run_trial(study: Any, trial: Any, values: dict[str, Any], space: SearchSpace,
              attr: dict[str, Any], options: SweepOptions, dataset: Any = None,
              say: Callable[[str], None] = print) -> None:
    """Train one trial and tell the study how it went."""
    optuna = load_optuna()
    from ferkit.training.config import TrainConfig
    from ferkit.training.trainer import train

    run_dir = _run_dir(Path(attr.get("runs") or options.runs), study.study_name, trial.number)
    settings = trial_settings(space, values, attr, options)
    settings.update(out=str(run_dir))
    config = TrainConfig().override(settings, f"study {study.study_name}, trial {trial.number}")
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("model", config.model)
    trial.set_user_attr("worker", WORKER)
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
    retry_of = study._storage.get_trial_system_attrs(trial._trial_id).get("failed_trial")
    if retry_of is not None:
        shown += f" (retry of trial {retry_of}, whose worker stopped beating)"
    say(f"trial {trial.number}: {shown}")
    history: list[Any] = []

    pruned: list[str] = []

    def on_epoch(m: Any) -> bool:  # True asks the loop to stop: the pruner gave up on the trial
        history.append(m)
        trial.report(m.val_acc, m.epoch)
        if trial.should_prune():
            pruned.append(f"pruned after epoch {m.epoch}: val acc {m.val_acc:.4f}")
        return bool(pruned)

    def on_start(info: Any) -> None:
        trial.set_user_attr("n_parameters", int(info.parameters))

    t0 = time.perf_counter()
    with Heartbeat(study._storage, trial._trial_id, heartbeat_of(study._storage)):
        try:
            result = train(config, dataset=dataset, on_epoch=on_epoch, on_start=on_start)
        except BaseException as exc:
            _record(trial, history, time.perf_counter() - t0, None)
            with contextlib.suppress(Exception):
                trial.set_user_attr("error", f"{exc.__class__.__name__}: {exc}"[:500])
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
    if pruned:
        _record(trial, history, time.perf_counter() - t0, None)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        say(f"trial {trial.number}: {pruned[0]}")
        return
    _record(trial, history, result.wall_seconds, result)
    study.tell(trial, result.best_val_accuracy)
    say(f"trial {trial.number}: best val acc {result.best_val_accuracy:.4f} (epoch "
        f"{result.best_epoch}/{len(result.history)}), {result.wall_seconds:.1f} s -> {run_dir}")


def trial_settings(space: SearchSpace, values: dict[str, Any], attr: dict[str, Any],
                   options: SweepOptions) -> dict[str, Any]:
    """The TrainConfig overrides of one trial: the space's [train] table, the study's options,
    this worker's (its device among them), and last the trial's sampled values, so what
    Optuna records is what trains (create_or_join_study refuses an option that is also a
    [params] entry before any trial runs)."""
    train_kw, model_kwargs = space.apply(values)
    sampled = {k: train_kw[k] for k in values if k in train_kw}
    shared = {k: v for k, v in (attr.get("train") or {}).items() if v is not None}
    return {**train_kw, **shared, **options.train_overrides(), **sampled,
            "data": options.data or attr.get("data", ""), "model_kwargs": model_kwargs,
            "threads": options.threads}


def _record(trial: Any, history: list[Any], wall: float, result: Any) -> None:
    """The trial's user attrs: epochs, times, train/val loss and accuracy of its best epoch."""
    attrs: dict[str, Any] = {"epochs": len(history), "wall_seconds": round(wall, 3)}
    if history:
        best = max(history, key=lambda m: (m.val_acc, -m.epoch))
        attrs.update(best_epoch=best.epoch, train_loss=best.train_loss, train_acc=best.train_acc,
                     val_loss=best.val_loss, val_acc=best.val_acc,
                     final_val_acc=history[-1].val_acc,
                     train_seconds=round(sum(m.epoch_seconds for m in history), 3),
                     images_per_s=round(sum(m.images_per_s for m in history) / len(history), 1))
    if result is not None:
        attrs["train_seconds"] = round(result.train_seconds, 3)
    for key, value in attrs.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        trial.set_user_attr(key, value)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def worker_loop(space: SearchSpace | None, options: SweepOptions, dataset: Any = None,
                say: Callable[[str], None] = print) -> int:
    """Join (or create) the study, then claim and run trials until it is done."""
    storage = open_storage(options.storage)
    study, space, attr, _ = create_or_join_study(space, options, storage)
    return _work(study, space, attr, options, dataset, say)


def _work(study: Any, space: SearchSpace, attr: dict[str, Any], options: SweepOptions,
          dataset: Any, say: Callable[[str], None]) -> int:
    """Claim and run trials until the study's budget or grid is used up; returns trials run."""
    budget = options.trials or attr.get("budget") or space.budget
    if budget is None:
        raise SweepError(f"{space.source}: no trial budget: set trials = N in the file or pass "
                         "--trials N")
    url = normalize_storage(options.storage)
    with study_lock(study._storage, url, study.study_name):
        if not has_work(study, space, budget) and not running_trials(study):
            say(f"study {study.study_name!r} is done: nothing left to run")
            return 0
    if dataset is None:
        data = options.data or attr.get("data", "")
        if not data:
            raise SweepError("no training data: pass --data PATH")
        from ferkit.data import load_dataset

        dataset = load_dataset(data)
    names = [p.name for p in space.params]
    failed_here: set[str] = set()
    ran = failures = 0
    waiting_said = False
    while True:
        with study_lock(study._storage, url, study.study_name):
            claimed = claim_trial(study, space, budget, failed_here)
        if claimed is None:
            # Others' trials still run: wait, since one whose worker dies is retried here.
            others = running_trials(study)
            if not others:
                return ran
            if not waiting_said:
                beat = heartbeat_of(study._storage)
                say(f"nothing to claim; waiting for {len(others)} trial(s) running elsewhere (a "
                    f"trial whose worker is silent for {GRACE_BEATS * beat} s is retried here)")
                waiting_said = True
            time.sleep(min(heartbeat_of(study._storage), _POLL_S))
            continue
        waiting_said = False
        trial, values = claimed
        try:
            run_trial(study, trial, values, space, attr, options, dataset, say)
            failures = 0
        except FerkitError:
            raise  # a bad option fails every trial alike: stop and say why
        except Exception as exc:  # e.g. out of memory: record, go on with the next trial
            failures += 1
            failed_here.add(cell_key(values, names))
            say(f"trial {trial.number}: failed ({exc.__class__.__name__}: {exc})")
            if failures >= MAX_CONSECUTIVE_FAILURES:
                raise SweepError(f"{failures} trials in a row failed; last: "
                                 f"{exc.__class__.__name__}: {exc}") from exc
        ran += 1


def _spawned_worker(space: SearchSpace | None, options: SweepOptions, index: int) -> None:
    prefix = f"[worker {index}] "
    try:
        worker_loop(space, options, say=lambda s: print(prefix + s, flush=True))
    except FerkitError as exc:
        print(f"{prefix}error: {exc}", flush=True)
        raise SystemExit(1) from None


def run_sweep(space: SearchSpace | None, options: SweepOptions, dataset: Any = None,
              say: Callable[[str], None] = print) -> SweepSummary:
    """Run a sweep with options.workers local worker processes (1: in this process)."""
    storage = open_storage(options.storage)
    study, space, attr, created = create_or_join_study(space, options, storage)
    options = dataclasses.replace(options, study=study.study_name)
    budget = options.trials or attr.get("budget")
    verb = "created" if created else "joined"
    say(f"study {study.study_name!r} {verb} in {normalize_storage(options.storage)}: "
        f"{space.sampler} sampler, {len(space.params)} parameter(s), budget {budget} trials")
    if options.workers <= 1:
        _work(study, space, attr, options, dataset, say)
    else:
        threads = options.threads or max(1, (os.cpu_count() or 1) // options.workers)
        options = dataclasses.replace(options, threads=threads)
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_spawned_worker, args=(space, options, i), daemon=False)
                 for i in range(options.workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        bad = [i for i, p in enumerate(procs) if p.exitcode != 0]
        if bad:
            raise SweepError(f"worker(s) {', '.join(map(str, bad))} failed; see their output above")
    return summarize(study, options.storage)

