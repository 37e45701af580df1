"""The prepared benchmark scripts run end to end (tiny settings): a GPU session has minutes,
so bench/gpu_suite.sh must not meet its first bug there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_suite_tiny_writes_the_zoo_json_and_table(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable,
           "FERKIT_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(["bash", str(ROOT / "bench/gpu_suite.sh"), "--tiny"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = json.loads((tmp_path / "zoo-tiny.json").read_text())
    assert set(table["entries"]) == {"shallow-cnn", "ferkit-small"}
    for entry in table["entries"].values():
        assert 0.0 <= entry["accuracy"]["mean"] <= 1.0 and entry["epochs"] == 1
        assert entry["params"] > 0 and entry["runs"][0]["train_seconds"] > 0
    assert "| shallow-cnn |" in proc.stdout and "PublicTest" in proc.stdout
