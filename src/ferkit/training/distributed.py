"""Distributed data-parallel training under PyTorch's launcher (torchrun), in small helpers.

`torchrun --nproc_per_node N -m ferkit train ...` starts N copies of `ferkit train`, each with
RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE and a rendezvous (MASTER_ADDR/MASTER_PORT) in its
environment. `train()` opens a process group from them (NCCL on CUDA, gloo on the CPU) and
trains one model with DistributedDataParallel:

- every rank draws the same permutation each epoch (the sampler is seeded with the run's seed)
  and takes its slice of each global batch: `--batch-size` stays the global batch, and the
  learning rate is the one asked for, whatever the number of processes;
- DDP averages the gradients; with --sync-bn, BatchNorm computes its statistics over the global
  batch (torch's SyncBatchNorm on CUDA, `GlobalBatchNorm` below on the CPU, where torch has none);
- validation is sharded and its sums are all-reduced, so every rank takes the same decisions
  (best epoch, early stopping);
- only rank 0 prints and writes the run directory;
- a collective that waits longer than --dist-timeout (a dead or stuck rank) ends the run with a
  `DistributedError` that says how to resume.

Without torchrun's variables, `session()` yields `Dist()` (one process) and nothing here does any
communication.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as td
from torch import nn

from ferkit.devices import cpu_count, resolve_device
from ferkit.errors import ConfigError, FerkitError
from ferkit.training.torchrun import launched

log = logging.getLogger(__name__)

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


class DistributedError(FerkitError):
    """Another process of a distributed run died, hung or could not be reached."""


@dataclass
class Dist:
    """This process's place in the run (one process: rank 0 of 1, `enabled` False)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str = ""  # "nccl" | "gloo" once the process group is open
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    run_dir: Path | None = None  # set by train(), for the resume hint of a DistributedError

    @property
    def enabled(self) -> bool:
        return bool(self.backend)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- collectives (no-ops for one process) --------------------------------------------

    def all_reduce_sum(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Each scalar tensor summed over the ranks (new tensors), in one collective."""
        if not self.enabled:
            return list(tensors)
        flat = torch.stack([t.detach().to(torch.float64) for t in tensors])
        td.all_reduce(flat, op=td.ReduceOp.SUM)
        return [v.to(t.dtype) for t, v in zip(tensors, flat, strict=True)]

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj`, in rank order, on rank 0 (None on the others)."""
        if not self.enabled:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        td.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.enabled:
            td.barrier()

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank, so that every rank
        evaluates, and rank 0 saves, the same model."""
        if not self.enabled:
            return
        for buf in model.buffers():
            td.broadcast(buf.data, src=0)

    def shard_steps(self, steps: torch.Tensor) -> torch.Tensor:
        """(steps, global batch) indices -> this rank's (steps, global batch / world) slice."""
        if not self.enabled:
            return steps
        n_steps, batch = steps.shape
        local = batch // self.world_size
        return steps.view(n_steps, self.world_size, local)[:, self.rank]

    def check_batch(self, global_batch: int) -> None:
        if self.enabled and global_batch % self.world_size:
            raise ConfigError(f"--batch-size {global_batch} is the global batch; it must split "
                              f"evenly over the {self.world_size} processes (use a multiple of "
                              f"{self.world_size})")

    def threads(self, asked: int) -> int:
        """Torch CPU threads per process: as asked, else this machine's cores shared out among
        its processes."""
        return asked or max(1, cpu_count() // self.local_world_size)


def from_env(environ: dict[str, str] | None = None) -> Dist:
    """Rank and world size as torchrun sets them; Dist() when they are absent."""
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return Dist()
    values = {}
    for name in ENV_VARS:
        raw = env.get(name, "1" if name == "LOCAL_WORLD_SIZE" else "0")
        try:
            values[name] = int(raw)
        except ValueError:
            raise ConfigError(f"environment variable {name}={raw!r}: expected an integer (it is "
                              "set by torchrun)") from None
    rank, world = values["RANK"], values["WORLD_SIZE"]
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"environment: RANK={rank}, WORLD_SIZE={world}: expected "
                          "0 <= RANK < WORLD_SIZE")
    return Dist(rank, world, values["LOCAL_RANK"], max(values["LOCAL_WORLD_SIZE"], 1))


def env_rank() -> int:
    """This process's rank (0 outside torchrun), without opening anything."""
    try:
        return from_env().rank
    except ConfigError:
        return 0


def rank_device(device: str, dist: Dist) -> torch.device:
    """The device of this rank: cuda:LOCAL_RANK for CUDA, the CPU otherwise."""
    name = device.lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "mps":
        raise ConfigError("--device mps: distributed training runs on cpu (gloo) or cuda (nccl)")
    if name.startswith("cuda"):
        if name != "cuda" and name != f"cuda:{dist.local_rank}":
            raise ConfigError(f"--device {device} under torchrun: each process takes "
                              f"cuda:LOCAL_RANK (here cuda:{dist.local_rank}); pass --device "
                              "cuda and choose GPUs with CUDA_VISIBLE_DEVICES")
        resolve_device("cuda")  # a clear error where there is no GPU
        if dist.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {dist.local_rank}: this machine shows only "
                              f"{torch.cuda.device_count()} GPU(s) to PyTorch; start at most "
                              "that many processes per node")
        torch.cuda.set_device(dist.local_rank)
        return torch.device("cuda", dist.local_rank)
    return resolve_device(name)


