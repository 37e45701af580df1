"""Hyper-parameter and architecture sweeps on Optuna.

Each trial is one in-process `ferkit.training.trainer.train` run with the trial's parameters
(TrainConfig options and model kwargs, which reach the checkpoint as arch_kwargs), written to
`<runs>/<study>/trial-NNNN`. The objective is the run's best validation accuracy; per trial the
user attributes record epochs, wall/train time, train/val loss and accuracy (of the best epoch)
and the run directory.

Results live in an Optuna storage: by default a local SQLite file (runs/sweeps.db); any Optuna
RDB URL (postgresql://..., mysql://...) lets workers on many machines join the same study. That
is how sweeps scale out: start `ferkit sweep` with the same --storage and --study anywhere.
PostgreSQL goes through psycopg 3 (`pip install 'ferkit[sweep-postgres]'`): a plain
postgresql:// URL is given that driver when psycopg2 is not installed.

Workers never lose or duplicate trials. Each worker claims its next trial inside a short
critical section (a lock file beside a SQLite database; an advisory lock on PostgreSQL/MySQL):
it counts the study's trials against the budget and creates the trial and its parameters there.
A grid study gives every cell exactly one trial: GridSampler (same seed in every worker) maps
trial number k to cell k, and a cell whose trial failed is queued again by the next worker.

A worker that dies (SIGKILL, a lost machine) stops its trial's heartbeat; once the study's grace
period (4 heartbeats) has passed, the next worker to claim a trial marks it failed, and Optuna's
RetryHeartbeatStaleTrialCallback queues the same parameters again as a new trial (at most
MAX_CELL_FAILURES tries per parameter set). A worker with nothing left to claim waits while
other workers' trials run, so such a retry is never left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import math
import multiprocessing
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferkit.errors import FerkitError
from ferkit.training.search_space import SearchSpace, SearchSpaceError, parse_space

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///runs/sweeps.db"
DEFAULT_RUNS = "runs/sweeps"
STUDY_ATTR = "ferkit"  # study user attr: the space and options every worker must share
HEARTBEAT_S = 30  # default; a study keeps the value it was created with
GRACE_BEATS = 4  # a trial whose worker missed this many heartbeats is failed and retried
MAX_CONSECUTIVE_FAILURES = 3
MAX_CELL_FAILURES = 3  # failed trials of one parameter set before the sweep gives up on it
_SQLITE_TIMEOUT_S = 120
_POLL_S = 2.0  # how often an idle worker looks again while other workers' trials run

# Trial user attributes (what `ferkit sweep report` shows).
ATTR_KEYS = ("run_dir", "epochs", "best_epoch", "wall_seconds", "train_seconds", "train_loss",
             "train_acc", "val_loss", "val_acc", "final_val_acc", "images_per_s", "error")
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # trial user attr "worker": who ran it


class SweepError(FerkitError):
    """A sweep cannot start or continue (storage, study, options)."""


def _optuna():
    try:
        import optuna
    except ImportError as exc:
        raise SweepError("ferkit sweep needs Optuna: pip install 'ferkit[sweep]'") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # ferkit drives heartbeats itself (trials run outside Study.optimize): no need to warn.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    return optuna


@dataclass
class SweepOptions:
    """Options shared by every trial of a sweep (on top of the search space's [train] table)."""

    data: str = ""
    epochs: int | None = None  # None: the space's train.epochs, else the TrainConfig default
    limit: int | None = None
    device: str = "auto"
    batch_size: int | None = None
    seed: int | None = None
    storage: str = DEFAULT_STORAGE
    study: str | None = None  # None: the space's name
    trials: int | None = None  # the study's trial budget; None: the space's (grid: its size)
    workers: int = 1
    runs: str = DEFAULT_RUNS  # trial run dirs go to <runs>/<study>/trial-NNNN
    threads: int = 0  # torch CPU threads per worker (0: cores / workers)
    heartbeat: int | None = None  # seconds between a trial's heartbeats; None: the study's
    # (HEARTBEAT_S for a new study)

    def train_overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {"device": self.device}
        for key in ("epochs", "limit", "batch_size", "seed"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


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


# ---------------------------------------------------------------------------------------------
# storage and locking


def normalize_storage(url: str) -> str:
    """A bare path means a SQLite file; postgres:// (Heroku style) means postgresql://."""
    if "://" not in url:
        return f"sqlite:///{url}"
    if url.startswith("postgres://"):
        return "postgresql://" + url[len("postgres://"):]
    return url


def engine_url(url: str) -> str:
    """The SQLAlchemy URL for `url`: postgresql:// takes psycopg 3 (ferkit[sweep-postgres])
    when psycopg2, SQLAlchemy's default driver, is not installed."""
    import importlib.util

    url = normalize_storage(url)
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg2") is None \
            and importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def _driver_hint(url: str, exc: Exception) -> str:
    if url.startswith("postgresql") and isinstance(exc, ModuleNotFoundError | ImportError):
        return "; install the PostgreSQL driver: pip install 'ferkit[sweep-postgres]'"
    return ""


def sqlite_path(url: str) -> Path | None:
    """The database file of a sqlite:/// URL (None for other storages and :memory:)."""
    if not url.startswith("sqlite:"):
        return None
    path = url.split(":///", 1)[1] if ":///" in url else ""
    path = path.split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def open_storage(url: str, heartbeat: bool = True):
    """An Optuna RDBStorage for `url` (SQLite: parent folder created, long busy timeout), with
    heartbeats (HEARTBEAT_S until set_heartbeat() gives the study's) and stale-trial retries."""
    optuna = _optuna()
    url = normalize_storage(url)
    engine_kwargs: dict[str, Any] = {}
    db = sqlite_path(url)
    if url.startswith("sqlite:"):
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": _SQLITE_TIMEOUT_S}
    elif url.startswith("postgresql"):
        engine_kwargs["pool_pre_ping"] = True  # survive a server restart between trials
    hb: dict[str, Any] = {}
    if heartbeat:
        hb = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_BEATS * HEARTBEAT_S,
              **_retry_callback_kwargs(optuna)}
    # Workers starting together on a new SQLite file would race to create its tables.
    guard = _file_lock(_lock_path(db)) if db is not None else contextlib.nullcontext()
    try:
        with guard:
            return optuna.storages.RDBStorage(engine_url(url), engine_kwargs=engine_kwargs,
                                              **hb)
    except Exception as exc:  # bad URL, missing driver, unreachable server
        raise SweepError(f"--storage {url}: cannot open ({exc.__class__.__name__}: {exc})"
                         f"{_driver_hint(url, exc)}") from exc


def _retry_callback_kwargs(optuna: Any) -> dict[str, Any]:
    """Optuna's stale-trial retry callback, under its Optuna 4 or Optuna 5 name."""
    storages = optuna.storages
    callback = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or \
        storages.RetryFailedTrialCallback
    params = inspect.signature(storages.RDBStorage).parameters
    key = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params
           else "failed_trial_callback")
    return {key: callback(max_retry=MAX_CELL_FAILURES - 1)}


