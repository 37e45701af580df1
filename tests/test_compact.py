"""Compact resumable checkpoints (--compact-last): each tensor once, in 16 bits; --resume from
one continues close to an uninterrupted run, and the file serves inference like a full one."""

from __future__ import annotations

import io

import pytest
import torch
from test_training_helpers import make_face_dataset, tiny_config

from ferkit.models.checkpoint import load_checkpoint
from ferkit.models.predictor import Predictor
from ferkit.training import run_dir as rd
from ferkit.training.compact import COMPACT_KEY, compact_checkpoint, ema_state
from ferkit.training.config import TrainConfig
from ferkit.training.trainer import train

RECIPE = {"ema": 0.9, "optimizer": "adamw", "lr": 3e-3, "epochs": 4}


class _Killed(Exception):
    pass


def _kill_after_epoch_2(m):
    if m.epoch == 2:
        raise _Killed


def _size(payload: dict) -> int:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.tell()


@pytest.fixture(scope="module")
def dataset():
    return make_face_dataset(n_per_class=24)


@pytest.fixture(scope="module")
def full(tmp_path_factory, dataset):
    return train(tiny_config(tmp_path_factory.mktemp("runs") / "full", **RECIPE), dataset)


def test_the_compact_form_keeps_each_tensor_once_in_16_bits(full):
    ckpt = load_checkpoint(full.run_dir / rd.LAST)
    small = compact_checkpoint(ckpt)
    assert small[COMPACT_KEY]
    weights = {k: v for k, v in small["state_dict"].items() if v.is_floating_point() and v.dim()}
    assert weights and all(v.dtype == torch.float16 for v in weights.values())
    for key in ("normalize.mean", "normalize.std"):  # scalars stay exact
        assert torch.equal(small["state_dict"][key], ckpt["state_dict"][key])
    states = [s for s in small["optimizer"]["state"].values()]
    assert all(s["exp_avg"].dtype == torch.bfloat16 for s in states)
    assert all(torch.equal(s["step"], f["step"])  # Adam's step count stays exact
               for s, f in zip(states, ckpt["optimizer"]["state"].values(), strict=True))
    assert not any(k.startswith("module.") for k in small["ema"])
    rebuilt, original = ema_state(small), ema_state(ckpt)
    assert rebuilt.keys() == original.keys()
    for k, v in original.items():
        assert torch.allclose(rebuilt[k].float(), v.float(), rtol=1e-3, atol=1e-4), k
    assert torch.equal(small["rng"]["torch"], ckpt["rng"]["torch"])
    assert _size(small) < 0.45 * _size(ckpt)
    assert compact_checkpoint(small) == small  # compacting twice changes nothing


def test_resume_from_a_compact_last_pt_ends_close_to_an_uninterrupted_run(tmp_path, dataset,
                                                                          full):
    with pytest.raises(_Killed):
        train(tiny_config(tmp_path / "cut", compact_last=True, **RECIPE), dataset,
              on_epoch=_kill_after_epoch_2)
    cut = load_checkpoint(tmp_path / "cut" / rd.LAST)
    assert cut[COMPACT_KEY] and cut["epoch"] == 2
    # resumed as on another machine: another thread count, a full last.pt from now on
    resumed = train(TrainConfig(out=str(tmp_path / "cut"), resume=True, device="cpu", threads=2),
                    dataset)
    assert [m.epoch for m in resumed.history] == [1, 2, 3, 4]
    assert COMPACT_KEY not in load_checkpoint(resumed.run_dir / rd.LAST)
    assert abs(resumed.history[-1].val_acc - full.history[-1].val_acc) <= 0.1
    w_full = load_checkpoint(full.run_dir / rd.LAST)["state_dict"]
    w_resumed = load_checkpoint(resumed.run_dir / rd.LAST)["state_dict"]
    keys = [k for k, v in w_full.items() if v.is_floating_point() and v.dim()]
    flat_full = torch.cat([w_full[k].flatten() for k in keys])
    flat_resumed = torch.cat([w_resumed[k].float().flatten() for k in keys])
    diff = float((flat_resumed - flat_full).norm() / flat_full.norm())
    assert diff < 0.01  # close (2e-4 when written), not bit-identical


def test_a_compact_last_pt_classifies_like_the_full_one(tmp_path, full):
    small = tmp_path / "small.pt"
    torch.save(compact_checkpoint(load_checkpoint(full.run_dir / rd.LAST)), small)
    faces = (torch.rand(16, 48, 48) * 255).to(torch.uint8).numpy()
    p_full = Predictor.load(full.run_dir / rd.LAST, device="cpu").predict_proba(faces)
    p_small = Predictor.load(small, device="cpu").predict_proba(faces)
    assert abs(p_full - p_small).max() < 2e-3
