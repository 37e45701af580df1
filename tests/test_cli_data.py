"""`ferkit data inspect|audit|export-csv`: output, files written, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from cli_support import run_ferkit as run
from PIL import Image
from synth import (
    jpeg_with_extraneous_bytes,
    kaggle_entries,
    make_csv_dataset,
    make_faces,
    write_zip,
)

from ferkit.classes import CLASSES


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "120")


@pytest.fixture
def zip_path(tmp_path):
    images, labels = make_faces(3)
    splits = [("train", "train", "val", "test")[i % 4] for i in range(len(labels))]
    return write_zip(tmp_path / "faces.zip", kaggle_entries(images, labels, splits))


@pytest.fixture
def bad_zip(tmp_path):
    images, labels = make_faces(2)
    entries = kaggle_entries(images, labels, ["train"] * len(labels))
    entries["train/happy/Training_broken.jpg"] = b"not a jpeg"
    entries["train/contempt/Training_x.png"] = next(iter(entries.values()))
    return write_zip(tmp_path / "bad.zip", entries)


def test_inspect_json_has_the_exact_shape(monkeypatch, capsys, zip_path):
    code, out, err = run(monkeypatch, capsys, "data", "inspect", str(zip_path), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert set(report) == {"source", "splits", "skipped", "warnings"}
    assert report["source"] == str(zip_path) and report["skipped"] == []
    assert report["warnings"] == []
    assert list(report["splits"]) == ["train", "val", "test"]
    for info in report["splits"].values():
        assert set(info) == {"count", "per_class"}
        assert list(info["per_class"]) == list(CLASSES)
        assert sum(info["per_class"].values()) == info["count"]
    assert sum(info["count"] for info in report["splits"].values()) == 21


def test_inspect_table(monkeypatch, capsys, zip_path):
    code, out, err = run(monkeypatch, capsys, "data", "inspect", str(zip_path))
    assert code == 0, err
    for word in ("class", "train", "val", "test", "total", *CLASSES, "all"):
        assert word in out
    assert "21" in out


def test_inspect_out_writes_pngs_and_prints_paths(monkeypatch, capsys, tmp_path):
    csv_path = make_csv_dataset(tmp_path, n_per_class=2)
    out_dir = tmp_path / "report"
    code, out, err = run(monkeypatch, capsys, "data", "inspect", str(csv_path), "--out",
                         str(out_dir))
    assert code == 0, err
    written = sorted(p.name for p in out_dir.iterdir())
    assert written == ["class_distribution.png", "samples_test.png", "samples_train.png",
                       "samples_val.png"]
    for name in written:
        assert str(out_dir / name) in out
        with Image.open(out_dir / name) as im:
            assert im.format == "PNG"


def test_inspect_skip_bad_reports_what_was_skipped(monkeypatch, capsys, bad_zip):
    code, out, err = run(monkeypatch, capsys, "data", "inspect", str(bad_zip), "--skip-bad")
    assert code == 0
    assert "skipped 2 bad entries" in err
    assert "train/happy/Training_broken.jpg" in err and "train/contempt/Training_x.png" in err
    code, out, err = run(monkeypatch, capsys, "data", "inspect", str(bad_zip), "--skip-bad",
                         "--json")
    report = json.loads(out)
    assert [s["entry"] for s in report["skipped"]] == ["train/contempt/Training_x.png",
                                                       "train/happy/Training_broken.jpg"]
    assert "unknown class folder 'contempt'" in report["skipped"][0]["reason"]
    assert report["splits"]["train"]["count"] == 14
    assert "skipped 2" in err


def test_bad_data_is_a_one_line_error_and_exit_1(monkeypatch, capsys, bad_zip, tmp_path):
    for args in (["data", "inspect", str(bad_zip)],
                 ["data", "audit", str(bad_zip)],
                 ["data", "export-csv", str(bad_zip), str(tmp_path / "x.csv")],
                 ["data", "inspect", str(tmp_path / "missing.zip")]):
        code, out, err = run(monkeypatch, capsys, *args)
        assert code == 1, args
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert out == ""
    assert "bad.zip: train/contempt/Training_x.png: unknown class folder" in \
        run(monkeypatch, capsys, "data", "audit", str(bad_zip))[2]
    assert not (tmp_path / "x.csv").exists()


def test_audit_json_and_table(monkeypatch, capsys, tmp_path):
    images, labels = make_faces(2)
    images = images.copy()
    images[1] = images[0]  # duplicate within train
    images[3] = 0  # blank
    splits = ["train"] * 10 + ["val"] * 4
    images[12] = images[5]  # leaks into val
    labels = labels.copy()
    labels[12] = (labels[5] + 1) % 7  # with another label
    path = write_zip(tmp_path / "dups.zip", kaggle_entries(images, labels, splits))
    code, out, err = run(monkeypatch, capsys, "data", "audit", str(path), "--json")
    assert code == 0, err
    report = json.loads(out)
    dup = report["duplicates"]
    assert dup["groups"] == 2
    assert dup["within_split"]["train"]["groups"] == 1
    assert dup["across_splits"]["groups"] == 1 and dup["across_splits"]["leaked"] == {"val": 1}
    assert dup["conflicting_labels"]["groups"] == 1
    assert report["blank"]["count"] == 1
    code, out, err = run(monkeypatch, capsys, "data", "audit", str(path))
    assert code == 0
    assert "across splits" in out and "conflicting labels" in out and "blank" in out
    assert "Training_" in out  # example entries are named


def test_export_csv_round_trip(monkeypatch, capsys, zip_path, tmp_path):
    out_csv = tmp_path / "fer2013.csv"
    code, out, err = run(monkeypatch, capsys, "data", "export-csv", str(zip_path), str(out_csv))
    assert code == 0, err
    assert "wrote 21 rows" in out and str(out_csv) in out
    first = json.loads(run(monkeypatch, capsys, "data", "inspect", str(zip_path), "--json")[1])
    second = json.loads(run(monkeypatch, capsys, "data", "inspect", str(out_csv), "--json")[1])
    assert first["splits"] == second["splits"]


def test_export_csv_refuses_to_replace_a_file_without_force(monkeypatch, capsys, zip_path,
                                                             tmp_path):
    out_csv = tmp_path / "taken.csv"
    out_csv.write_text("precious\n")
    code, out, err = run(monkeypatch, capsys, "data", "export-csv", str(zip_path), str(out_csv))
    assert code == 1 and out == ""
    assert err == f"error: {out_csv}: already exists; pass --force to replace it\n"
    assert out_csv.read_text() == "precious\n"
    code, out, err = run(monkeypatch, capsys, "data", "export-csv", str(zip_path), str(out_csv),
                         "--force")
    assert code == 0, err
    assert "wrote 21 rows" in out and out_csv.read_text().startswith("emotion,pixels,Usage\n")


def test_export_csv_force_never_replaces_the_source(monkeypatch, capsys, tmp_path):
    csv_path = make_csv_dataset(tmp_path, n_per_class=1)
    before = csv_path.read_bytes()
    code, out, err = run(monkeypatch, capsys, "data", "export-csv", str(csv_path), str(csv_path),
                         "--force")
    assert code == 1 and "refusing to overwrite the source" in err
    assert csv_path.read_bytes() == before


def test_export_csv_help_explains_force(monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "data", "export-csv", "--help")
    assert code == 0 and "--force" in out and "ferkit data export-csv fer2013.zip fer2013.csv " \
        "--force" in out


@pytest.fixture
def odd_jpeg_zip(tmp_path):
    images, labels = make_faces(2)
    entries = kaggle_entries(images, labels, ["train"] * len(labels))
    entries["train/happy/Training_odd.jpg"] = jpeg_with_extraneous_bytes(images[0])
    return write_zip(tmp_path / "odd.zip", entries)


@pytest.mark.parametrize("command", ["inspect", "audit"])
def test_decoder_warnings_are_listed_with_the_entry(monkeypatch, capfd, odd_jpeg_zip, command):
    # capfd: stdout and stderr at the file-descriptor level, C libraries included.
    code, out, err = run(monkeypatch, capfd, "data", command, str(odd_jpeg_zip))
    assert code == 0, err
    assert "1 entry of" in err and "loaded with warnings:" in err
    assert "train/happy/Training_odd.jpg: decoded, but the decoder warned: Corrupt JPEG data" \
        in " ".join(err.split())
    assert err.count("Corrupt JPEG") == 1  # only in the report, never anonymously
    code, out, err = run(monkeypatch, capfd, "data", command, str(odd_jpeg_zip), "--json")
    report = json.loads(out)
    assert [w["entry"] for w in report["warnings"]] == ["train/happy/Training_odd.jpg"]
    assert "extraneous bytes" in report["warnings"][0]["message"]
    assert "1 entry loaded with warnings" in err and "Corrupt JPEG" not in err


def test_export_csv_refuses_to_overwrite_its_source(monkeypatch, capsys, tmp_path):
    csv_path = make_csv_dataset(tmp_path, n_per_class=1)
    before = csv_path.read_bytes()
    code, out, err = run(monkeypatch, capsys, "data", "export-csv", str(csv_path), str(csv_path))
    assert code == 1 and "refusing to overwrite the source" in err
    assert csv_path.read_bytes() == before


@pytest.mark.parametrize("command", ["inspect", "audit", "export-csv"])
def test_help_has_examples(monkeypatch, capsys, command):
    code, out, err = run(monkeypatch, capsys, "data", command, "--help")
    assert code == 0
    assert "Examples" in out and f"ferkit data {command} " in out


def test_data_group_help_lists_commands(monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "data", "--help")
    assert code == 0
    for command in ("inspect", "audit", "export-csv", "Examples"):
        assert command in out


def test_real_process_exit_code_and_stderr(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ferkit", "data", "inspect",
                           str(tmp_path / "nope.csv")], capture_output=True, text=True,
                          env={**__import__("os").environ, "FERKIT_CACHE_DIR": str(tmp_path)})
    assert proc.returncode == 1
    assert proc.stderr == f"error: {tmp_path / 'nope.csv'}: no such file or folder\n"
    assert proc.stdout == ""


def test_library_does_not_print(tmp_path, capfd):
    from ferkit.data import load_dataset

    images, labels = make_faces(1)
    entries = kaggle_entries(images, labels, ["train"] * 7)
    good = entries["train/happy/Training_3.png"]
    entries["train/happy/zeros.png"] = np.zeros(10, np.uint8).tobytes()
    entries["train/happy/cut.png"] = good[: len(good) // 2]
    entries["train/happy/cut.jpg"] = kaggle_entries(images[:1], labels[:1], ["train"],
                                                    fmt="JPEG")["train/angry/Training_0.jpg"][:300]
    ds = load_dataset(write_zip(tmp_path / "q.zip", entries), skip_bad=True)
    assert len(ds.skipped) == 3
    out, err = capfd.readouterr()  # file-descriptor level: C libraries included
    assert out == "" and err == ""