def set_heartbeat(storage: Any, seconds: int) -> None:
    """Beat every `seconds`; a trial silent for GRACE_BEATS beats is stale."""
    if hasattr(storage, "heartbeat_interval"):
        storage.heartbeat_interval = int(seconds)
        storage.grace_period = GRACE_BEATS * int(seconds)


def heartbeat_of(storage: Any) -> int:
    return int(getattr(storage, "heartbeat_interval", None) or HEARTBEAT_S)


def _lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


_THREAD_LOCKS: dict[str, threading.Lock] = {}


@contextlib.contextmanager
def study_lock(storage: Any, url: str, study: str) -> Iterator[None]:
    """Serialise trial claims between the workers of one study (processes and machines)."""
    url = normalize_storage(url)
    thread_lock = _THREAD_LOCKS.setdefault(f"{url}#{study}", threading.Lock())
    with thread_lock:
        db = sqlite_path(url)
        if db is not None:
            with _file_lock(_lock_path(db)):
                yield
            return
        dialect = getattr(getattr(storage, "engine", None), "name", "")
        if dialect in ("postgresql", "mysql", "mariadb"):
            with _db_lock(storage.engine, dialect, f"ferkit-sweep:{study}"):
                yield
            return
        yield  # in-memory SQLite (one process) or a storage without locks


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: one machine, rely on the thread lock
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _db_lock(engine: Any, dialect: str, name: str) -> Iterator[None]:
    from sqlalchemy import text

    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    with engine.connect() as conn:
        if dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        else:
            conn.execute(text("SELECT GET_LOCK(:n, 600)"), {"n": name[:64]})
            try:
                yield
            finally:
                conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name[:64]})


class _Heartbeat:
    """Records the trial's heartbeat while it trains, so a dead worker's trial can be retried."""

    def __init__(self, storage: Any, trial_id: int, interval: float = HEARTBEAT_S):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(Exception):  # a missed beat is not fatal
                self.storage.record_heartbeat(self.trial_id)
            self.stop.wait(self.interval)

    def __enter__(self) -> _Heartbeat:
        if hasattr(self.storage, "record_heartbeat"):
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# studies


def _study_attr(space: SearchSpace, options: SweepOptions) -> dict[str, Any]:
    """What every worker of the study must agree on."""
    budget = options.trials or space.budget
    return {"space": space.to_dict(), "train": options.train_overrides() | {"device": None},
            "budget": budget, "data": options.data, "runs": options.runs,
            "heartbeat": options.heartbeat or HEARTBEAT_S}


