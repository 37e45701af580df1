"""Precision per device (ferkit.precision): the choice logic with the CPU's flags mocked, and a
real bf16 training step on the CPU that still saves fp32 weights."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from test_training_helpers import make_face_dataset, tiny_config

from ferkit import precision as P
from ferkit.errors import ConfigError
from ferkit.models.checkpoint import load_checkpoint
from ferkit.models.normalize import normalized
from ferkit.models.registry import create_model
from ferkit.training.config import TrainConfig
from ferkit.training.step_timing import workload_key
from ferkit.training.trainer import train

CPU = torch.device("cpu")
ZEN5 = frozenset({"avx512f", "avx512_bf16", "avx512_vnni"})
SAPPHIRE_RAPIDS = frozenset({"avx512f", "amx_tile", "amx_bf16"})
SKYLAKE_X = frozenset({"avx512f", "avx512bw", "avx512_vnni"})  # AVX-512, bf16 only emulated


@pytest.mark.parametrize("flags", [ZEN5, SAPPHIRE_RAPIDS])
def test_auto_takes_bf16_and_channels_last_on_cpus_with_native_bf16(flags):
    p = P.resolve_precision("auto", CPU, flags=flags)
    assert (p.dtype, p.name, p.channels_last) == (torch.bfloat16, "bf16", True)
    assert not P.resolve_precision("auto", CPU, channels_last=False, flags=flags).channels_last


@pytest.mark.parametrize("flags", [SKYLAKE_X, frozenset()])
def test_auto_stays_fp32_in_nchw_where_bf16_would_be_emulated(flags):
    p = P.resolve_precision("auto", CPU, flags=flags)
    assert (p.dtype, p.name, p.channels_last) == (None, "fp32", False)


def test_explicit_modes(caplog):
    assert P.resolve_precision("off", CPU, flags=ZEN5).name == "fp32"
    with caplog.at_level(logging.WARNING, logger="ferkit.precision"):
        forced = P.resolve_precision("bf16", CPU, flags=SKYLAKE_X)
    assert forced.name == "bf16" and "emulated" in caplog.text
    with pytest.raises(ConfigError, match="fp16 is for CUDA"):
        P.resolve_precision("fp16", CPU, flags=ZEN5)
    with pytest.raises(ConfigError, match="--amp 'fast'"):
        P.resolve_precision("fast", CPU)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: test\nflags\t\t: fpu sse2 avx512_bf16\n")
    monkeypatch.setattr(P, "_CPUINFO", info)
    P.cpu_flags.cache_clear()
    try:
        assert P.cpu_has_native_bf16() and "sse2" in P.cpu_flags()
        info.unlink()
        P.cpu_flags.cache_clear()
        assert P.cpu_flags() == frozenset() and not P.cpu_has_native_bf16()
    finally:
        P.cpu_flags.cache_clear()


def test_old_boolean_amp_configs_still_load():
    assert TrainConfig(amp=True).validated().amp == "auto"
    assert TrainConfig(amp=False).validated().amp == "off"
    with pytest.raises(ConfigError, match="--amp"):
        TrainConfig(amp="fast").validated()


def test_a_bf16_training_step_on_the_cpu_learns_and_saves_fp32_weights(tmp_path):
    ds = make_face_dataset(n_per_class=24)
    result = train(tiny_config(tmp_path / "run", amp="bf16", epochs=3, augment="none"), ds)
    assert result.history[-1].train_loss < result.history[0].train_loss
    execution = json.loads((tmp_path / "run" / "config.json").read_text())["execution"]
    assert execution["precision"] == "bf16" and execution["device"] == "cpu"
    ckpt = load_checkpoint(result.best_checkpoint)
    floats = [v for v in ckpt["state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float32 for v in floats)
    assert TrainConfig.from_dict(json.loads((tmp_path / "run" / "config.json").read_text()))


def test_native_bf16_flags_and_the_precision_label():
    assert P.native_bf16_flags(frozenset({"amx_bf16", "sse2", "avx512_bf16"})) == [
        "amx_bf16", "avx512_bf16"]
    assert P.native_bf16_flags(SKYLAKE_X) == [] and not P.cpu_has_native_bf16(SKYLAKE_X)
    assert P.resolve_precision("auto", CPU, flags=ZEN5).label == "bf16 + channels_last"
    assert P.resolve_precision("off", CPU, channels_last=False, flags=ZEN5).label == "fp32"


def _fake_timer(speeds: dict[str, float], calls: list[str] | None = None):
    """A StepTimer returning fixed images/s per label, slow on each label's first (warm-up) call."""
    seen: set[str] = set()

    def timer(p: P.Precision) -> float:
        if calls is not None:
            calls.append(p.label)
        first = p.label not in seen
        seen.add(p.label)
        return 1.0 if first else speeds[p.label]
    return timer


