"""`ferkit evaluate` and `ferkit ensemble` end to end, through the real entry point main()."""

import json

import pytest
from cli_support import run_ferkit as ferkit
from synth import make_csv_dataset
from test_evaluation_helpers import make_checkpoint

from ferkit.classes import CLASSES

REQUIRED_KEYS = {"accuracy", "macro_f1", "per_class", "confusion_matrix", "n"}


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    csv = make_csv_dataset(d, n_per_class=10)  # 70 rows: 42 train, 14 val, 14 test
    a = make_checkpoint(d / "a.pt", seed=1, steps=1)
    b = make_checkpoint(d / "b.pt", seed=2, mean=0.0, std=1.0)
    return {"dir": d, "csv": csv, "a": a, "b": b}


def test_help_shows_examples(monkeypatch, capsys):
    for command in ("evaluate", "ensemble"):
        code, out, _ = ferkit(monkeypatch, capsys, command, "--help")
        assert code == 0
        assert "Examples" in out and f"ferkit {command}" in out
    code, out, _ = ferkit(monkeypatch, capsys, "evaluate", "--help")
    for option in ("--model", "--data", "--split", "--tta", "--json", "--out", "--device",
                   "--batch-size", "--skip-bad"):
        assert option in out


def test_evaluate_json(monkeypatch, capsys, files):
    code, out, _ = ferkit(monkeypatch, capsys, "evaluate", "--model", files["a"], "--data",
                          files["csv"], "--json", "--device", "cpu")
    assert code == 0
    result = json.loads(out)
    assert set(result) >= REQUIRED_KEYS
    assert result["n"] == 14 and result["split"] == "test" and result["tta"] == "none"
    assert list(result["per_class"]) == list(CLASSES)
    assert len(result["confusion_matrix"]) == 7 and all(len(r) == 7 for r in
                                                        result["confusion_matrix"])
    assert sum(map(sum, result["confusion_matrix"])) == 14
    assert 0.0 <= result["accuracy"] <= 1.0
    assert 0.0 <= result["ece"] <= 1.0 and 0.0 <= result["mean_confidence"] <= 1.0
    assert sum(result["calibration"]["count"]) == 14 and result["calibration"]["bins"] == 15


def test_evaluate_table_split_tta_and_out(monkeypatch, capsys, files, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "best.pt").write_bytes(files["a"].read_bytes())
    code, out, err = ferkit(monkeypatch, capsys, "evaluate", "-m", run_dir, "-d", files["csv"],
                            "--split", "val", "--tta", "flip", "--out", tmp_path / "report",
                            "--batch-size", "5")
    assert code == 0, err
    assert "split val, tta flip, 14 faces" in out
    for word in ("precision", "recall", "support", "accuracy", "macro-F1", "confusion matrix",
                 "happy", "neutral"):
        assert word in out
    for name in ("metrics.json", "predictions.csv", "confusion_matrix.png", "reliability.png",
                 "mistakes.png"):
        assert (tmp_path / "report" / name).is_file()
    assert "ECE (15 bins, uncalibrated)" in out and "mean confidence" in out
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert saved["split"] == "val" and saved["tta"] == "flip" and saved["n"] == 14


def _one_line_error(code, out, err, *fragments):
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


def test_evaluate_errors_are_one_line(monkeypatch, capsys, files, tmp_path):
    args = ("--data", files["csv"], "--device", "cpu")
    _one_line_error(*ferkit(monkeypatch, capsys, "evaluate", "--model", tmp_path / "nope.pt",
                            *args), "nope.pt", "no such checkpoint")
    _one_line_error(*ferkit(monkeypatch, capsys, "evaluate", "--model", files["a"], *args,
                            "--split", "holdout"),
                    "no split 'holdout'", "available splits: train, val, test")
    _one_line_error(*ferkit(monkeypatch, capsys, "evaluate", "--model", files["a"], *args,
                            "--tta", "mirror"), "--tta mirror", "none, flip, tencrop")
    _one_line_error(*ferkit(monkeypatch, capsys, "evaluate", "--model", files["a"],
                            "--data", tmp_path / "missing.csv"), "missing.csv")


def test_evaluate_rejects_a_model_without_a_class_of_the_data(monkeypatch, capsys, files,
                                                              tmp_path):
    six = make_checkpoint(tmp_path / "six.pt", classes=CLASSES[1:])
    _one_line_error(*ferkit(monkeypatch, capsys, "evaluate", "--model", six, "--data",
                            files["csv"]), "cannot classify angry (2 faces)")


def test_ensemble_then_evaluate(monkeypatch, capsys, files, tmp_path):
    out_file = tmp_path / "ensemble.pt"
    code, out, err = ferkit(monkeypatch, capsys, "ensemble", files["a"], files["b"],
                            "--out", out_file, "--weights", "2,1")
    assert code == 0, err
    assert out_file.is_file()
    assert "wrote" in out and "ensemble.pt" in out and "0.667" in out and "0.333" in out
    code, out, err = ferkit(monkeypatch, capsys, "evaluate", "--model", out_file, "--data",
                            files["csv"], "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["arch"] == "ensemble" and result["n"] == 14


def test_ensemble_json_summary(monkeypatch, capsys, files, tmp_path):
    code, out, _ = ferkit(monkeypatch, capsys, "ensemble", files["a"], files["b"],
                          "-o", tmp_path / "e.pt", "--json")
    assert code == 0
    summary = json.loads(out)
    assert [m["weight"] for m in summary["members"]] == [0.5, 0.5]
    assert summary["members"][1]["normalization"] == {"mean": 0.0, "std": 1.0}


def test_ensemble_errors_are_one_line(monkeypatch, capsys, files, tmp_path):
    out_file = tmp_path / "e.pt"
    _one_line_error(*ferkit(monkeypatch, capsys, "ensemble", files["a"], "--out", out_file),
                    "at least two models")
    _one_line_error(*ferkit(monkeypatch, capsys, "ensemble", files["a"], files["b"], "--out",
                            out_file, "--weights", "1"), "1 weights for 2 models")
    _one_line_error(*ferkit(monkeypatch, capsys, "ensemble", files["a"], files["b"], "--out",
                            out_file, "--weights", "1,x"), "comma-separated numbers")
    other = make_checkpoint(tmp_path / "other.pt", classes=tuple(reversed(CLASSES)))
    _one_line_error(*ferkit(monkeypatch, capsys, "ensemble", files["a"], other, "--out",
                            out_file), "different classes")
    _one_line_error(*ferkit(monkeypatch, capsys, "ensemble", files["a"], tmp_path / "gone",
                            "--out", out_file), "no such checkpoint")
    assert not out_file.exists()


def test_skip_bad_leaves_out_a_broken_row(monkeypatch, capsys, files, tmp_path):
    broken = tmp_path / "broken.csv"
    lines = files["csv"].read_text().splitlines()
    lines.insert(3, "3,1 2 3,PrivateTest")  # 3 pixels instead of 48x48
    broken.write_text("\n".join(lines) + "\n")
    code, out, err = ferkit(monkeypatch, capsys, "evaluate", "--model", files["a"], "--data",
                            broken, "--json")
    assert code == 1 and "broken.csv" in err
    code, out, err = ferkit(monkeypatch, capsys, "evaluate", "--model", files["a"], "--data",
                            broken, "--json", "--skip-bad")
    assert code == 0, err
    result = json.loads(out)
    assert result["skipped"] == 1 and result["n"] == 14
    assert "skipped 1 bad entry" in err
    assert "broken.csv line 4: expected 2304 pixels, got 3" in err  # the entry is listed
