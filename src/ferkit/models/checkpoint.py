"""Self-contained checkpoints: the schema, its reader and writer, and the version-1 converter.

A checkpoint is a dict saved with torch.save, built by `checkpoint_payload` (version 2):

    format="ferkit-checkpoint", version=2,
    arch          the architecture's registry name ("ensemble" included: a registry entry too)
    arch_kwargs   its keyword arguments (never pretrained/weights: the state_dict replaces those)
    classes       class names, in the order of the model's outputs
    state_dict    of the NormalizedModel: `normalize.mean`, `normalize.std` (the training set's
                  statistics, so every consumer passes [0, 1] pixels) and `net.*` (the
                  architecture's own tensors)
    normalization {"mean", "std"}: the same statistics, readable without torch tensors
    config        the training config as a dict (ensembles: their members)
    epoch, metrics  the epoch and its EpochMetrics (names as in metrics.jsonl: val_acc, ...)

and, for resuming (last.pt), optional optimizer / scheduler / ema / rng / ... states, a
`teacher` record, or a bundled model's `provenance`. Version 1 (before 2026-12) stored the bare
architecture's state_dict and applied the normalisation outside the model; `load_checkpoint`
converts such files on load (the bundled default.pt among them), giving the same
probabilities. A payload handed to `save_checkpoint` without a version is taken to be in the
version-1 layout, as hand-built payloads were, and is converted when it is loaded.

Loading never runs code from the file: torch.load(weights_only=True) unpickles tensors and plain
values (dicts, lists, tuples, strings, numbers) only, plus the numpy uint32 array of
np.random.get_state() that last.pt files held before 2026-12 (newer ones store it as a list).
A file whose pickle names anything else (e.g. os.system) is refused unread.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from ferkit.errors import ModelError, printable
from ferkit.models.normalize import NormalizedModel
from ferkit.models.registry import create_model
from ferkit.run_files import BEST, CHECKPOINTS, LAST

FORMAT = "ferkit-checkpoint"
VERSION = 2
# accuracy metrics, in the order a summary (e.g. the server's /v1/model) prefers them
ACCURACY_METRICS = ("test_acc", "val_acc")
# metric names hand-built version-1 checkpoints used -> the one naming (EpochMetrics')
_V1_METRIC_NAMES = {"test_accuracy": "test_acc", "accuracy": "test_acc", "acc": "test_acc",
                    "val_accuracy": "val_acc", "best_val_accuracy": "best_val_acc"}
# Version-1 transfer models un-normalised their input with these (FER2013's) statistics unless
# given in_mean/in_std; the converter folds that into the stored normalisation.
_V1_TRANSFER_ARCHS = ("efficientnet-lite0", "vgg16")
_V1_TRANSFER_STATS = (0.5077, 0.2551)
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "default.pt"
# The numpy names (as numpy 2 and numpy 1 pickle them) an older last.pt needs for the uint32 array
# of its np.random.get_state(); weights_only loading admits these and nothing else beyond torch's
# own allow-list of tensors and plain values.
_LEGACY_RNG_NAMES = ("numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct",
                     "numpy.ndarray", "numpy.dtype", "numpy.dtypes.UInt32DType")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")  # the name torch's weights-only refusal quotes


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Save atomically (temp file, then rename): a kill or a full disk never leaves half a
    checkpoint, and the previous file at `path` stays intact.

    The payload is serialised in memory first, so a failed write surfaces as the OS error it is
    (e.g. ENOSPC), not as torch's opaque 'unexpected pos' from inside its zip writer.
    """
    path = Path(path)
    payload = {"format": FORMAT, **payload, "version": int(payload.get("version", 1))}
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
        for name in CHECKPOINTS:
            if (path / name).exists():
                return path / name
        raise ModelError(f"{path}: run directory holds no {BEST} or {LAST}")
    if not path.exists():
        raise ModelError(f"{path}: no such checkpoint or run directory (or use 'default')")
    return path


