"""Ensembles: several checkpoints' probabilities averaged, saved as ONE ordinary ferkit checkpoint.

An ensemble checkpoint has ``arch="ensemble"``, normalization mean 0 / std 1 (its input is the
face scaled to [0, 1]) and ``arch_kwargs = {"members": [{arch, arch_kwargs, normalization}, ...],
"weights": [...]}``; its state_dict holds every member's weights under ``members.<i>.``.
`checkpoint.build_model` rebuilds it like any other architecture, so ``Predictor.load``,
``ferkit evaluate --model ensemble.pt`` and everything else that loads a checkpoint take it
unchanged. Members may differ in architecture and normalisation, not in their class lists.

    from ferkit.models.ensemble import save_ensemble
    save_ensemble(["runs/ferkit-vgg", "runs/resnet18"], "ensemble.pt", weights=[2, 1])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ferkit.classes import NUM_CLASSES
from ferkit.errors import ModelError

ARCH = "ensemble"
_TINY = 1e-30  # floor for log(prob): keeps log finite where every member gives a class 0


def _create(arch: str, num_classes: int, arch_kwargs: dict[str, Any]) -> nn.Module:
    if arch == ARCH:
        return Ensemble(num_classes=num_classes, **arch_kwargs)
    from ferkit.models.registry import create_model

    return create_model(arch, num_classes=num_classes, **arch_kwargs)


class Ensemble(nn.Module):
    """Weighted mean of the members' softmax probabilities, returned as log-probabilities.

    Input: (B, 1, 48, 48) faces scaled to [0, 1] (i.e. normalised with mean 0, std 1). Each
    member gets the input re-normalised with its own mean/std. The output is
    ``log(sum_i w_i * softmax(member_i(x)))`` with the weights summing to 1, so a softmax of it
    (what Predictor does with any model's output) gives back the averaged probabilities.
    """

    def __init__(self, members: Sequence[dict[str, Any]], weights: Sequence[float] | None = None,
                 num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        if not members:
            raise ModelError("an ensemble needs at least one member")
        self.specs = [dict(m) for m in members]
        self.weights = normalise_weights(weights, len(members))
        self.means, self.stds = [], []
        modules = []
        for i, spec in enumerate(self.specs):
            try:
                norm = spec["normalization"]
                self.means.append(float(norm["mean"]))
                self.stds.append(float(norm["std"]))
                kwargs = dict(spec.get("arch_kwargs") or {})
                modules.append(_create(spec["arch"], num_classes, kwargs))
            except (KeyError, TypeError) as exc:
                raise ModelError(f"ensemble member {i}: malformed description ({exc!r})") from exc
        self.members = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = None
        for member, mean, std, w in zip(self.members, self.means, self.stds, self.weights,
                                        strict=True):
            p = member((x - mean) / std).float().softmax(dim=1) * w
            probs = p if probs is None else probs + p
        return probs.clamp_min(_TINY).log()


def normalise_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """Member weights scaled to sum to 1 (equal if None); wrong length or sign is a ModelError."""
    if weights is None:
        return [1.0 / n] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ModelError(f"{len(weights)} ensemble weights given for {n} models")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ModelError(f"ensemble weights must be non-negative with a positive sum, got "
                         f"{','.join(f'{w:g}' for w in weights)}")
    total = sum(weights)
    return [w / total for w in weights]


def build_ensemble(models: Sequence[str | Path | dict[str, Any]],
                   weights: Sequence[float] | None = None) -> dict[str, Any]:
    """The checkpoint payload (for save_checkpoint) of an ensemble of checkpoints or run dirs.

    `models` are anything `load_checkpoint` takes ("default", a run directory, a .pt file), or
    already-loaded checkpoint dicts. All must have the same classes in the same order.
    """
    from ferkit.models.checkpoint import load_checkpoint

    if not models:
        raise ModelError("an ensemble needs at least one model")
    ckpts = [m if isinstance(m, dict) else load_checkpoint(m) for m in models]
    names = [str(c.get("path") or m) for c, m in zip(ckpts, models, strict=True)]
    classes = list(ckpts[0]["classes"])
    for name, ckpt in zip(names[1:], ckpts[1:], strict=True):
        if list(ckpt["classes"]) != classes:
            raise ModelError(f"cannot ensemble {names[0]} and {name}: different classes "
                             f"({', '.join(classes)} vs {', '.join(ckpt['classes'])})")
    w = normalise_weights(weights, len(ckpts))
    specs = []
    for name, ckpt in zip(names, ckpts, strict=True):
        norm = ckpt.get("normalization") or {}
        if "mean" not in norm or "std" not in norm:
            raise ModelError(f"{name}: checkpoint has no normalization mean/std")
        specs.append({"arch": ckpt["arch"], "arch_kwargs": dict(ckpt.get("arch_kwargs") or {}),
                      "normalization": {"mean": float(norm["mean"]), "std": float(norm["std"])}})
    ensemble = Ensemble(specs, w, num_classes=len(classes))
    for i, (name, ckpt) in enumerate(zip(names, ckpts, strict=True)):
        try:
            ensemble.members[i].load_state_dict(ckpt["state_dict"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ModelError(f"{name}: weights do not fit arch {ckpt['arch']!r} ({first})") from exc
    sources = [{"path": name, "arch": c["arch"], "epoch": c.get("epoch"),
                "metrics": c.get("metrics") or {}, "weight": wi}
               for name, c, wi in zip(names, ckpts, w, strict=True)]
    return {
        "arch": ARCH,
        "arch_kwargs": {"members": specs, "weights": w},
        "classes": classes,
        "normalization": {"mean": 0.0, "std": 1.0},
        "config": {"ensemble": {"members": sources, "weights": w}},
        "epoch": None,
        "metrics": {},
        "state_dict": ensemble.state_dict(),
    }


def save_ensemble(models: Sequence[str | Path | dict[str, Any]], out: str | Path,
                  weights: Sequence[float] | None = None) -> dict[str, Any]:
    """Build the ensemble of `models` and write it to `out` (atomically); returns the payload."""
    from ferkit.models.checkpoint import save_checkpoint

    payload = build_ensemble(models, weights)
    save_checkpoint(Path(out), payload)
    return payload