def test_cpu_candidates_follow_the_flags_and_the_format_switch():
    labels = [c.label for c in P.cpu_candidates(True, ZEN5)]
    assert labels == ["fp32", "fp32 + channels_last", "bf16", "bf16 + channels_last"]
    assert [c.label for c in P.cpu_candidates(True, SKYLAKE_X)] == ["fp32", "fp32 + channels_last"]
    assert [c.label for c in P.cpu_candidates(False, ZEN5)] == ["fp32", "bf16"]
    only = P.resolve_precision("auto", CPU, channels_last=False, flags=SKYLAKE_X,
                               timer=lambda p: pytest.fail("one candidate needs no timing"))
    assert only.label == "fp32" and not only.timed


def test_auto_on_the_cpu_keeps_the_fastest_timed_candidate(monkeypatch, tmp_path):
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path))
    # the Xeon without AMX this was found on: bf16 slower than fp32 despite avx512_bf16
    xeon = {"fp32": 1100, "fp32 + channels_last": 1342, "bf16": 889, "bf16 + channels_last": 899}
    calls: list[str] = []
    p = P.resolve_precision("auto", CPU, flags=ZEN5, timer=_fake_timer(xeon, calls))
    assert (p.dtype, p.channels_last) == (None, True)
    assert dict(p.timed) == xeon and "1.22x fp32" in p.why
    assert calls[:4] == calls[4:8] == list(xeon)  # one warm-up round, then interleaved rounds
    assert len(calls) == 4 * (1 + P.TIMING_ROUNDS)
    zen5 = {"fp32": 2706, "fp32 + channels_last": 2100, "bf16": 3000, "bf16 + channels_last": 4349}
    p = P.resolve_precision("auto", CPU, flags=ZEN5, timer=_fake_timer(zen5))
    assert p.label == "bf16 + channels_last"
    assert p.to_dict()["timed_images_per_s"] == zen5


def test_bf16_must_win_clearly_to_replace_fp32():
    close = {"fp32": 1000, "fp32 + channels_last": 900, "bf16": 800, "bf16 + channels_last": 1040}
    assert P.resolve_precision("auto", CPU, flags=ZEN5, timer=_fake_timer(close)).label == "fp32"
    clear = {**close, "bf16 + channels_last": 1060}
    chosen = P.resolve_precision("auto", CPU, flags=ZEN5, timer=_fake_timer(clear))
    assert chosen.label == "bf16 + channels_last"


def test_timings_are_cached_per_workload_and_a_bad_cache_is_timed_again(monkeypatch, tmp_path,
                                                                          caplog):
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path))
    speeds = {"fp32": 500, "fp32 + channels_last": 700}
    first = P.resolve_precision("auto", CPU, flags=SKYLAKE_X, timer=_fake_timer(speeds),
                                workload="model-a batch 128")
    assert "timed here:" in first.why

    def no_timing(p):
        raise AssertionError("timed again despite the cache")
    again = P.resolve_precision("auto", CPU, flags=SKYLAKE_X, timer=no_timing,
                                workload="model-a batch 128")
    assert again.label == first.label == "fp32 + channels_last" and "earlier" in again.why
    other = P.resolve_precision("auto", CPU, flags=SKYLAKE_X,
                                timer=_fake_timer({"fp32": 900, "fp32 + channels_last": 700}),
                                workload="model-b batch 128")
    assert other.label == "fp32"
    (tmp_path / "precision-timings.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="ferkit.precision"):
        retimed = P.resolve_precision("auto", CPU, flags=SKYLAKE_X, timer=_fake_timer(speeds),
                                      workload="model-a batch 128")
    assert retimed.label == "fp32 + channels_last" and "precision-timings.json" in caplog.text


def test_auto_times_the_real_step_without_touching_the_run(monkeypatch, tmp_path):
    """The first run times the candidates, the second reads the cache: if the timing used the
    run's random streams or weights, the two runs would differ."""
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))
    ds = make_face_dataset(n_per_class=16)
    runs = [train(tiny_config(tmp_path / f"run{i}", amp="auto", epochs=2), ds) for i in (1, 2)]
    assert [m.val_loss for m in runs[0].history] == [m.val_loss for m in runs[1].history]
    executions = [json.loads((tmp_path / f"run{i}" / "config.json").read_text())["execution"]
                  for i in (1, 2)]
    timed = executions[0]["timed_images_per_s"]
    assert timed == executions[1]["timed_images_per_s"] and "fp32" in timed
    assert all(v > 0 for v in timed.values())
    assert "timed here:" in executions[0]["why"] and "earlier" in executions[1]["why"]


def test_the_timing_key_is_the_architecture_and_batch_not_the_training_statistics():
    small = create_model("shallow-cnn", num_classes=7)
    full, holdout = normalized(small, 0.5077, 0.2550), normalized(small, 0.5081, 0.2547)
    assert workload_key(full, 128) == workload_key(holdout, 128)  # one timing per machine
    assert workload_key(full, 128) != workload_key(full, 64)
    other = normalized(create_model("ferkit-small", num_classes=7), 0.5077, 0.2550)
    assert workload_key(other, 128) != workload_key(full, 128)
