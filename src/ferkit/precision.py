"""Training precision and memory format per device: on the CPU, chosen by timing the real step.

bf16 autocast pays only where bf16 is computed fast: CUDA GPUs (Ampere on) and some CPUs with
AVX512_BF16 or AMX_BF16 units (ferkit-small: 1.9x fp32 end to end on 2 Xeon cores with AMX,
1.6x on a Zen 5). The flags alone do not say it: on 2 cores of an Intel Xeon (Emerald Rapids,
AVX512_BF16 without AMX in its VM) oneDNN's bf16 convolutions run no faster than fp32 and the bf16
step is 0.67x the fp32 channels_last one; on AVX-512 CPUs without those units bf16 is emulated
and slower still. channels_last is no safer a guess: for fp32 it was slower than NCHW on a Zen 5
and 1.2x faster on both Xeons. So `--amp auto` on the CPU times a few training steps of the
run's own model in each candidate (bf16 only where the flags promise native units) and keeps the
fastest, cached per CPU, torch, threads, model and batch under $FERKIT_CACHE_DIR.

Whatever runs, weights and checkpoints stay fp32: autocast changes only how a step computes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ferkit.errors import ConfigError

log = logging.getLogger(__name__)

AMP_MODES = ("auto", "bf16", "fp16", "off")
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# bf16 must beat the fastest fp32 candidate by this share to be chosen: fp32 is exact, and a
# smaller win is within the noise of a few timed steps.
BF16_MIN_GAIN = 0.05
TIMING_ROUNDS = 3  # timed steps per candidate, interleaved, after one warm-up step each
_CPUINFO = Path("/proc/cpuinfo")
_TIMINGS_FILE = "precision-timings.json"  # under ferkit.data.cache.cache_dir()

# Images/s of one training step in a given precision (see ferkit.training.step_timing).
StepTimer = Callable[["Precision"], float]


@dataclass(frozen=True)
class Precision:
    """How the training step computes: autocast dtype (None = fp32) and memory format."""

    dtype: torch.dtype | None
    channels_last: bool
    why: str  # one short phrase for the run header
    # --amp auto on the CPU: images/s of each candidate timed, by label (empty: not timed)
    timed: tuple[tuple[str, float], ...] = ()

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")

    @property
    def label(self) -> str:
        """'bf16 + channels_last', 'fp32': how the benches print a precision."""
        return precision_label(self.name, self.channels_last)

    def autocast(self, device: torch.device):
        """The autocast context for one forward pass (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"precision": self.name, "channels_last": self.channels_last,
                                  "why": self.why}
        if self.timed:
            out["timed_images_per_s"] = dict(self.timed)
        return out


def precision_label(name: str, channels_last: bool) -> str:
    """'bf16 + channels_last' from a precision's name and format (e.g. a config.json record)."""
    return name + (" + channels_last" if channels_last else "")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none: macOS, Windows)."""
    return frozenset(_cpuinfo_field(("flags", "Features")).split())


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform module says."""
    return _cpuinfo_field(("model name",)).strip() or platform.processor() or platform.machine()


