"""Ensembles: several checkpoints' probabilities averaged, saved as ONE ordinary ferkit checkpoint.

An ensemble checkpoint has ``arch="ensemble"`` (the registry entry in
ferkit.models.zoo.ensemble), normalization mean 0 / std 1 (its input is the face in [0, 1]) and
``arch_kwargs = {"members": [{arch, arch_kwargs, normalization}, ...], "weights": [...]}``; its
state_dict holds every member's normalised model under ``net.members.<i>.``. `build_model`
rebuilds it like any other architecture, so ``Predictor.load``, ``ferkit evaluate --model
ensemble.pt`` and everything else that loads a checkpoint take it unchanged. Members may differ
in architecture and normalisation, not in their class lists. A member's calibration temperature
is not carried over (the members' raw probabilities are averaged): calibrate the ensemble itself
(`ferkit calibrate --model ensemble.pt ...`, see ferkit.evaluation.calibration).

    from ferkit.models.ensemble import save_ensemble
    save_ensemble(["runs/ferkit-vgg", "runs/resnet18"], "ensemble.pt", weights=[2, 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ferkit.errors import ModelError
from ferkit.models.checkpoint import checkpoint_payload, load_checkpoint, save_checkpoint
from ferkit.models.normalize import NormalizedModel
from ferkit.models.zoo.ensemble import ARCH, Ensemble, normalise_weights

__all__ = ["ARCH", "Ensemble", "build_ensemble", "normalise_weights", "save_ensemble"]


def build_ensemble(models: Sequence[str | Path | dict[str, Any]],
                   weights: Sequence[float] | None = None) -> dict[str, Any]:
    """The checkpoint payload (for save_checkpoint) of an ensemble of checkpoints or run dirs.

    `models` are anything `load_checkpoint` takes ("default", a run directory, a .pt file), or
    already-loaded checkpoint dicts. All must have the same classes in the same order.
    """
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
    specs = [{"arch": c["arch"], "arch_kwargs": dict(c.get("arch_kwargs") or {}),
              "normalization": dict(c["normalization"])} for c in ckpts]
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
    return checkpoint_payload(arch=ARCH, arch_kwargs={"members": specs, "weights": w},
                              classes=classes, state_dict=NormalizedModel(ensemble).state_dict(),
                              config={"ensemble": {"members": sources, "weights": w}})


def save_ensemble(models: Sequence[str | Path | dict[str, Any]], out: str | Path,
                  weights: Sequence[float] | None = None) -> dict[str, Any]:
    """Build the ensemble of `models` and write it to `out` (atomically); returns the payload."""
    payload = build_ensemble(models, weights)
    save_checkpoint(Path(out), payload)
    return payload
