"""The prepared benchmark scripts run end to end (tiny settings): a GPU session has minutes,
so bench/gpu_suite.sh must not meet its first bug there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from synth import make_csv_dataset

from ferkit.models.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_suite_tiny_bundles_a_distilled_student_and_writes_the_zoo_json(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable,
           "FERKIT_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(["bash", str(ROOT / "bench/gpu_suite.sh"), "--tiny"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "distill-tiny" / "distill.json").read_text())
    assert (report["teacher"]["model"], report["student"]["model"]) == ("ferkit-vgg",
                                                                        "ferkit-small")
    for stage in (report["teacher"], report["student"]):
        assert stage["epochs"] == 1 and 0.0 <= stage["accuracy"] <= 1.0
    bundled = load_checkpoint(tmp_path / "distill-tiny" / "default.pt")
    assert bundled["arch"] == "ferkit-small" and "optimizer" not in bundled
    assert bundled["teacher"]["path"].endswith("last.pt")  # the teacher's last epoch, not its best
    assert "ferkit train --model ferkit-small" in bundled["provenance"]["command"]
    teacher = load_checkpoint(tmp_path / "distill-tiny" / "teacher.pt")  # for a CPU session
    assert teacher["arch"] == "ferkit-vgg"
    assert {v.dtype for v in teacher["state_dict"].values() if v.is_floating_point()} == {
        torch.float16}
    table = json.loads((tmp_path / "zoo-tiny.json").read_text())
    assert set(table["entries"]) == {"shallow-cnn", "ferkit-small"}
    for entry in table["entries"].values():
        assert 0.0 <= entry["accuracy"]["mean"] <= 1.0 and entry["epochs"] == 1
        assert entry["params"] > 0 and entry["runs"][0]["train_seconds"] > 0
    assert "| shallow-cnn |" in proc.stdout and "PublicTest" in proc.stdout


def test_gpu_suite_refuses_an_unknown_stage(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "bench/gpu_suite.sh"), "zooo"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "usage: bash bench/gpu_suite.sh" in proc.stderr


def test_time_to_accuracy_reports_every_target_over_seeds(tmp_path):
    data = make_csv_dataset(tmp_path, n_per_class=8)
    out = tmp_path / "tta"
    cmd = [sys.executable, str(ROOT / "bench" / "time_to_accuracy.py"), "--data", str(data),
           "--model", "shallow-cnn", "--epochs", "1", "--batch-size", "16", "--device", "cpu",
           "--target", "0,1.0", "--seeds", "2", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "target 0.00%: reached by 2 of 2 seeds" in result.stdout
    assert "target 100.00%: reached by none of 2 seeds" in result.stdout
    summary = json.loads((out / "results.json").read_text())
    assert [r["seed"] for r in summary["runs"]] == [0, 1]
    assert all(list(r["reached"]) == ["0.0"] for r in summary["runs"])


def test_time_to_accuracy_refuses_a_target_outside_0_1():
    cmd = [sys.executable, str(ROOT / "bench" / "time_to_accuracy.py"), "--data", "none.zip",
           "--target", "65"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0 and "--target '65'" in result.stderr


def test_precision_parity_trains_each_seed_in_both_modes(tmp_path):
    out = tmp_path / "parity.json"
    cmd = [sys.executable, str(ROOT / "bench" / "precision_parity.py"), "--model", "ferkit-small",
           "--model-arg", "width=8", "--epochs", "1", "--seeds", "2", "--device", "cpu",
           "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "bf16 - fp32:" in result.stdout and "over 2 seeds" in result.stdout
    runs = json.loads(out.read_text())["runs"]
    assert [(r["seed"], r["mode"]) for r in runs] == [(0, "fp32"), (0, "bf16"), (1, "fp32"),
                                                      (1, "bf16")]
    assert all(0.0 <= r["val_acc"] <= 1.0 and r["train_seconds"] > 0 for r in runs)


def test_step_breakdown_times_every_part_and_their_shares():
    cmd = [sys.executable, str(ROOT / "bench" / "step_breakdown.py"), "--model", "shallow-cnn",
           "--batch-size", "8", "--repeats", "2", "--threads", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    lines = {line.split("  ")[0].strip(): line for line in result.stdout.splitlines()}
    for part in ("augmentation (Kornia)", "forward+backward+optimizer", "EMA update",
                 "step total"):
        assert part in lines, result.stdout
    shares = [float(lines[p].rstrip("%").split()[-1]) for p in
              ("augmentation (Kornia)", "forward+backward+optimizer", "EMA update")]
    assert abs(sum(shares) - 100.0) < 0.5  # the shares are of the whole step
