"""Training precision and memory format per device, chosen from what the hardware runs natively.

bf16 autocast pays only where bf16 is computed natively: CUDA GPUs (Ampere on) and CPUs with
AVX512_BF16 or AMX_BF16 units (ferkit-small: 1.9x fp32 end to end on 2 Xeon cores with AMX;
see bench/train_throughput.py). On AVX-512 CPUs without those units oneDNN emulates bf16, which is
slower than fp32, and PyTorch's own checks (`torch.backends.cpu.get_cpu_capability()`,
`torch.ops.mkldnn._is_mkldnn_bf16_supported()`) say yes on both kinds, so the CPU's own flags
decide. channels_last follows the precision: it is faster on CUDA and for bf16 on the CPU (1.26x
on that Xeon); for fp32 on the CPU it was slower than NCHW on a Zen 5 and 1.13x faster on the
Xeon, so fp32 keeps NCHW, the format no measurement found much worse.

Whatever runs, weights and checkpoints stay fp32: autocast changes only how a step computes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from ferkit.errors import ConfigError

log = logging.getLogger(__name__)

AMP_MODES = ("auto", "bf16", "fp16", "off")
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
_CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Precision:
    """How the training step computes: autocast dtype (None = fp32) and memory format."""

    dtype: torch.dtype | None
    channels_last: bool
    why: str  # one short phrase for the run header

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")

    @property
    def label(self) -> str:
        """'bf16 + channels_last', 'fp32': how the benches print a precision."""
        return self.name + (" + channels_last" if self.channels_last else "")

    def autocast(self, device: torch.device):
        """The autocast context for one forward pass (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def to_dict(self) -> dict[str, object]:
        return {"precision": self.name, "channels_last": self.channels_last, "why": self.why}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none: macOS, Windows)."""
    try:
        text = _CPUINFO.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16_flags(flags: frozenset[str] | None = None) -> list[str]:
    """This CPU's flags (sorted) that say it computes bf16 in hardware; none: emulated or none."""
    flags = cpu_flags() if flags is None else flags
    return sorted(f for f in NATIVE_BF16_CPU_FLAGS if f in flags)


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU computes bf16 in hardware (AVX512_BF16 or AMX_BF16 on x86)."""
    return bool(native_bf16_flags(flags))


def resolve_precision(amp: str, device: torch.device, channels_last: bool = True,
                      flags: frozenset[str] | None = None) -> Precision:
    """The precision for --amp auto|bf16|fp16|off on `device`; channels_last=False forbids it.

    auto: bf16 on CUDA (fp16 on GPUs without bf16) and on CPUs with native bf16 units, else fp32.
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
    if amp == "auto" and not native:
        return Precision(None, False, f"this CPU has no native bf16 ({platform.machine()})")
    if not native:
        log.warning("--amp bf16 on a CPU without native bf16 units: emulated, slower than fp32")
    why = "native bf16 on this CPU" if native else "--amp bf16 (emulated on this CPU)"
    return Precision(torch.bfloat16, channels_last, why)
