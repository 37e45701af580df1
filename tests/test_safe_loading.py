"""Loading never runs code from a file: a checkpoint whose pickle calls os.system is refused
unread through every command that takes a model, and the command never runs; every checkpoint
ferkit writes or ships (old last.pt files with a numpy RNG array included) still loads; an error
that quotes a file's name or bytes cannot drive the terminal."""

from __future__ import annotations

import os
import shlex
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import run_ferkit
from synth import make_csv_dataset
from test_training_helpers import TINY_KWARGS, TINY_MODEL, make_face_dataset, tiny_config

from ferkit.errors import ModelError, printable
from ferkit.models.checkpoint import DEFAULT_WEIGHTS, load_checkpoint, save_checkpoint
from ferkit.models.ensemble import save_ensemble
from ferkit.recognition.samples import SAMPLE_PHOTO
from ferkit.training import run_dir as rd
from ferkit.training.trainer import train

REFUSED = "loading it would run code"
OSC = "\x1b]0;pwned\x07"  # retitles the terminal window when printed raw
TINY = ["--model", TINY_MODEL] + [a for k, v in TINY_KWARGS.items()
                                  for a in ("--model-arg", f"{k}={v}")]


class RunsCode:
    """What a hostile checkpoint holds: unpickling it runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def hostile_checkpoint(path: Path, marker: Path, legacy: bool = False) -> Path:
    """A file that looks like a ferkit checkpoint and runs `touch marker` when unpickled."""
    torch.save({"format": "ferkit-checkpoint", "version": 2, "arch": "shallow-cnn",
                "classes": ["angry"], "state_dict": {}, "extra": RunsCode(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    return path


def rewrite_pickle(src: Path, dst: Path, old: bytes, new: bytes) -> Path:
    """A copy of a torch.save zip whose pickle has `old` replaced by `new` (protocol 2 writes
    globals as "module\\nname\\n" text, so names can be respelled byte for byte)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/data.pkl"):
                assert old in data
                data = data.replace(old, new)
            zout.writestr(info.filename, data)
    return dst


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "MARKER"
    return hostile_checkpoint(tmp_path / "evil.pt", marker), marker


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    return make_csv_dataset(tmp_path_factory.mktemp("data"), n_per_class=6)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))


def test_the_hostile_file_does_run_code_when_fully_unpickled(tmp_path):
    """The fixture is live: torch.load(weights_only=False), as ferkit used to, runs it."""
    marker = tmp_path / "ran"
    path = hostile_checkpoint(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_load_checkpoint_refuses_code_without_running_it(tmp_path, legacy):
    marker = tmp_path / "MARKER"
    path = hostile_checkpoint(tmp_path / "evil.pt", marker, legacy=legacy)
    with pytest.raises(ModelError, match=REFUSED) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "posix.system" in str(err.value)
    assert "weights_only=False" not in str(err.value)  # torch's advice is not passed on
    assert not marker.exists()


@pytest.mark.parametrize("command", ["evaluate", "predict", "train --teacher", "ensemble",
                                     "export", "serve"])
def test_every_command_that_takes_a_model_refuses_it(command, evil, csv_path, tmp_path,
                                                     monkeypatch, capsys):
    path, marker = evil
    args = {
        "evaluate": ["evaluate", "--model", path, "--data", csv_path, "--device", "cpu"],
        "predict": ["predict", SAMPLE_PHOTO, "--model", path, "--device", "cpu",
                    "--no-progress"],
        "train --teacher": ["train", "--data", csv_path, *TINY, "--teacher", path, "--epochs",
                            "1", "--device", "cpu", "--threads", "1", "--out", tmp_path / "run"],
        "ensemble": ["ensemble", path, "default", "--out", tmp_path / "ens.pt"],
        "export": ["export", path, "--out", tmp_path / "evil.onnx"],
        "serve": ["serve", "--model", path, "--device", "cpu", "--port", "1"],
    }[command]
    if command == "serve":
        pytest.importorskip("uvicorn", reason="the serve extra is not installed")
        import uvicorn

        def must_not_serve(*args, **kwargs):
            raise AssertionError("serve got as far as starting the server")

        monkeypatch.setattr(uvicorn, "run", must_not_serve)
        monkeypatch.setattr("ferkit.cli.serve._check_port", lambda host, port: None)
    code, _, err = run_ferkit(monkeypatch, capsys, *args)
    if command == "export" and "onnx extra" in err:
        pytest.skip("the onnx extra is not installed")
    assert code == 1 and REFUSED in err and str(path) in err, err
    assert not marker.exists()
    assert not (tmp_path / "ens.pt").exists()


def test_the_server_engine_refuses_it(evil):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from ferkit.serving.engine import Engine

    path, marker = evil
    with pytest.raises(ModelError, match=REFUSED):
        Engine(path, device="cpu", batching=False)
    assert not marker.exists()


def test_every_checkpoint_ferkit_writes_or_ships_loads(tmp_path):
    """default.pt, a run's best.pt and last.pt (EMA, teacher record), an ensemble and a
    bundled-style file with provenance: no global outside torch's plain allow-list."""
    dataset = make_face_dataset(n_per_class=6)
    teacher = train(tiny_config(tmp_path / "teacher", epochs=1), dataset)
    run = train(tiny_config(tmp_path / "run", epochs=1, ema=0.9,
                            teacher=str(teacher.run_dir / rd.BEST)), dataset)
    save_ensemble([run.run_dir, "default"], tmp_path / "ens.pt")
    last = load_checkpoint(run.run_dir / rd.LAST)
    save_checkpoint(tmp_path / "bundled.pt", {
        **{k: last[k] for k in ("version", "arch", "arch_kwargs", "classes", "normalization",
                                "config", "epoch", "metrics", "state_dict", "teacher")},
        "provenance": {"command": "ferkit train ...", "device": "cpu", "commit": "abc",
                       "date": "2026-12-07", "run": "run"}})
    files = [DEFAULT_WEIGHTS, run.run_dir / rd.BEST, run.run_dir / rd.LAST, tmp_path / "ens.pt",
             tmp_path / "bundled.pt"]
    for path in files:
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], path
        ckpt = load_checkpoint(path)
        assert ckpt["version"] == 2 and ckpt["state_dict"], path
    assert isinstance(last["rng"]["numpy"][1], list) and last["teacher"]["digest"]


