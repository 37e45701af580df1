"""scripts/campaign.py end to end on a tiny job: start, save the in-flight state compactly, lose
the machine (runs/ deleted), resume from campaign/inflight/, finish with an fp16 model and its
result; the job table and CPU-hours are booked in jobs.json."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from synth import make_csv_dataset

from ferkit.models.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 4


def _campaign(root: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, str(root / "scripts" / "campaign.py"), *args],
                            capture_output=True, text=True, cwd=root, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _wait(predicate, what: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _epoch(path: Path) -> int:
    try:
        return int(load_checkpoint(path)["epoch"])
    except Exception:  # not written yet, or being replaced
        return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True,
                          text=True).stdout.strip()[:1] not in ("Z", "")


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_a_job_survives_the_loss_of_its_machine(tmp_path):
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    for name in ("campaign.py", "bundle_model.py"):
        shutil.copy2(REPO / "scripts" / name, root / "scripts" / name)
    (root / "campaign").mkdir()
    (root / "campaign" / "PLAN.md").write_text("# plan\n<!-- jobs: begin -->\n<!-- jobs: end -->\n")
    args = ["--model", "configurable-cnn", "--model-arg", "stages=2", "--model-arg", "filters=8",
            "--model-arg", "fc_layers=1", "--epochs", str(EPOCHS), "--batch-size", "32",
            "--ema", "0.9", "--device", "cpu", "--augment", "light", "--amp", "off"]
    (root / "campaign" / "jobs.json").write_text(json.dumps({"jobs": [
        {"id": "tiny", "purpose": "test", "args": args, "epochs": EPOCHS,
         "estimate_cpu_hours": 0.01, "state": "queued", "result": None, "segments": []}]}))
    data = make_csv_dataset(tmp_path, n_per_class=12)
    jobs = root / "campaign" / "jobs.json"
    last = root / "runs" / "tiny" / "last.pt"

    _campaign(root, "start", "tiny", "--data", str(data), "--cores", "0")
    pid = json.loads(jobs.read_text())["jobs"][0]["segments"][-1]["pid"]
    _wait(lambda: _epoch(last) >= 1, "the first epoch")
    os.killpg(pid, signal.SIGKILL)  # the period ends: the job dies mid-run
    _wait(lambda: not _alive(pid), "the job to die")
    cut = _epoch(last)
    assert 1 <= cut < EPOCHS
    out = _campaign(root, "save", "tiny")
    assert f"epoch {cut}/{EPOCHS}" in out
    stored = root / "campaign" / "inflight" / "tiny"
    assert load_checkpoint(stored / "last.pt")["compact"]
    assert (stored / "metrics.jsonl").read_text().count("\n") == cut

    shutil.rmtree(root / "runs")  # a fresh machine: only the repository is left
    out = _campaign(root, "start", "tiny", "--data", str(data), "--cores", "0")
    assert "restored" in out and f"resumed tiny at epoch {cut}" in out
    pid = json.loads(jobs.read_text())["jobs"][0]["segments"][-1]["pid"]
    _wait(lambda: not _alive(pid), "the resumed job to finish")
    assert _epoch(last) == EPOCHS

    _campaign(root, "finish", "tiny", "--data", str(data))
    job = json.loads(jobs.read_text())["jobs"][0]
    assert job["state"] == "done" and not stored.exists()
    assert [(s["from_epoch"], s["to_epoch"]) for s in job["segments"]] == [(0, cut),
                                                                            (cut, EPOCHS)]
    assert all(s["cpu_hours"] > 0 for s in job["segments"])
    result = json.loads((root / "campaign" / "results" / "tiny.json").read_text())
    assert set(result["publictest"]) == {"none", "flip"}
    assert job["result"]["none"] == result["publictest"]["none"]["accuracy"] > 0.3
    model = load_checkpoint(root / "campaign" / "models" / "tiny.pt")
    assert all(v.dtype == torch.float16 for k, v in model["state_dict"].items()
               if v.is_floating_point() and v.dim())
    assert "| tiny | test | done |" in (root / "campaign" / "PLAN.md").read_text()
