"""Sweep storage: opening an Optuna RDB storage, heartbeats, and the one lock Optuna lacks.

Results live in an Optuna storage: by default a local SQLite file (runs/sweeps.db); any Optuna
RDB URL (postgresql://..., mysql://...) lets workers on many machines join the same study.
PostgreSQL goes through psycopg 3 (`pip install 'ferkit[sweep-postgres]'`): a plain
postgresql:// URL is given that driver when psycopg2 is not installed.

What Optuna provides is used as is: RDBStorage's heartbeats (`heartbeat_interval`,
`grace_period`, `record_heartbeat`), `fail_stale_trials`, and `RetryFailedTrialCallback`
(Optuna 5: `RetryHeartbeatStaleTrialCallback`), which queues a dead worker's parameters again as
a new trial. `Heartbeat` is the small thread that calls `record_heartbeat` while a trial trains
outside `Study.optimize`: Optuna's own thread is private API (`optuna.storages._heartbeat`) and
stops for good at the first failed write, so a database hiccup would get a live trial retried.

What Optuna lacks is a cross-process critical section around "count the trials, create the next
one, draw its parameters": without it two workers can both take the last grid cell or overshoot
the budget (`MaxTrialsCallback` only stops a study after a trial has finished, and only inside
`Study.optimize`). `study_lock` is that section, ferkit's only locking: a lock file beside a
SQLite database, an advisory lock on PostgreSQL/MySQL.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ferkit.errors import FerkitError

DEFAULT_STORAGE = "sqlite:///runs/sweeps.db"
HEARTBEAT_S = 30  # default; a study keeps the value it was created with
GRACE_BEATS = 4  # a trial whose worker missed this many heartbeats is failed and retried
MAX_CELL_FAILURES = 3  # failed trials of one parameter set before the sweep gives up on it
_SQLITE_TIMEOUT_S = 120


class SweepError(FerkitError):
    """A sweep cannot start or continue (storage, study, options)."""


def load_optuna():
    """The optuna module, quiet; a SweepError naming the extra to install when it is missing."""
    try:
        import optuna
    except ImportError as exc:
        raise SweepError("ferkit sweep needs Optuna: pip install 'ferkit[sweep]'") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # ferkit drives heartbeats itself (trials run outside Study.optimize): no need to warn.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    return optuna


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
    optuna = load_optuna()
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
    try:
        with _creation_lock(url):
            return optuna.storages.RDBStorage(engine_url(url), engine_kwargs=engine_kwargs,
                                              **hb)
    except Exception as exc:  # bad URL, missing driver, unreachable server
        raise SweepError(f"--storage {url}: cannot open ({exc.__class__.__name__}: {exc})"
                         f"{_driver_hint(url, exc)}") from exc


def _creation_lock(url: str) -> contextlib.AbstractContextManager[None]:
    """Held while Optuna creates its tables: workers starting together on a new database would
    race to create them (PostgreSQL: "duplicate key ... studydirection already exists")."""
    return _process_lock(url, "ferkit-sweep:create-tables")


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
_SERVER_LOCK_DIALECTS = ("postgresql", "mysql", "mariadb")  # servers with named locks


@contextlib.contextmanager
def study_lock(storage: Any, url: str, study: str) -> Iterator[None]:
    """Serialise trial claims between the workers of one study (processes and machines)."""
    url = normalize_storage(url)
    thread_lock = _THREAD_LOCKS.setdefault(f"{url}#{study}", threading.Lock())
    with thread_lock, _process_lock(url, f"ferkit-sweep:{study}",
                                    getattr(storage, "engine", None)):
        yield


@contextlib.contextmanager
def _process_lock(url: str, name: str, engine: Any = None) -> Iterator[None]:
    """A lock every process and machine using `url` sees: a file lock beside a SQLite file, a
    named lock on a database server (through `engine`, or a short-lived one of its own), none
    for in-memory SQLite (one process)."""
    db = sqlite_path(url)
    if db is not None:
        with _file_lock(_lock_path(db)):
            yield
        return
    dialect = url.split(":", 1)[0].split("+", 1)[0]
    if dialect not in _SERVER_LOCK_DIALECTS:
        yield
        return
    own_engine = engine is None
    if own_engine:
        from sqlalchemy import create_engine

        engine = create_engine(engine_url(url))
    try:
        with _db_lock(engine, dialect, name):
            yield
    finally:
        if own_engine:
            engine.dispose()


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


class Heartbeat:
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

    def __enter__(self) -> Heartbeat:
        if hasattr(self.storage, "record_heartbeat"):
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