def test_an_old_last_pt_with_a_numpy_rng_array_loads_and_resumes(tmp_path):
    """last.pt files before 2026-12 held np.random.get_state()'s uint32 array (pickled by numpy
    2 or, respelled, numpy 1): admitted by name, and the run resumes exactly as from a new one."""
    dataset = make_face_dataset(n_per_class=6)
    for name in ("new", "old", "numpy1"):
        train(tiny_config(tmp_path / name, epochs=2), dataset, on_epoch=lambda m: True)
    for name in ("old", "numpy1"):
        path = tmp_path / name / rd.LAST
        ckpt = torch.load(path, weights_only=True)
        kind, keys, *rest = ckpt["rng"]["numpy"]
        ckpt["rng"]["numpy"] = (kind, np.array(keys, dtype=np.uint32), *rest)
        torch.save(ckpt, path)
    old = tmp_path / "numpy1" / rd.LAST
    rewrite_pickle(old, tmp_path / "respelled.pt", b"numpy._core.multiarray\n",
                   b"numpy.core.multiarray\n").replace(old)
    assert "numpy.core.multiarray._reconstruct" in \
        torch.serialization.get_unsafe_globals_in_checkpoint(old)
    weights = {}
    for name in ("new", "old", "numpy1"):
        assert isinstance(load_checkpoint(tmp_path / name / rd.LAST)["rng"]["numpy"][1],
                          list if name == "new" else np.ndarray)
        resumed = train(tiny_config(tmp_path / name, resume=True), dataset)
        assert [m.epoch for m in resumed.history] == [1, 2]
        weights[name] = load_checkpoint(resumed.run_dir / rd.LAST)["state_dict"]
    for name in ("old", "numpy1"):
        assert all(torch.equal(weights["new"][k], weights[name][k]) for k in weights["new"])


def test_a_numpy_array_of_another_kind_is_still_refused(tmp_path):
    """The allow-list is the RNG's uint32 array only: float arrays, like any other object, stay
    out (no code runs, and the error says the file is unreadable)."""
    torch.save({"format": "ferkit-checkpoint", "x": np.zeros(3)}, tmp_path / "floats.pt")
    with pytest.raises(ModelError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "floats.pt")


def test_printable_escapes_what_drives_a_terminal():
    assert printable(f"bad {OSC} file") == "bad \\x1b]0;pwned\\x07 file"
    assert printable("a\rb\x9b2J\u202egnp.exe\u2028") == "a\\x0db\\x9b2J\\u202egnp.exe\\u2028"
    assert printable("visage é 表情 😀 tab\there") == "visage é 表情 😀 tab\\x09here"
    assert printable("two\nlines\tok", keep="\n\t") == "two\nlines\tok"
    assert printable("undecodable \udcff name") == "undecodable \\udcff name"
    once = printable(OSC)
    assert printable(once) == once  # already escaped text stays as it is
    assert printable(ModelError(f"{OSC}.pt: bad")) == "\\x1b]0;pwned\\x07.pt: bad"


def test_error_lines_quoting_a_file_cannot_drive_the_terminal(tmp_path, csv_path, monkeypatch,
                                                             capsys):
    named = tmp_path / f"model{OSC}.pt"  # a hostile file name
    named.write_bytes(b"\x1b]0;pwned\x07 not a checkpoint")
    code, _, err = run_ferkit(monkeypatch, capsys, "evaluate", "--model", named, "--data",
                              csv_path)
    assert code == 1 and "not a readable checkpoint" in err
    assert "\x1b" not in err and "\x07" not in err and "model\\x1b]0;pwned\\x07.pt" in err
    # a pickle naming a global whose name carries the escape sequence
    marker = tmp_path / "MARKER"
    crafted = rewrite_pickle(hostile_checkpoint(tmp_path / "evil.pt", marker),
                             tmp_path / "crafted.pt", b"posix\nsystem\n",
                             b"posix" + OSC.encode() + b"\nsystem\n")
    code, _, err = run_ferkit(monkeypatch, capsys, "evaluate", "--model", crafted, "--data",
                              csv_path)
    assert code == 1 and REFUSED in err and "\x1b" not in err and "\x07" not in err, err
    assert "posix\\x1b]0;pwned\\x07.system" in err and not marker.exists()
