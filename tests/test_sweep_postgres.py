"""`ferkit sweep --storage postgresql://...` on a real, throwaway PostgreSQL server: two worker
processes share a grid study (one of them SIGKILLed mid-trial) and a TPE study with a trial
budget, and `ferkit sweep report` reads them back."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from cli_support import run_ferkit  # noqa: E402
from pg_support import find_bin, throwaway_postgres  # noqa: E402
from synth import make_csv_dataset  # noqa: E402
from test_sweep_helpers import tiny_grid_space, tiny_space  # noqa: E402

from ferkit.sweeps.space import parse_space  # noqa: E402
from ferkit.sweeps.storage import SweepError, engine_url, normalize_storage, open_storage  # noqa: E402
from ferkit.sweeps.study import SweepOptions, create_or_join_study  # noqa: E402

PG_BIN = find_bin()
needs_server = pytest.mark.skipif(
    PG_BIN is None, reason="PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
    "/usr/lib/postgresql/*/bin; install them with scripts/install-postgres.sh (apt postgresql)")

TIMEOUT_S = 240
TS = optuna.trial.TrialState


@pytest.fixture(scope="module")
def pg_url():
    with throwaway_postgres(PG_BIN) as url:
        yield url


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pgsweep")
    make_csv_dataset(tmp, n_per_class=6)
    return tmp


def _worker(work: Path, url: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "FERKIT_CACHE_DIR": str(work / "cache"), "COLUMNS": "80"}
    cmd = [sys.executable, "-m", "ferkit", "sweep", "--data", "fer2013.csv", "--device", "cpu",
           "--storage", url, "--threads", "1", "--runs", "runs", *args]
    return subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _trials(storage, study: str) -> list:
    return optuna.load_study(study_name=study, storage=storage).get_trials()


@needs_server
def test_grid_on_postgres_every_cell_once_and_a_killed_workers_trial_is_retried(
        work, pg_url, monkeypatch, capsys):
    space = tiny_grid_space(work, stages=(1, 2, 3))
    args = ["--space", str(space), "--study", "grid", "--epochs", "4", "--batch-size", "8",
            "--heartbeat", "1"]
    victim = _worker(work, pg_url, *args)
    survivor = _worker(work, pg_url, *args)
    procs = [victim, survivor]
    storage = open_storage(pg_url, heartbeat=False)
    try:
        # SIGKILL the victim once its trial is RUNNING and has finished an epoch
        deadline, killed = time.monotonic() + TIMEOUT_S, None
        while killed is None:
            assert time.monotonic() < deadline, "the victim never got a trial going"
            assert victim.poll() is None, victim.communicate()[0]
            mine = []
            with contextlib.suppress(KeyError):  # KeyError: no such study yet
                mine = [t for t in _trials(storage, "grid") if t.state == TS.RUNNING and
                        t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
            for t in mine:
                metrics = work / t.user_attrs["run_dir"] / "metrics.jsonl"
                if metrics.exists() and metrics.read_text().strip():
                    victim.send_signal(signal.SIGKILL)
                    killed = t
            time.sleep(0.05)
        victim.wait(timeout=30)
        out, _ = survivor.communicate(timeout=TIMEOUT_S)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert survivor.returncode == 0, out

    trials = _trials(storage, "grid")
    by_state = {s: [t for t in trials if t.state == s] for s in TS}
    assert not by_state[TS.RUNNING] and not by_state[TS.WAITING], trials
    # the killed trial: failed by the survivor after 4 missed heartbeats, not left RUNNING
    assert [t.number for t in by_state[TS.FAIL]] == [killed.number]
    # every cell completed exactly once, the killed one by a retry of the same parameters
    done = by_state[TS.COMPLETE]
    assert sorted(t.params["model.stages"] for t in done) == [1, 2, 3]
    retry = [t for t in done if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retry) == 1 and retry[0].params == killed.params
    assert retry[0].user_attrs["worker"].endswith(f":{survivor.pid}")
    assert retry[0].user_attrs["run_dir"] != killed.user_attrs["run_dir"]
    assert len(trials) == 4
    assert "3 complete, 0 pruned, 1 failed of 4 trials" in out
    assert f"trial {retry[0].number}: model.stages={killed.params['model.stages']} (retry of " \
        f"trial {killed.number}, whose worker stopped beating)" in out

    # ferkit sweep report reads the study back from PostgreSQL
    code, stdout, stderr = run_ferkit(monkeypatch, capsys, "sweep", "report", "grid",
                                      "--storage", pg_url, "--json", "--out", work / "rep-grid")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["study"] == "grid" and report["storage"] == pg_url
    assert sorted(r["state"] for r in report["trials"]) == ["complete"] * 3 + ["fail"]
    assert report["best"]["value"] == max(t.value for t in done)
    assert all(r["epochs"] == 4 for r in report["trials"] if r["state"] == "complete")


@needs_server
def test_tpe_on_postgres_two_workers_hold_the_budget(work, pg_url, tmp_path, monkeypatch,
                                                    capsys):
    space = tiny_space(tmp_path, 'sampler = "tpe"\ntrials = 5',
                       '[params]\nlr = { type = "log", low = 1e-3, high = 1e-1 }',
                       model_extra="stages = 2", name="tpe.toml")
    args = ["--space", str(space), "--study", "tpe", "--epochs", "1"]
    procs = [_worker(work, pg_url, *args) for _ in range(2)]
    outs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out
    trials = _trials(open_storage(pg_url, heartbeat=False), "tpe")
    assert len(trials) == 5 and all(t.state == TS.COMPLETE for t in trials)  # the budget held
    assert len({t.params["lr"] for t in trials}) == 5
    assert len({t.user_attrs["run_dir"] for t in trials}) == 5
    workers = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in trials}
    assert workers <= {str(p.pid) for p in procs}
    ran = [sum(out.count(f"trial {t.number}: best val acc") for t in trials) for out in outs]
    assert sum(ran) == 5, outs  # each trial ran in exactly one worker

    code, stdout, stderr = run_ferkit(monkeypatch, capsys, "sweep", "report", "tpe",
                                      "--storage", pg_url, "--json", "--out", work / "rep-tpe")
    assert code == 0, stderr
    assert len(json.loads(stdout)["trials"]) == 5


# ---- URLs, drivers and heartbeats, without a server -----------------------------------------


def test_postgres_urls_get_the_psycopg3_driver(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "psycopg2" else real(name, *a))
    assert normalize_storage("postgres://u:p@db/s") == "postgresql://u:p@db/s"
    assert engine_url("postgresql://u:p@db/s") == "postgresql+psycopg://u:p@db/s"
    assert engine_url("postgres://u@db/s") == "postgresql+psycopg://u@db/s"
    assert engine_url("postgresql+psycopg2://u@db/s") == "postgresql+psycopg2://u@db/s"
    assert engine_url("runs/s.db") == "sqlite:///runs/s.db"


def test_a_missing_driver_names_the_extra():
    import importlib.util

    if importlib.util.find_spec("pg8000") is not None:
        pytest.skip("needs a PostgreSQL driver that is not installed; pg8000 is")
    hint = r"(Import|ModuleNotFound)Error.*pip install 'ferkit\[sweep-postgres\]'"
    with pytest.raises(SweepError, match=hint):
        open_storage("postgresql+pg8000://u@127.0.0.1:1/db")


def test_workers_must_share_the_studys_heartbeat(tmp_path):
    space = parse_space({"sampler": "random", "trials": 2,
                            "params": {"lr": {"type": "log", "low": 1e-3, "high": 1e-1}}},
                           source="test", default_name="hb")
    url = f"sqlite:///{tmp_path / 'hb.db'}"
    storage = open_storage(url)
    create_or_join_study(space, SweepOptions(storage=url, heartbeat=2), storage)
    assert (storage.heartbeat_interval, storage.grace_period) == (2, 8)
    joiner = open_storage(url)
    create_or_join_study(None, SweepOptions(storage=url, study="hb"), joiner)
    assert joiner.heartbeat_interval == 2  # the study's, not the default 30
    with pytest.raises(SweepError, match="runs with --heartbeat 2"):
        create_or_join_study(None, SweepOptions(storage=url, study="hb", heartbeat=5),
                                open_storage(url))
