"""Self-contained checkpoints: weights plus everything needed to rebuild and use the model.

A checkpoint is a dict saved with torch.save:
    format="ferkit-checkpoint", version, arch, arch_kwargs, classes, normalization {"mean", "std"},
    config (the training config as a dict), epoch, metrics, state_dict,
and, for resuming, optional optimizer / scheduler / ema / rng states.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ferkit.errors import ModelError
from ferkit.models.registry import create_model

FORMAT = "ferkit-checkpoint"
VERSION = 1
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "default.pt"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Save atomically (temp file, then rename): a kill or a full disk never leaves half a
    checkpoint, and the previous file at `path` stays intact.

    The payload is serialised in memory first, so a failed write surfaces as the OS error it is
    (e.g. ENOSPC), not as torch's opaque 'unexpected pos' from inside its zip writer.
    """
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        full = " (the disk is full)" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        kept = f"; the previous {path.name} is kept" if path.exists() else ""
        raise ModelError(f"{path}: cannot write the checkpoint{full}: "
                         f"{exc.strerror or exc}{kept}") from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def resolve_checkpoint_path(spec: str | Path) -> Path:
    """'default' -> bundled weights; a run directory -> its best.pt; else the file itself."""
    if str(spec) == "default":
        if not DEFAULT_WEIGHTS.exists():
            raise ModelError(f"no bundled default model: {DEFAULT_WEIGHTS} is missing")
        return DEFAULT_WEIGHTS
    path = Path(spec)
    if path.is_dir():
        for name in ("best.pt", "last.pt", "model.pt"):
            if (path / name).exists():
                return path / name
        raise ModelError(f"{path}: run directory holds no best.pt or last.pt")
    if not path.exists():
        raise ModelError(f"{path}: no such checkpoint or run directory (or use 'default')")
    return path


def load_checkpoint(spec: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = resolve_checkpoint_path(spec)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for corrupt files
        reason = f"{exc.__class__.__name__}: {exc}"
        raise ModelError(f"{path}: not a readable checkpoint ({reason})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelError(f"{path}: not a ferkit checkpoint (no format={FORMAT!r} entry)")
    ckpt["path"] = str(path)
    return ckpt


def build_model(ckpt: dict[str, Any]) -> nn.Module:
    """Rebuild the architecture named in a checkpoint and load its weights."""
    if ckpt["arch"] == "ensemble":  # `ferkit ensemble` output: members' mean probabilities
        from ferkit.models.ensemble import Ensemble

        model = Ensemble(num_classes=len(ckpt["classes"]), **ckpt.get("arch_kwargs", {}))
    else:
        model = create_model(ckpt["arch"], num_classes=len(ckpt["classes"]),
                             **ckpt.get("arch_kwargs", {}))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
