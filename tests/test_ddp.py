"""Distributed training on the CPU: real processes, gloo, torchrun, synthetic data.

Two processes train one model and must end where one process ends at the same global batch and
seed. Without --sync-bn the only difference is BatchNorm: each rank normalises its half of the
batch with that half's statistics (and rank 0's running statistics, from its halves, are the
ones evaluated and saved), so the metrics agree only loosely. With --sync-bn the statistics are
the global batch's, the gradients are DDP's average of the same per-face terms, and what is left
is float summation order: the metrics agree to 1e-4. Augmentation and dropout are off here
because they draw from each rank's own random stream (by design: the ranks must not repeat each
other's augmentations), which no single process reproduces.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from synth import make_csv_dataset

from ferkit.data import load_dataset
from ferkit.errors import ConfigError
from ferkit.models.checkpoint import load_checkpoint
from ferkit.models.predictor import Predictor
from ferkit.training import run_dir as rd
from ferkit.training.config import TrainConfig
from ferkit.training.distributed import Dist, from_env
from ferkit.training.torchrun import exit_code
from ferkit.training.trainer import train

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or
                                not torch.distributed.is_gloo_available(),
                                reason="this torch build has no gloo backend")

# configurable-cnn with BatchNorm in every stage and in the hidden FC layer; no dropout
MODEL = {"stages": 2, "filters": 8, "fc_layers": 2, "fc_units": 32, "dropout": 0.0,
         "fc_dropout": 0.0}
COMMON = ["--model", "configurable-cnn",
          *[a for k, v in MODEL.items() for a in ("--model-arg", f"{k}={v}")],
          "--batch-size", "32", "--augment", "none", "--device", "cpu", "--amp", "off",
          "--seed", "5"]
LEARNING = ("train_loss", "train_acc", "val_loss", "val_acc")
TIMEOUT_S = 180


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ddp")
    make_csv_dataset(tmp, n_per_class=24)  # 102 training faces: 3 steps of 32 per epoch
    return tmp


def _env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                        "MASTER_PORT")}
    return {**env, "FERKIT_CACHE_DIR": str(work / "cache"), "OMP_NUM_THREADS": "1",
            "COLUMNS": "80"}


def _torchrun(work: Path, cwd: Path, *args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(nproc), "-m", "ferkit", "train", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(work), capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def _one_process(work: Path, out: str, epochs: int) -> list[dict]:
    config = TrainConfig(data=str(work / "fer2013.csv"), model="configurable-cnn",
                         model_kwargs=dict(MODEL), epochs=epochs, batch_size=32, augment="none",
                         device="cpu", amp="off", seed=5, threads=1, out=str(work / out))
    train(config, load_dataset(config.data))
    return rd.read_metrics(work / out)


def _differences(a: list[dict], b: list[dict]) -> dict[str, float]:
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    return {k: max(abs(x[k] - y[k]) for x, y in zip(a, b, strict=True)) for k in LEARNING}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_train_one_model(work):
    epochs = 2
    single = _one_process(work, "single-2", epochs)
    home = work / "default-dir"  # no --out: rank 0 names the run directory for every rank
    home.mkdir()
    res = _torchrun(work, home, "--data", str(work / "fer2013.csv"), *COMMON,
                    "--epochs", str(epochs))
    assert res.returncode == 0, res.stdout + res.stderr
    # rank 0 alone speaks: one header, one line per epoch, one summary
    assert res.stdout.count("ferkit train: training") == 1
    assert "DDP: 2 processes (gloo), 16 faces each per step; BatchNorm per process" in res.stdout
    assert [ln.split()[1] for ln in res.stdout.splitlines()
            if ln.startswith("epoch ")] == ["1/2", "2/2"]
    assert res.stdout.count("best val accuracy") == 1
    # one run directory, complete, and its checkpoint loads
    runs = list((home / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.endswith("-configurable-cnn"), runs
    run = runs[0]
    for name in ("config.json", "metrics.jsonl", "best.pt", "last.pt", "curves.png"):
        assert (run / name).is_file(), name
    execution = json.loads((run / "config.json").read_text())["execution"]
    assert execution["world_size"] == 2 and execution["backend"] == "gloo"
    last = load_checkpoint(run / "last.pt")
    assert last["world_size"] == 2 and len(last["rng_ranks"]) == 2
    predictor = Predictor.load(run, device="cpu")
    val = load_dataset(str(work / "fer2013.csv")).split("val")
    acc = float((predictor.predict_proba(val.images).argmax(1) == val.labels).mean())
    best = max(rd.read_metrics(run), key=lambda r: r["val_acc"])
    assert acc == pytest.approx(best["val_acc"], abs=1e-6)
    # per-rank BatchNorm statistics: close to one process, not equal
    diff = _differences(rd.read_metrics(run), single)
    assert diff["train_loss"] < 0.15 and diff["val_loss"] < 0.3, diff
    assert diff["train_acc"] <= 0.15 and diff["val_acc"] <= 0.2, diff
    assert diff["train_loss"] > 1e-4, "per-rank BatchNorm should show"


def _start_ranks(work: Path, args: list[str]) -> list[subprocess.Popen]:
    """Two ranks started by hand (as torchrun would, without its agent watching them)."""
    base = {**_env(work), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
            "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    return [subprocess.Popen([sys.executable, "-m", "ferkit", "train", *args], cwd=work,
                             env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for r in (0, 1)]


def _hit_rank_1_after_epoch_1(procs: list[subprocess.Popen], run: Path, sig: int
                              ) -> tuple[str, float]:
    """Send `sig` to rank 1 once rank 0 has written epoch 1; (rank 0's stderr, seconds it
    took to exit after that)."""
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not ((run / rd.METRICS).exists() and (run / rd.METRICS).read_text().strip()):
            assert time.monotonic() < deadline, "no epoch finished"
            assert procs[0].poll() is None, procs[0].communicate()
            time.sleep(0.05)
        procs[1].send_signal(sig)
        t_hit = time.monotonic()
        _, err = procs[0].communicate(timeout=60)
        return err, time.monotonic() - t_hit
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()


def test_a_dead_rank_ends_the_run_and_resume_finishes_it_like_one_process(work):
    """Rank 1 is killed (SIGKILL) after epoch 1: rank 0 stops with a clear message, not a hang;
    `ferkit train --nproc 2 --resume` finishes the run, which then agrees with one process."""
    epochs = 8
    procs = _start_ranks(work, ["--data", "fer2013.csv", *COMMON, "--epochs", str(epochs),
                                "--sync-bn", "--out", "runs/cut"])
    err, waited = _hit_rank_1_after_epoch_1(procs, work / "runs" / "cut", signal.SIGKILL)
    assert procs[0].returncode == 1, err
    assert waited < 30, f"rank 0 took {waited:.1f} s to notice"
    assert "rank 0 of 2: lost contact with another process" in err, err
    assert "--resume --out runs/cut" in err
    done = len(rd.read_metrics(work / "runs" / "cut"))
    assert 1 <= done < epochs, "the kill should land mid-run"

    cmd = [sys.executable, "-m", "ferkit", "train", "--nproc", "2", "--resume", "--out",
           "runs/cut", "--device", "cpu"]
    res = subprocess.run(cmd, cwd=work, env=_env(work), capture_output=True, text=True,
                         timeout=TIMEOUT_S)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resuming configurable-cnn" in res.stdout and f"after epoch {done}" in res.stdout
    assert "16 faces each per step; sync-bn" in res.stdout
    rows = rd.read_metrics(work / "runs" / "cut")
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))

    diff = _differences(rows, _one_process(work, "single-8", epochs))
    assert diff["train_loss"] < 1e-4 and diff["val_loss"] < 1e-4, diff
    assert diff["train_acc"] == 0 and diff["val_acc"] == 0, diff


def test_a_stuck_rank_ends_the_run_at_the_collective_timeout(work):
    """Rank 1 is frozen (SIGSTOP): its sockets stay open, so only --dist-timeout ends rank 0."""
    procs = _start_ranks(work, ["--data", "fer2013.csv", *COMMON, "--epochs", "50",
                                "--dist-timeout", "3", "--out", "runs/stuck"])
    err, waited = _hit_rank_1_after_epoch_1(procs, work / "runs" / "stuck", signal.SIGSTOP)
    assert procs[0].returncode == 1, err
    assert 3 <= waited < 30, waited
    assert "did not answer within --dist-timeout 3 s" in err and "Timed out" in err, err


# ---- the helpers, in one process ------------------------------------------------------------


def test_rank_and_world_come_from_torchrun_variables():
    assert from_env({}) == Dist()
    d = from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (d.rank, d.world_size, d.local_rank, d.local_world_size) == (3, 4, 1, 2)
    assert not d.enabled  # no process group until session() opens one
    with pytest.raises(ConfigError, match="RANK=4, WORLD_SIZE=4"):
        from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(ConfigError, match="LOCAL_RANK='x'"):
        from_env({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "x"})


def test_each_rank_takes_its_slice_of_the_global_batch():
    steps = torch.arange(24).view(3, 8)
    parts = [Dist(rank=r, world_size=2, backend="gloo").shard_steps(steps) for r in (0, 1)]
    assert parts[0].tolist() == [[0, 1, 2, 3], [8, 9, 10, 11], [16, 17, 18, 19]]
    assert torch.equal(torch.cat(parts, dim=1), steps)  # together: exactly the global batch
    assert torch.equal(Dist().shard_steps(steps), steps)
    with pytest.raises(ConfigError, match="--batch-size 30 is the global batch.*4 processes"):
        Dist(world_size=4, backend="gloo").check_batch(30)
    Dist(world_size=4, backend="gloo").check_batch(32)


def test_distributed_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="--dist-timeout must be positive"):
        TrainConfig(dist_timeout=0).validated()
    assert TrainConfig(sync_bn=True).validated().sync_bn


def test_amp_auto_is_timed_on_rank_0_and_every_rank_trains_in_its_choice(work):
    """--amp auto with --sync-bn on two processes: rank 0 alone times the candidates (before
    the global BatchNorm, whose collectives would wait for rank 1) and broadcasts the choice."""
    common = ["auto" if a == "off" else a for a in COMMON]
    cmd = [sys.executable, "-m", "ferkit", "train", "--nproc", "2", "--data", "fer2013.csv",
           *common, "--epochs", "1", "--sync-bn", "--out", "runs/auto"]
    res = subprocess.run(cmd, cwd=work, env=_env(work), capture_output=True, text=True,
                         timeout=TIMEOUT_S)
    assert res.returncode == 0, res.stdout + res.stderr
    execution = json.loads((work / "runs" / "auto" / "config.json").read_text())["execution"]
    assert execution["world_size"] == 2
    assert "fp32" in execution["timed_images_per_s"]  # fp32 NCHW is always a candidate
    assert "timed here" in execution["why"]


@pytest.mark.parametrize("launched", [False, True])
def test_a_torchrun_worker_ends_without_interpreter_teardown_and_loses_no_output(
        tmp_path, launched):
    """Under torchrun variables the command skips interpreter finalization (where gloo's threads
    can abort a finished rank) yet keeps its exit status and its piped, buffered output."""
    script = ("import atexit, sys\n"
              "print('started')  # buffered: a pipe is not a terminal\n"
              "atexit.register(lambda: print('finalized'))\n"
              "from ferkit.cli.app import main\n"
              "sys.argv = ['ferkit', *sys.argv[1:]]\n"
              "main()\n")
    env = _env(tmp_path)
    env.pop("PYTHONUNBUFFERED", None)
    if launched:
        env.update(RANK="0", WORLD_SIZE="1")
    run = [sys.executable, "-c", script]
    version = subprocess.run([*run, "--version"], env=env, capture_output=True, text=True,
                             timeout=TIMEOUT_S)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("started\nferkit ")
    assert ("finalized" in version.stdout) is not launched
    failed = subprocess.run([*run, "train", "--data", str(tmp_path / "missing.csv")], env=env,
                            capture_output=True, text=True, timeout=TIMEOUT_S)
    assert failed.returncode == 1
    assert "missing.csv: no such file or folder" in failed.stderr
    assert failed.stdout.startswith("started")  # only the error was flushed by the command


def test_exit_code_reads_a_system_exit_as_the_interpreter_does(capsys):
    assert [exit_code(SystemExit(c)) for c in (None, 0, 2)] == [0, 0, 2]
    assert exit_code(SystemExit("bad input")) == 1
    assert capsys.readouterr().err == "bad input\n"
