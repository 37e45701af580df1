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
from ferkit.training.config import TrainConfig
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