def _cpuinfo_field(keys: tuple[str, ...]) -> str:
    """The first /proc/cpuinfo line's value for one of `keys` ('' where there is none)."""
    try:
        text = _CPUINFO.read_text(errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value
    return ""


def native_bf16_flags(flags: frozenset[str] | None = None) -> list[str]:
    """This CPU's flags (sorted) that say it computes bf16 in hardware; none: emulated or none."""
    flags = cpu_flags() if flags is None else flags
    return sorted(f for f in NATIVE_BF16_CPU_FLAGS if f in flags)


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU computes bf16 in hardware (AVX512_BF16 or AMX_BF16 on x86)."""
    return bool(native_bf16_flags(flags))


def resolve_precision(amp: str, device: torch.device, channels_last: bool = True,
                      flags: frozenset[str] | None = None, timer: StepTimer | None = None,
                      workload: str = "") -> Precision:
    """The precision for --amp auto|bf16|fp16|off on `device`; channels_last=False forbids it.

    auto: bf16 on CUDA (fp16 on GPUs without bf16). On the CPU with a `timer`, the fastest of
    cpu_candidates() by timing (cached under `workload`, a key naming the model and batch); without
    one, the flags' guess: bf16 + channels_last with native bf16 units, else fp32 in NCHW.
    """
    if amp not in AMP_MODES:
        raise ConfigError(f"--amp {amp!r}: expected one of {', '.join(AMP_MODES)}")
    kind = device.type
    if amp == "off" or kind == "mps":
        why = "--amp off" if amp == "off" else "autocast is not used on mps"
        return Precision(None, channels_last and kind == "cuda", why)
    if kind == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if amp == "fp16" or (amp == "auto" and not bf16_ok):
            return Precision(torch.float16, channels_last, "fp16 autocast with loss scaling")
        return Precision(torch.bfloat16, channels_last, "bf16 on the GPU")
    if amp == "fp16":
        raise ConfigError("--amp fp16 is for CUDA GPUs; on the CPU use --amp bf16 or off")
    native = cpu_has_native_bf16(flags)
    if amp == "auto" and timer is not None:
        return timed_choice(cpu_candidates(channels_last, flags), timer, workload)
    if amp == "auto" and not native:
        return Precision(None, False, f"this CPU has no native bf16 ({platform.machine()})")
    if not native:
        log.warning("--amp bf16 on a CPU without native bf16 units: emulated, slower than fp32")
    why = "native bf16 on this CPU" if native else "--amp bf16 (emulated on this CPU)"
    return Precision(torch.bfloat16, channels_last, why)


def cpu_candidates(channels_last: bool = True,
                   flags: frozenset[str] | None = None) -> list[Precision]:
    """What --amp auto times on the CPU: fp32, and bf16 only with native bf16 units (emulated
    bf16 is always slower), each in NCHW and (unless forbidden) channels_last."""
    dtypes = [None, torch.bfloat16] if cpu_has_native_bf16(flags) else [None]
    formats = [False, True] if channels_last else [False]
    return [Precision(d, cl, "") for d in dtypes for cl in formats]


def timed_choice(candidates: list[Precision], timer: StepTimer, workload: str = "",
                 rounds: int = TIMING_ROUNDS) -> Precision:
    """The fastest candidate by `timer` (images/s of a step): one warm-up step each, then
    `rounds` interleaved timed steps, the best of each counted; bf16 needs BF16_MIN_GAIN over
    fp32.

    With a `workload` key the result is kept in the cache directory (per CPU, flags, torch and
    threads too) and reused, so a run times once per machine and model; `timer` is then unused.
    """
    if len(candidates) == 1:
        return replace(candidates[0], why="the only candidate on this CPU")
    labels = [c.label for c in candidates]
    key = _timing_key(workload, labels) if workload else ""
    table = _read_timings() if key else {}
    speeds = _speeds_of(table.get(key), labels)
    timed_now = speeds is None
    if speeds is None:
        speeds = {c.label: 0.0 for c in candidates}
        for round_ in range(rounds + 1):
            for c in candidates:
                images_per_s = timer(c)
                if round_:  # round 0 warms up (oneDNN builds its kernels on first use)
                    speeds[c.label] = max(speeds[c.label], images_per_s)
        if key:
            _write_timings({**table, key: speeds})
    fastest = max(candidates, key=lambda c: speeds[c.label])
    fp32 = max((c for c in candidates if c.dtype is None), key=lambda c: speeds[c.label])
    if fastest.dtype is not None and (speeds[fastest.label]
                                      < (1 + BF16_MIN_GAIN) * speeds[fp32.label]):
        fastest = fp32
    ratio = speeds[fastest.label] / speeds[candidates[0].label]
    why = (f"fastest of {len(candidates)} timed here{'' if timed_now else ' earlier'}: "
           f"{ratio:.2f}x {candidates[0].label}")
    log.debug("--amp auto on the CPU: %s", ", ".join(
        f"{label} {speeds[label] / speeds[candidates[0].label]:.2f}x" for label in labels))
    return replace(fastest, why=why, timed=tuple((label, speeds[label]) for label in labels))


def _timing_key(workload: str, labels: list[str]) -> str:
    machine = [cpu_name(), *native_bf16_flags(), f"torch {torch.__version__}",
               f"threads {torch.get_num_threads()}", *labels, workload]
    return hashlib.sha256("|".join(machine).encode()).hexdigest()[:24]


def _timings_path() -> Path:
    from ferkit.data.cache import cache_dir  # the one cache directory of ferkit

    return cache_dir() / _TIMINGS_FILE


def _read_timings() -> dict[str, object]:
    """The cached timings table ({} when there is none, or it cannot be read: timed again)."""
    path = _timings_path()
    try:
        table = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring the precision timings in %s (%s): timing again", path, exc)
        return {}
    if not isinstance(table, dict):
        log.warning("ignoring the precision timings in %s (not a table): timing again", path)
        return {}
    return table


def _speeds_of(entry: object, labels: list[str]) -> dict[str, float] | None:
    """A cached entry's images/s by label, if it covers exactly these candidates."""
    if not isinstance(entry, dict) or sorted(entry) != sorted(labels):
        return None
    return {label: float(entry[label]) for label in labels}


def _write_timings(table: dict[str, object]) -> None:
    path = _timings_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table, indent=1))
        tmp.replace(path)  # atomic: a concurrent run reads the old table or the new one
    except OSError as exc:
        log.warning("could not save the precision timings to %s (%s)", path, exc)