def checkpoint_payload(*, arch: str, classes: list[str] | tuple[str, ...],
                       state_dict: dict[str, torch.Tensor],
                       arch_kwargs: dict[str, Any] | None = None,
                       config: dict[str, Any] | None = None, epoch: int | None = None,
                       metrics: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A version-2 checkpoint of a NormalizedModel's `state_dict` (what save_checkpoint writes).

    `extra` holds the optional entries: resume states, `teacher`, `provenance`.
    """
    try:
        norm = {"mean": float(state_dict["normalize.mean"]),
                "std": float(state_dict["normalize.std"])}
    except KeyError as exc:
        raise ModelError(f"arch {arch!r}: the state_dict is not a NormalizedModel's "
                         "(no normalize.mean/std)") from exc
    return {"format": FORMAT, "version": VERSION, "arch": arch,
            "arch_kwargs": dict(arch_kwargs or {}), "classes": list(classes),
            "normalization": norm, "config": dict(config or {}), "epoch": epoch,
            "metrics": dict(metrics or {}), "state_dict": state_dict, **extra}


def load_checkpoint(spec: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint at `spec` ('default', a run directory or a file) in the version-2 layout."""
    path = resolve_checkpoint_path(spec)
    if path.suffix.lower() == ".onnx":
        raise ModelError(f"{path}: ONNX models are not supported here: use the checkpoint "
                         "(the .pt file or run directory it was exported from)")
    ckpt = _read(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelError(f"{path}: not a ferkit checkpoint (no format={FORMAT!r} entry)")
    version = ckpt.get("version", 1)
    if version == 1:
        ckpt = upgrade_v1(ckpt, str(path))
    elif version != VERSION:
        raise ModelError(f"{path}: checkpoint format version {version}; this ferkit reads "
                         f"versions 1 and {VERSION} (a newer ferkit wrote it?)")
    ckpt["path"] = str(path)
    return ckpt


def _read(path: Path, map_location: str | torch.device) -> Any:
    """torch.load without running code: weights_only, admitting only the legacy RNG array's numpy
    names. A refused global is reported as such (not as corruption), and torch's own message,
    which quotes the file and suggests weights_only=False, is never passed on."""
    try:
        with torch.serialization.safe_globals(_legacy_rng_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # what weights_only raises for a refused pickle
        unsafe = _unsafe_globals(path, str(exc))
        if unsafe:
            raise ModelError(
                f"{path}: refused: loading it would run code (its pickle calls "
                f"{printable(', '.join(unsafe))}); ferkit loads only checkpoints of tensors "
                "and plain values") from None
        detail = printable(_weights_only_detail(str(exc)))[:300]
        raise ModelError(f"{path}: not a readable checkpoint ({detail})") from None
    except Exception as exc:  # torch raises many types for corrupt or truncated files
        detail = printable(f"{exc.__class__.__name__}: {exc}")[:300]
        raise ModelError(f"{path}: not a readable checkpoint ({detail})") from exc


def _legacy_rng_globals() -> list[Any]:
    """The objects behind _LEGACY_RNG_NAMES, for torch.serialization.safe_globals."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct
    return [(_reconstruct, _LEGACY_RNG_NAMES[0]), (_reconstruct, _LEGACY_RNG_NAMES[1]),
            np.ndarray, np.dtype, (type(np.dtype(np.uint32)), _LEGACY_RNG_NAMES[4])]


def _unsafe_globals(path: Path, message: str) -> list[str]:
    """The globals (functions, classes) a refused checkpoint's pickle names beyond what a ferkit
    checkpoint may hold: listed from the zip's pickle, or the one torch's refusal names (the
    legacy, non-zip format)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not the zip format torch.save writes
        names = _GLOBAL.findall(message)
    return sorted({n for n in names if n not in _LEGACY_RNG_NAMES})


def _weights_only_detail(message: str) -> str:
    """The specific line of torch's weights-only refusal (e.g. "Unsupported operand 27"),
    without its advice to load the file with weights_only=False."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    skip = ("Weights only load failed", "Please file an issue", "Check the documentation")
    detail = [ln.removeprefix("WeightsUnpickler error:").strip() for ln in lines
              if not ln.startswith(skip)]
    return "; ".join(d for d in detail if d) or "not a pickle torch.save wrote"


def build_model(ckpt: dict[str, Any]) -> NormalizedModel:
    """Rebuild the (normalised) model of a version-2 checkpoint and load its weights, in eval mode.

    The result takes (B, 1, 48, 48) faces in [0, 1] and returns logits (log-probabilities for an
    ensemble).
    """
    net = create_model(ckpt["arch"], num_classes=len(ckpt["classes"]),
                       **(ckpt.get("arch_kwargs") or {}))
    model = NormalizedModel(net)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def accuracy_metric(metrics: dict[str, Any] | None) -> tuple[str | None, float | None]:
    """(name, value) of the accuracy a checkpoint (or an ONNX export's metadata) reports:
    test_acc, else val_acc, else none; older metric names count under their new ones."""
    metrics = canonical_metrics(metrics)
    for key in ACCURACY_METRICS:
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return key, float(value)
    return None, None


# ---------------------------------------------------------------------------------------------
# version 1 -> 2


def upgrade_v1(ckpt: dict[str, Any], where: str = "checkpoint") -> dict[str, Any]:
    """A version-1 checkpoint dict in the version-2 layout (a new dict; tensors are shared).

    The bare architecture's tensors move under `net.`, its normalisation into `normalize.*`
    buffers (ensemble members: each member's own), the weights of resume states likewise, and
    metric names to the one naming.
    """
    try:
        norm = ckpt["normalization"]
        mean, std = float(norm["mean"]), float(norm["std"])
        arch, kwargs = ckpt["arch"], dict(ckpt.get("arch_kwargs") or {})
        state = ckpt["state_dict"]
    except (KeyError, TypeError) as exc:
        raise ModelError(f"{where}: malformed version-1 checkpoint ({exc!r})") from exc
    new_kwargs, new_mean, new_std = _v1_model(arch, dict(kwargs), mean, std)

    def convert(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return _v1_state(arch, kwargs, mean, std, tensors)

    out = {**ckpt, "version": VERSION, "arch_kwargs": new_kwargs,
           "normalization": {"mean": new_mean, "std": new_std}, "state_dict": convert(state)}
    if ckpt.get("train_state_dict") is not None:
        out["train_state_dict"] = convert(ckpt["train_state_dict"])
    if ckpt.get("ema") is not None:  # AveragedModel: n_averaged + module.<model's keys>
        ema = ckpt["ema"]
        inner = {k[len("module."):]: v for k, v in ema.items() if k.startswith("module.")}
        out["ema"] = {**{k: v for k, v in ema.items() if not k.startswith("module.")},
                      **{f"module.{k}": v for k, v in convert(inner).items()}}
    out["metrics"] = canonical_metrics(ckpt.get("metrics"))
    return out


def _v1_model(arch: str, kwargs: dict[str, Any], mean: float, std: float
              ) -> tuple[dict[str, Any], float, float]:
    """(arch_kwargs, mean, std) of the version-2 model equal to a version-1 one."""
    if arch == "ensemble":
        members = []
        for spec in kwargs.get("members") or []:
            norm = spec["normalization"]
            m_kwargs, m_mean, m_std = _v1_model(spec["arch"], dict(spec.get("arch_kwargs") or {}),
                                                float(norm["mean"]), float(norm["std"]))
            members.append({**spec, "arch_kwargs": m_kwargs,
                            "normalization": {"mean": m_mean, "std": m_std}})
        return {**kwargs, "members": members}, mean, std
    if arch in _V1_TRANSFER_ARCHS:
        # v1 fed (p - mean) / std and the model computed x * in_std + in_mean: that is
        # (p - a) / b with b = std / in_std, a = mean - in_mean * b; v2 models take pixels.
        in_mean = float(kwargs.pop("in_mean", _V1_TRANSFER_STATS[0]))
        in_std = float(kwargs.pop("in_std", _V1_TRANSFER_STATS[1]))
        b = std / in_std
        return kwargs, mean - in_mean * b, b
    return kwargs, mean, std


def _v1_state(arch: str, kwargs: dict[str, Any], mean: float, std: float,
              state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A bare version-1 model's state_dict (normalised with `mean`, `std` outside the model) as
    its NormalizedModel's."""
    _, mean, std = _v1_model(arch, dict(kwargs), mean, std)
    inner = dict(state)
    if arch == "ensemble":  # members.<i>.<key> -> members.<i>.net.<key> + members.<i>.normalize.*
        inner = {}
        for i, spec in enumerate(kwargs.get("members") or []):
            prefix = f"members.{i}."
            norm = spec["normalization"]
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            sub = _v1_state(spec["arch"], spec.get("arch_kwargs") or {}, float(norm["mean"]),
                            float(norm["std"]), sub)
            inner.update({prefix + k: v for k, v in sub.items()})
    return {"normalize.mean": torch.tensor(mean), "normalize.std": torch.tensor(std),
            **{f"net.{k}": v for k, v in inner.items()}}


def canonical_metrics(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of `metrics` with the names hand-built version-1 checkpoints used renamed to the
    one naming (test_accuracy -> test_acc, best_val_accuracy -> best_val_acc, ...)."""
    out = dict(metrics or {})
    for old, new in _V1_METRIC_NAMES.items():
        if old in out and new not in out:
            out[new] = out.pop(old)
    return out