@contextlib.contextmanager
def session(device: str, timeout_s: float) -> Iterator[Dist]:
    """This process's Dist (with its device) for one train() call: under torchrun, with a process
    group for the call (opened here unless the caller already has one); else one process."""
    dist = from_env()
    if not launched():
        dist.device = resolve_device(device)
        yield dist
        return
    dist.device = rank_device(device, dist)
    dist.backend = "nccl" if dist.device.type == "cuda" else "gloo"
    opened = not td.is_initialized()
    if opened:
        td.init_process_group(dist.backend, rank=dist.rank, world_size=dist.world_size,
                              timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield dist
    except (td.DistError, RuntimeError) as exc:
        if not _is_comm_failure(exc):
            raise
        raise DistributedError(_failure_message(dist, exc, timeout_s)) from exc
    finally:
        if opened and td.is_initialized():
            with contextlib.suppress(Exception):  # the group may be broken by a dead peer
                td.destroy_process_group()


def _is_comm_failure(exc: BaseException) -> bool:
    if isinstance(exc, td.DistError):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("gloo", "nccl", "connection closed", "connection reset",
                                   "timed out", "timeout", "broken pipe", "socket"))


def _failure_message(dist: Dist, exc: BaseException, timeout_s: float) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    if len(first) > 200:
        first = first[:200] + "..."
    where = f" --out {dist.run_dir}" if dist.run_dir is not None else " --out RUN_DIR"
    return (f"rank {dist.rank} of {dist.world_size}: lost contact with another process of the "
            f"distributed run (it died, or did not answer within --dist-timeout {timeout_s:g} s): "
            f"{first}. The run stopped; its last finished epoch is in last.pt: relaunch the same "
            f"command with --resume{where}")


# ---------------------------------------------------------------------------------------------
# BatchNorm over the global batch


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; the gradient of every rank's input is the sum of the ranks'
    gradients of the output (each rank's loss depends on the sum)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        td.all_reduce(x, op=td.ReduceOp.SUM)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        td.all_reduce(grad, op=td.ReduceOp.SUM)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch (every rank's slice),
    on any device: one differentiable all-reduce of (sum, sum of squares, count) per layer.
    torch's SyncBatchNorm does the same with CUDA kernels only; on one process, or in eval
    mode, this is plain BatchNorm. Same parameters and buffers as nn.BatchNorm*d, so
    checkpoints load into the plain model."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and td.is_available() and td.is_initialized()
                and td.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        count = torch.full((1,), xf.numel() // xf.size(1), dtype=torch.float32, device=x.device)
        stats = _AllReduceSum.apply(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        c = x.size(1)
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm layer computing global-batch statistics (--sync-bn)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_global_bn(model)


def _to_global_bn(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
            module, GlobalBatchNorm | nn.SyncBatchNorm):
        tensors = [*module.parameters(), *module.buffers()]
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if tensors:
            new = new.to(tensors[0].device)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, _to_global_bn(child))
    return module