def _sampler(space: SearchSpace, seed: int):
    optuna = _optuna()
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
    optuna = _optuna()
    if space.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def create_or_join_study(space: SearchSpace | None, options: SweepOptions, storage: Any
                         ) -> tuple[Any, SearchSpace, dict[str, Any], bool]:
    """(study, space, shared settings, created) for --study in --storage.

    A new study stores the space and the shared options; a worker joining an existing study
    must use the same space (or give none: it is read from the study).
    """
    optuna = _optuna()
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
        mine = options.train_overrides() | {"device": None}
        theirs = attr.get("train", {})
        given = {k: v for k, v in mine.items() if v is not None and k in theirs}
        clash = {k: (v, theirs[k]) for k, v in given.items() if theirs.get(k) != v}
        if clash:
            detail = ", ".join(f"{k}={a} (study: {b})" for k, (a, b) in clash.items())
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
        study = _optuna().load_study(study_name=name, storage=study._storage)


def _active_states():
    ts = _optuna().trial.TrialState
    return (ts.COMPLETE, ts.PRUNED, ts.RUNNING, ts.WAITING)


def _cell_key(params: dict[str, Any], names: list[str]) -> str:
    return json.dumps([params.get(n) for n in names])


def _trial_cell(t: Any, names: list[str]) -> str:
    return _cell_key(t.params or t.system_attrs.get("fixed_params", {}), names)


def _missing_cells(study: Any, space: SearchSpace, trials: list[Any], active: list[Any],
                   skip_cells: set[str]) -> list[dict[str, Any]]:
    """Grid cells that no running, finished or queued trial covers (and that have not failed
    MAX_CELL_FAILURES times)."""
    names = [p.name for p in space.params]
    covered = {_trial_cell(t, names) for t in active}
    fail = _optuna().trial.TrialState.FAIL
    failures: dict[str, int] = {}
    for t in trials:
        if t.state == fail:
            key = _trial_cell(t, names)
            failures[key] = failures.get(key, 0) + 1
    given_up = {k for k, n in failures.items() if n >= MAX_CELL_FAILURES}
    return [c for c in space.grid_cells()
            if _cell_key(c, names) not in covered | skip_cells | given_up]


def _waiting(trials: list[Any]) -> list[Any]:
    """Queued trials (a dead worker's, re-queued by the retry callback) that nobody runs yet."""
    return [t for t in trials if t.state == _optuna().trial.TrialState.WAITING]


def running_trials(study: Any) -> list[Any]:
    """Trials that some worker runs now (or ran, until its heartbeat goes stale)."""
    running = _optuna().trial.TrialState.RUNNING
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
    optuna = _optuna()
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


# ---------------------------------------------------------------------------------------------
# running trials


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
    optuna = _optuna()
    from ferkit.training.config import TrainConfig
    from ferkit.training.trainer import train

    train_kw, model_kwargs = space.apply(values)
    shared = {k: v for k, v in (attr.get("train") or {}).items() if v is not None}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {**train_kw, **shared, **options.train_overrides()}
    run_dir = _run_dir(Path(attr.get("runs") or options.runs), study.study_name, trial.number)
    config = TrainConfig(**{k: v for k, v in settings.items() if k in fields},
                         data=options.data or attr.get("data", ""), model_kwargs=model_kwargs,
                         out=str(run_dir), threads=options.threads)
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("model", config.model)
    trial.set_user_attr("worker", WORKER)
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
    retry_of = study._storage.get_trial_system_attrs(trial._trial_id).get("failed_trial")
    if retry_of is not None:
        shown += f" (retry of trial {retry_of}, whose worker stopped beating)"
    say(f"trial {trial.number}: {shown}")
    history: list[Any] = []

    def on_epoch(m: Any) -> None:
        history.append(m)
        trial.report(m.val_acc, m.epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {m.epoch}: val acc {m.val_acc:.4f}")

    def on_start(info: Any) -> None:
        trial.set_user_attr("n_parameters", int(info.parameters))

    t0 = time.perf_counter()
    with _Heartbeat(study._storage, trial._trial_id, heartbeat_of(study._storage)):
        try:
            result = train(config, dataset=dataset, on_epoch=on_epoch, on_start=on_start)
        except optuna.TrialPruned as exc:
            _record(trial, history, time.perf_counter() - t0, None)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            say(f"trial {trial.number}: {exc}")
            return
        except BaseException as exc:
            _record(trial, history, time.perf_counter() - t0, None)
            with contextlib.suppress(Exception):
                trial.set_user_attr("error", f"{exc.__class__.__name__}: {exc}"[:500])
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
    _record(trial, history, result.wall_seconds, result)
    study.tell(trial, result.best_val_accuracy)
    say(f"trial {trial.number}: best val acc {result.best_val_accuracy:.4f} (epoch "
        f"{result.best_epoch}/{len(result.history)}), {result.wall_seconds:.1f} s -> {run_dir}")


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
            failed_here.add(_cell_key(values, names))
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


def summarize(study: Any, storage_url: str = "") -> SweepSummary:
    optuna = _optuna()
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


__all__ = ["DEFAULT_STORAGE", "SearchSpaceError", "SweepError", "SweepOptions", "SweepSummary",
           "claim_trial", "create_or_join_study", "open_storage", "run_sweep", "study_lock",
           "worker_loop"]
