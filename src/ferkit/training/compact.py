"""Compact resumable checkpoints: a last.pt small enough to carry a run to another machine.

A full last.pt holds the fp32 training weights, the EMA weights twice (the saved model and the
EMA's own copy) and the optimizer's fp32 state. The compact form keeps each tensor once and in
16 bits: weights in fp16 (bf16 for a tensor outside fp16's range), the optimizer state in bf16
(momenta and Adam's second moments span too wide a range for fp16). Scalars (Adam's step
count), integer buffers and random states stay exact. `--resume` reads it like a full one:
loading casts every tensor back to its fp32 parameter, so training continues close to, not
bit-identically with, an uninterrupted run.
"""

from __future__ import annotations

from typing import Any

import torch

COMPACT_KEY = "compact"  # the checkpoint entry that marks (and describes) the compact form
_EMA_WEIGHTS = "module."  # AveragedModel.state_dict(): n_averaged + module.<the model's keys>
_FP16_MAX = float(torch.finfo(torch.float16).max)


def compact_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A copy of a (last.pt) checkpoint payload in the compact form; other entries are shared."""
    if ckpt.get(COMPACT_KEY):
        return dict(ckpt)
    out = dict(ckpt)
    for key in ("state_dict", "train_state_dict"):
        if out.get(key) is not None:
            out[key] = {k: _half_weight(v) for k, v in out[key].items()}
    if out.get("ema") is not None:  # its weights are state_dict's: rebuilt by ema_state()
        out["ema"] = {k: v for k, v in out["ema"].items() if not k.startswith(_EMA_WEIGHTS)}
    if out.get("optimizer") is not None:
        opt = out["optimizer"]
        out["optimizer"] = {**opt, "state": {i: {k: _half_state(v) for k, v in s.items()}
                                             for i, s in opt["state"].items()}}
    out[COMPACT_KEY] = {"weights": "float16", "optimizer": "bfloat16", "ema": "state_dict"}
    return out


def ema_state(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The EMA's state dict for AveragedModel.load_state_dict, from a full or compact checkpoint."""
    ema = dict(ckpt["ema"])
    if not any(k.startswith(_EMA_WEIGHTS) for k in ema):
        ema.update({_EMA_WEIGHTS + k: v for k, v in ckpt["state_dict"].items()})
    return ema


def _half_weight(t: torch.Tensor) -> torch.Tensor:
    if not t.is_floating_point() or t.dim() == 0:  # e.g. the normalisation's mean and std
        return t
    fits = t.numel() == 0 or float(t.abs().max()) < _FP16_MAX
    return t.to(torch.float16 if fits else torch.bfloat16)


def _half_state(v: Any) -> Any:
    if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() > 0:
        return v.to(torch.bfloat16)
    return v  # scalars such as Adam's step count stay exact
