"""The training loop: `train(config)` -> TrainResult.

`_train` reads top to bottom: setting up (data, model and precision, the teacher's targets, the
resumable state), then the loop, a few lines a step. What it builds is defined below it:
TrainState (everything last.pt holds for --resume: state_dict() and load_state_dict()),
_Batches (each step's input; the teacher's targets come from ferkit.training.distill's
DistillTargets, whatever --distill-targets), _TrainStep (one optimisation step), then helpers.

Speed comes from keeping everything on the device: the whole training set is one uint8 tensor
(FER2013: 66 MB), each step indexes a batch out of it, augments it there as [0, 1] pixels
(ferkit.training.augment), and runs forward/backward under bf16 autocast with channels_last on
CUDA. The model is the architecture wrapped in a NormalizedModel holding the training set's
mean/std (ferkit.models.normalize), so checkpoints carry their normalisation; validation
classifies through the same function as Predictor (ferkit.models.inference). There is no
DataLoader and no per-image Python. Losses and accuracies are summed on the device and read
once per epoch (or when a progress callback asks), so the GPU is never stalled.

Under torchrun the same loop trains one model on every process with DistributedDataParallel
(ferkit.training.distributed): each rank holds its own copy of the device-resident data, takes
its slice of every global batch of the shared permutation, and only rank 0 writes the run
directory and calls the callbacks. A callback stops training by returning True from on_epoch
(the epoch's checkpoints are written first); nothing needs to be raised through the loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from ferkit.classes import CLASSES, NUM_CLASSES
from ferkit.data.dataset import FaceDataset
from ferkit.errors import DataError, ModelError
from ferkit.models.checkpoint import checkpoint_payload, load_checkpoint, save_checkpoint
from ferkit.models.inference import predict_proba
from ferkit.models.normalize import normalized
from ferkit.models.registry import create_model, get_entry
from ferkit.precision import Precision, resolve_precision
from ferkit.training import run_dir as rd
from ferkit.training.augment import BatchAugment
from ferkit.training.balance import EpochSampler, class_weights
from ferkit.training.compact import compact_checkpoint, ema_state
from ferkit.training.config import (
    EXECUTION_KEY,
    RUNTIME_FIELDS,
    ConfigError,
    TrainConfig,
    check_execution,
)
from ferkit.training.curves import plot_curves
from ferkit.training.distill import DistillTargets, Teacher, distill_loss
from ferkit.training.distributed import Dist, convert_sync_batchnorm, session
from ferkit.training.ema import weight_ema
from ferkit.training.finetune import checkpoint_arch_kwargs
from ferkit.training.mixing import BatchMix, Mix
from ferkit.training.optim import build_optimizer, build_scheduler
from ferkit.training.sam import SharpnessAware, frozen_bn_statistics
from ferkit.training.splits import TrainValSplit, normalization_stats, split_train_val
from ferkit.training.step_timing import step_timer, workload_key

log = logging.getLogger(__name__)

# metrics.jsonl fields that measure time, not learning (they differ between identical runs)
TIMING_FIELDS = ("epoch_seconds", "images_per_s")


@dataclass
class EpochMetrics:
    """One line of metrics.jsonl."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    epoch_seconds: float  # training steps only (evaluation and saving excluded)
    images_per_s: float
    best_val_acc: float = 0.0
    best_epoch: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def is_best(self) -> bool:
        return self.best_epoch == self.epoch


@dataclass
class StepMetrics:
    """Passed to on_step after every optimizer step; reading .loss syncs the device, so a
    progress display should read it only every so often."""

    epoch: int
    epochs: int
    step: int
    steps: int
    images: int  # training images seen this epoch
    seconds: float  # since the epoch started
    lr: float
    _loss_sum: torch.Tensor = field(repr=False)

    @property
    def loss(self) -> float:
        """Mean training loss of the epoch so far."""
        return float(self._loss_sum) / self.step

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


@dataclass
class RunInfo:
    """Passed to on_start once the data and model are ready."""

    run_dir: Path
    config: TrainConfig
    device: torch.device
    n_train: int
    n_val: int
    val_source: str
    steps_per_epoch: int
    start_epoch: int  # epochs already done (resume), 0 for a new run
    parameters: int
    class_counts: list[int]
    normalization: dict[str, float]
    data_seconds: float
    precision: Precision
    world_size: int = 1  # processes training this model (torchrun)
    teacher_seconds: float = 0.0  # computing --distill-targets fixed before the first epoch


@dataclass
class TrainResult:
    run_dir: Path
    best_val_accuracy: float
    best_epoch: int
    history: list[EpochMetrics]
    wall_seconds: float  # the whole train() call
    data_seconds: float = 0.0  # loading the dataset and moving it to the device
    train_seconds: float = 0.0  # sum of the epochs' training time (this call only)
    stopped_early: bool = False
    config: TrainConfig | None = None
    stopped_by_callback: bool = False  # on_epoch returned True
    teacher_seconds: float = 0.0  # computing --distill-targets fixed (this call only)

    @property
    def best_val_acc(self) -> float:
        """best_val_accuracy under the metric name checkpoints and metrics.jsonl use."""
        return self.best_val_accuracy

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / rd.BEST


def train(config: TrainConfig, dataset: FaceDataset | None = None,
          on_epoch: Callable[[EpochMetrics], bool | None] | None = None,
          on_step: Callable[[StepMetrics], None] | None = None,
          on_start: Callable[[RunInfo], None] | None = None) -> TrainResult:
    """Train config.model on config.data (or `dataset`), writing everything to the run directory.

    With config.resume, continues the run in config.out from its last.pt (the saved config is
    used, except for the runtime options data/device/threads/compile) and ends with the metrics an
    uninterrupted run would have had.

    on_epoch returning True ends the run after that epoch (TrainResult.stopped_by_callback):
    sweeps prune and benches stop at a target that way.

    Started by torchrun, every process calls this and they train one model together; the
    callbacks run on rank 0 only (a stop is broadcast), and every rank returns the same result.
    """
    check_execution(config)  # before session() opens the device and the process group
    with session(config.device, config.dist_timeout) as dist:
        return _train(config, dist, dataset, on_epoch, on_step, on_start)


def _train(config: TrainConfig, dist: Dist, dataset: FaceDataset | None,
           on_epoch: Callable[[EpochMetrics], bool | None] | None,
           on_step: Callable[[StepMetrics], None] | None,
           on_start: Callable[[RunInfo], None] | None) -> TrainResult:
    t_call = time.perf_counter()
    config, run_dir, ckpt = _prepare_run(config, dist)
    dist.run_dir = run_dir
    device = _setup_device(config, dist)
    _seed_everything(config.seed + dist.rank)  # rank 0 = one process; DDP copies its weights
    if not dist.is_main:
        on_epoch = on_step = on_start = None

    # ---- data: every face on the device as uint8; train/val split; normalisation stats ----
    data = _DeviceData.load(config, dataset, device, dist)

    # ---- model and precision; the teacher's targets (--teacher) ----
    # (model, then teacher: each consumes random numbers as it is built)
    model = normalized(_create_model(config), data.mean, data.std).to(device)
    sampler = EpochSampler(data.split.train_labels, config.batch_size, config.balance,
                           config.balance_power, config.seed, device)
    steps, batch = sampler.steps_per_epoch, sampler.batch_size  # batch: the global batch
    dist.check_batch(batch)
    precision = choose_precision(config, device, model, data.train_x[:batch // dist.world_size],
                                 dist)
    model = model.to(memory_format=torch.channels_last if precision.channels_last else
                     torch.contiguous_format)
    if config.sync_bn and dist.enabled:  # after the timing, which runs on rank 0 alone
        model = convert_sync_batchnorm(model, device)
    eval_batch = config.eval_batch_size or (1024 if device.type == "cuda" else 256)
    distill = DistillTargets.build(config, data.train_x, data.mean, precision, eval_batch)

    # ---- optimizer, schedule, EMA: the resumable state, from last.pt under --resume ----
    state = TrainState.start(config, model, sampler, data.record(steps), device)
    if ckpt is not None:
        _check_same_teacher(ckpt, distill.teacher)
        state.load_state_dict(ckpt, dist)

    # ---- each step's batch, and the step; the run directory ----
    batches = _Batches(config, data, distill, precision.channels_last)
    train_step = _TrainStep(state, _forward_module(model, config, dist),
                            _Loss(config, data.split.class_counts, device), precision, device,
                            config)
    if dist.is_main:
        _open_run_dir(run_dir, config, state.history, device, precision, dist)
    if on_start is not None:
        on_start(RunInfo(run_dir, config, device, len(data.train_y), data.n_val,
                         data.split.val_source, steps, state.epoch,
                         sum(p.numel() for p in model.parameters()),
                         data.split.class_counts.tolist(), model.stats, data.seconds,
                         precision, dist.world_size, distill.seconds))

    # ---- the loop: an epoch of steps, validation, the epoch's files ----
    train_seconds, stopped_by_callback = 0.0, False
    for epoch in range(state.epoch + 1, config.epochs + 1):
        if state.stopped:
            break
        _train_mode(model, epoch, config)
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for step, idx in enumerate(dist.shard_steps(sampler.epoch()), start=1):
            x, y, mix, targets = batches(idx)
            logits, loss, lr = train_step(x, y, mix, targets)
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(dim=1) == y).sum()
            if on_step is not None:  # rank 0's loss: the other ranks' slices are not read
                on_step(StepMetrics(epoch, config.epochs, step, steps, step * batch,
                                    time.perf_counter() - t0, lr, loss_sum))
        loss_sum, correct = dist.all_reduce_sum(loss_sum, correct)  # the whole global batch
        train_loss = loss_sum.item() / (steps * dist.world_size)
        train_acc = correct.item() / (steps * batch)
        epoch_seconds = time.perf_counter() - t0  # .item() above waited for the device
        train_seconds += epoch_seconds

        val_loss, val_acc = _validate(state.eval_model, data, dist, eval_batch, precision)
        m = state.end_epoch(EpochMetrics(epoch, train_loss, train_acc, val_loss, val_acc, lr,
                                         epoch_seconds, steps * batch / epoch_seconds),
                            config.early_stopping)
        rngs = dist.gather_objects(_rng_state())  # every rank's, so --resume continues exactly
        stop = False
        if dist.is_main:  # rank 0 writes the run directory
            _write_epoch(run_dir, config, distill, state, rngs)
            stop = on_epoch is not None and bool(on_epoch(m))
        if dist.broadcast_object(stop):  # a callback asked to stop: every rank ends here
            stopped_by_callback = True
            break

    dist.barrier()  # every rank returns once rank 0 has written the last epoch
    return TrainResult(run_dir, max(state.best_val_acc, 0.0), state.best_epoch, state.history,
                       time.perf_counter() - t_call, data.seconds, train_seconds, state.stopped,
                       config, stopped_by_callback, distill.seconds)


@dataclass
class TrainState:
    """What --resume needs to go on exactly where an epoch ended: the model, optimizer, LR
    schedule, EMA and epoch sampler, the early-stopping record and the metrics so far, and the
    random generators' states. state_dict() gives last.pt's resume entries; load_state_dict()
    takes a last.pt (full or compact) and puts them back."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  # torch.optim.lr_scheduler.LRScheduler
    ema: AveragedModel | None
    sampler: EpochSampler
    data: dict[str, Any]  # what last.pt records of the data (_DeviceData.record)
    epoch: int = 0  # epochs done
    best_val_acc: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best (--early-stopping)
    stopped: bool = False  # early stopping ended the run
    history: list[EpochMetrics] = field(default_factory=list)

    @classmethod
    def start(cls, config: TrainConfig, model: nn.Module, sampler: EpochSampler,
              data: dict[str, Any], device: torch.device) -> TrainState:
        """Epoch 0 of a run: the optimizer, LR schedule and --ema average built for `model`."""
        ema = weight_ema(model, config.ema) if config.ema else None
        optimizer = build_optimizer(model, config, device)
        scheduler = build_scheduler(optimizer, config, config.epochs * sampler.steps_per_epoch)
        return cls(model, optimizer, scheduler, ema, sampler, data)

    @property
    def eval_model(self) -> nn.Module:
        """The model validated and saved: the weights' average under --ema."""
        return self.ema.module if self.ema is not None else self.model

    def end_epoch(self, m: EpochMetrics, patience: int) -> EpochMetrics:
        """Records epoch m (its best_val_acc and best_epoch filled in here); patience: the
        --early-stopping epochs without a better val_acc (0: never stop)."""
        if m.val_acc > self.best_val_acc:
            self.best_val_acc, self.best_epoch, self.bad_epochs = m.val_acc, m.epoch, 0
        else:
            self.bad_epochs += 1
        self.stopped = bool(patience) and self.bad_epochs >= patience
        self.epoch = m.epoch
        m.best_val_acc, m.best_epoch = self.best_val_acc, self.best_epoch
        self.history.append(m)
        return m

    def state_dict(self, rngs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """last.pt's entries besides the saved model (rngs: every rank's random state, rank 0's
        first; this process's if None). Without --ema the model trained is the one saved, so its
        weights are last.pt's state_dict."""
        return {
            "epoch": self.epoch,
            "train_state_dict": _cpu_state(self.model) if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "sampler": self.sampler.state_dict(),
            "rng": rngs[0] if rngs else _rng_state(),
            "world_size": len(rngs) if rngs else 1,
            "rng_ranks": rngs if rngs and len(rngs) > 1 else None,
            "early_stopping": {"best_val_acc": self.best_val_acc, "best_epoch": self.best_epoch,
                               "bad_epochs": self.bad_epochs, "stopped": self.stopped},
            "history": [h.to_dict() for h in self.history],
            "data": self.data,
        }

    def load_state_dict(self, ckpt: dict[str, Any], dist: Dist) -> None:
        """Back to where last.pt `ckpt` left the run, on this process's rank; refuses other data.
        Call it last: building the model and the teacher consumed random numbers."""
        _check_same_data(ckpt, self.data)
        self.model.load_state_dict(ckpt["train_state_dict"] if self.ema is not None
                                   else ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(ema_state(ckpt))  # a compact last.pt keeps it once
        self.sampler.load_state_dict(ckpt["sampler"])
        es = ckpt["early_stopping"]
        self.epoch = int(ckpt["epoch"])
        self.best_val_acc, self.best_epoch = float(es["best_val_acc"]), int(es["best_epoch"])
        self.bad_epochs, self.stopped = int(es["bad_epochs"]), bool(es["stopped"])
        self.history = [EpochMetrics(**h) for h in ckpt["history"]]
        _restore_rngs(ckpt, dist, self.epoch)


@dataclass
class _DeviceData:
    """The run's faces on the device: every training face (uint8) and label, this rank's shard of
    the validation faces, and the training pixels' mean and std (the model's normalisation)."""

    split: TrainValSplit
    digests: dict[str, str]
    train_x: torch.Tensor  # (N, 1, H, W) uint8
    train_y: torch.Tensor
    val_shard: tuple[torch.Tensor, torch.Tensor]  # this rank's validation faces and labels
    n_val: int  # validation faces on all the ranks
    mean: float
    std: float
    seconds: float  # loading the dataset and moving it to the device

    @classmethod
    def load(cls, config: TrainConfig, dataset: FaceDataset | None, device: torch.device,
             dist: Dist) -> _DeviceData:
        start = time.perf_counter()
        if dataset is None:
            dataset = _load_dataset(config.data)
        split = split_train_val(dataset, config.holdout, config.holdout_seed, config.limit)
        for note in split.notes if dist.is_main else ():
            log.warning(note)
        digests = split.digests()
        mean, std = normalization_stats(split.train_images)
        train_x, train_y = _to_device(split.train_images, split.train_labels, device)
        val_x, val_y = _to_device(split.val_images, split.val_labels, device)
        val_shard = (val_x[dist.rank::dist.world_size], val_y[dist.rank::dist.world_size])
        return cls(split, digests, train_x, train_y, val_shard, len(val_y), mean, std,
                   time.perf_counter() - start)

    def record(self, steps: int) -> dict[str, Any]:
        """What last.pt records of the data, so --resume can refuse other data."""
        return {"n_train": len(self.train_y), "n_val": self.n_val, "steps_per_epoch": steps,
                "train_digest": self.digests["train"], "val_digest": self.digests["val"]}


class _Batches:
    """Each step's batch: the faces of idx augmented (or the teacher's stored views of them,
    --distill-targets views), blended in pairs (--mix), in the model's memory format; with
    their labels, how they were mixed, and the teacher's targets (None without --teacher)."""

    def __init__(self, config: TrainConfig, data: _DeviceData, distill: DistillTargets,
                 channels_last: bool) -> None:
        self.faces, self.labels = data.train_x, data.train_y
        self.augment = BatchAugment(config, fill=data.mean).to(data.train_x.device)
        self.mixer = BatchMix(config.mix, config.mix_alpha, config.mix_prob)
        self.distill, self.channels_last = distill, channels_last

    def __call__(self, idx: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, Mix | None, torch.Tensor | None]:
        x, stored = self.distill.inputs(idx, self.faces, self.augment)
        x, mix = self.mixer(x)  # mix: None, or how pairs of faces were blended
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[idx], mix, self.distill.targets(x, mix, stored)


class _Loss:
    """Cross-entropy with the labels (of both blended faces under --mix; --label-smoothing,
    --balance weights), mixed with the distillation loss when a teacher's targets are given."""

    def __init__(self, config: TrainConfig, class_counts: np.ndarray,
                 device: torch.device) -> None:
        weight = None
        if config.balance == "weights":
            weight = torch.tensor(class_weights(class_counts, config.balance_power),
                                  dtype=torch.float32, device=device)
        self.criterion = nn.CrossEntropyLoss(weight=weight,
                                             label_smoothing=config.label_smoothing)
        self.distill_weight = config.distill_weight
        self.temperature = config.distill_temperature

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, mix: Mix | None,
                 targets: torch.Tensor | None) -> torch.Tensor:
        loss = (self.criterion(logits.float(), y) if mix is None
                else mix.loss(self.criterion, logits.float(), y))
        if targets is None:
            return loss
        # a cast of its own: under autocast the two gradients meet in the logits' dtype
        soft = distill_loss(logits.float(), targets, self.temperature)
        return (1 - self.distill_weight) * loss + self.distill_weight * soft


class _TrainStep:
    """One optimisation step on a batch: forward under autocast, the loss, backward (and again
    at the ascent point under --sam), gradient clipping, the optimizer and LR schedule, the
    EMA. Returns (logits, loss, the learning rate it stepped with)."""

    def __init__(self, state: TrainState, forward: nn.Module, loss: _Loss,
                 precision: Precision, device: torch.device, config: TrainConfig) -> None:
        self.state, self.forward, self.loss = state, forward, loss
        self.precision, self.device = precision, device
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision.dtype == torch.float16)
        self.sam = SharpnessAware(state.model, config.sam) if config.sam else None
        self.grad_clip = config.grad_clip

    def __call__(self, x: torch.Tensor, y: torch.Tensor, mix: Mix | None,
                 targets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, float]:
        model, optimizer, scaler = self.state.model, self.state.optimizer, self.scaler
        with self.precision.autocast(self.device):
            logits = self.forward(x)
        loss = self.loss(logits, y, mix, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.sam is not None:  # --sam: the gradient again, at the ascent point
            self.sam.ascend()
            optimizer.zero_grad(set_to_none=True)
            with frozen_bn_statistics(model), self.precision.autocast(self.device):
                perturbed = self.forward(x)
            scaler.scale(self.loss(perturbed, y, mix, targets)).backward()
            self.sam.descend()
        if self.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
        lr = max(g["lr"] for g in optimizer.param_groups)
        scaler.step(optimizer)
        scaler.update()
        self.state.scheduler.step()
        if self.state.ema is not None:
            self.state.ema.update_parameters(model)
        return logits, loss, lr


def choose_precision(config: TrainConfig, device: torch.device, model: nn.Module,
                     faces: torch.Tensor, dist: Dist | None = None) -> Precision:
    """--amp resolved for this device; auto on the CPU times the model's step on a batch of
    `faces` (uint8, one process's batch) in each candidate precision (rank 0 times, every rank
    takes its choice)."""
    dist = dist or Dist()
    timer, workload = None, ""
    if config.amp == "auto" and device.type == "cpu" and dist.is_main:
        timer = step_timer(model, faces.float().div(255.0))
        workload = workload_key(model, len(faces))
    precision = resolve_precision(config.amp, device, config.channels_last, timer=timer,
                                  workload=workload)
    return dist.broadcast_object(precision)  # rank 0's choice (itself when not distributed)


def _validate(model: nn.Module, data: _DeviceData, dist: Dist, batch_size: int,
              precision: Precision) -> tuple[float, float]:
    """Mean cross-entropy (no smoothing, no class weights) and accuracy on the validation faces,
    each rank classifying its shard through ferkit.models.inference.predict_proba (what
    Predictor uses), in the training precision."""
    dist.broadcast_buffers(model)  # BN statistics differ per rank without --sync-bn
    loss_sum, correct = dist.all_reduce_sum(*_eval_sums(model, *data.val_shard, batch_size,
                                                        precision))
    n = max(data.n_val, 1)
    return loss_sum.item() / n, correct.item() / n


@torch.inference_mode()
def _eval_sums(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
               precision: Precision | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of cross-entropy, number right) on the device."""
    if len(images) == 0:  # a rank's empty shard of a tiny validation set
        return (torch.zeros((), device=images.device),
                torch.zeros((), device=images.device, dtype=torch.long))
    probs = predict_proba(model, images, "none", precision, batch_size)
    loss_sum = F.nll_loss(probs.clamp_min(1e-30).log(), labels, reduction="sum")
    return loss_sum, (probs.argmax(dim=1) == labels).sum()


# ---------------------------------------------------------------------------------------------
# helpers


def _prepare_run(config: TrainConfig, dist: Dist) -> tuple[TrainConfig, Path, dict | None]:
    """Validated config, run directory (created later, once data and model are ready), and the
    last.pt to resume from (or None). Every rank reads the same files (resuming a run on several
    nodes needs its run directory on a shared filesystem); rank 0 names a new run's directory."""
    ckpt = None
    if config.resume:
        if not config.out:
            raise ConfigError("--resume needs --out RUN_DIR: the run directory to continue")
        run_dir = Path(config.out)
        if not run_dir.is_dir():
            raise ModelError(f"{run_dir}: no such run directory to resume")
        if (run_dir / rd.LAST).exists():
            ckpt = load_checkpoint(run_dir / rd.LAST)
            saved = ckpt.get("config") or {}
        elif (run_dir / rd.CONFIG).exists():  # killed during epoch 1: start it again
            saved = json.loads((run_dir / rd.CONFIG).read_text())
        else:
            raise ModelError(f"{run_dir}: holds neither last.pt nor config.json; nothing to resume")
        runtime = {k: getattr(config, k) for k in RUNTIME_FIELDS}
        saved_config = TrainConfig.from_dict(saved, strict=False)
        # the run's --data, from another folder too; not required: a caller may pass the dataset
        runtime["data"] = runtime["data"] or rd.saved_data(run_dir, saved_config.data,
                                                           required=False)
        config = replace(saved_config, **runtime)
    config = config.validated()
    if not get_entry(config.model).trainable:  # unknown model: ModelError now, before any data
        raise ConfigError(f"model {config.model!r} is built from trained checkpoints "
                          "(ferkit ensemble), not trained")
    if not config.resume:
        run_dir = Path(config.out) if config.out else rd.default_run_dir(config.model)
        run_dir = Path(dist.broadcast_object(str(run_dir)))  # the ranks' clocks may differ
        rd.check_fresh(run_dir)
        config = replace(config, out=str(run_dir))
    return config, run_dir, ckpt


def _setup_device(config: TrainConfig, dist: Dist) -> torch.device:
    device = dist.device
    if device.type == "cpu" or config.threads:
        torch.set_num_threads(dist.threads(config.threads))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # CPU and every CUDA device


def _load_dataset(path: str) -> FaceDataset:
    if not path:
        raise ConfigError("no training data: pass --data PATH (a FER2013 CSV, folder or zip)")
    from ferkit.data import load_dataset

    return load_dataset(path)


def _create_model(config: TrainConfig) -> nn.Module:
    try:
        return create_model(config.model, num_classes=NUM_CLASSES, **config.model_kwargs)
    except (TypeError, ValueError) as exc:  # an unknown argument, or a value it refuses
        raise ModelError(f"model {config.model!r}: bad model_kwargs {config.model_kwargs}: {exc}"
                         ) from exc


def _train_mode(model: nn.Module, epoch: int, config: TrainConfig) -> None:
    """model.train(); with --freeze-epochs, the backbone stays frozen for the first epochs."""
    if config.freeze_epochs:
        from ferkit.training import finetune

        finetune.train_mode(model, epoch - 1, config.freeze_epochs)  # it counts epochs from 0
    else:
        model.train()


def _to_device(images: np.ndarray, labels: np.ndarray, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).to(device)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    return x, y


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _rng_state() -> dict[str, Any]:
    """Every generator's state; numpy's key array as a list, so last.pt holds plain values only
    (checkpoints load with weights_only; np.random.set_state takes either form)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": (kind, keys.tolist(), pos, has_gauss, gauss),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError, IndexError):  # resumed on fewer GPUs
            torch.cuda.set_rng_state_all(s["cuda"])


def _restore_rngs(ckpt: dict[str, Any], dist: Dist, epoch: int) -> None:
    """Every random generator as last.pt left it on this rank. Resumed on another number of
    processes: rank 0's states everywhere, the other ranks' torch generators seeded anew."""
    ranks = ckpt.get("rng_ranks") or [ckpt["rng"]]
    if len(ranks) == dist.world_size:
        _set_rng_state(ranks[dist.rank])
        return
    if dist.is_main:  # the ranks' augmentation streams start anew
        log.warning("%s: the run had %d process(es), this resume has %d: training goes on "
                    "from the same weights and schedule, but its random augmentation (and "
                    "per-rank BatchNorm batches) differ from an uninterrupted run",
                    ckpt["path"], len(ranks), dist.world_size)
    _set_rng_state(ranks[0])
    if dist.rank:
        torch.manual_seed(int(ckpt["config"]["seed"]) + dist.rank + 1000 * epoch)


def _forward_module(model: nn.Module, config: TrainConfig, dist: Dist) -> nn.Module:
    """What each step calls: the model, under torchrun in DistributedDataParallel (averages the
    gradients; broadcasts rank 0's weights now, its buffers per step), compiled with --compile."""
    forward = model
    if dist.enabled:
        forward = DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
            find_unused_parameters=bool(config.freeze_epochs))  # frozen backbone: no grads
    if config.compile:
        forward = torch.compile(forward)
    return forward


def _open_run_dir(run_dir: Path, config: TrainConfig, history: list[EpochMetrics],
                  device: torch.device, precision: Precision, dist: Dist) -> None:
    """A new run's directory with its config.json (and how it runs); a resumed run's
    metrics.jsonl cut back to the epochs last.pt holds."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.resume:  # drop lines of an epoch cut off before its last.pt was written
        rd.rewrite_metrics(run_dir, [h.to_dict() for h in history])
        return
    rd.write_json(run_dir / rd.CONFIG, {**config.to_dict(), EXECUTION_KEY: {
        "device": str(device), **precision.to_dict(), "threads": torch.get_num_threads(),
        "world_size": dist.world_size, "backend": dist.backend or None,
        "torch": torch.__version__,  # and --data from anywhere, for --resume elsewhere:
        rd.DATA_RESOLVED: str(Path(config.data).resolve()) if config.data else None}})


def _checkpoint_header(config: TrainConfig, distill: DistillTargets) -> dict[str, Any]:
    """The entries best.pt and last.pt share: the architecture, classes, config and teacher."""
    return {"arch": config.model, "arch_kwargs": checkpoint_arch_kwargs(config.model_kwargs),
            "classes": list(CLASSES), "config": config.to_dict(),
            **distill.checkpoint_entries()}


def _write_epoch(run_dir: Path, config: TrainConfig, distill: DistillTargets,
                 state: TrainState, rngs: list[dict[str, Any]] | None) -> None:
    """The epoch just ended, into the run directory: its metrics line, the curves, best.pt if it
    is the best so far, and last.pt (compact under --compact-last)."""
    m = state.history[-1]
    header = _checkpoint_header(config, distill)
    rd.append_metrics(run_dir, m.to_dict())
    plot_curves([h.to_dict() for h in state.history], run_dir / rd.CURVES,
                f"{config.model} - {run_dir.name}")
    weights = _cpu_state(state.eval_model)
    if m.is_best:
        save_checkpoint(run_dir / rd.BEST, checkpoint_payload(
            **header, epoch=m.epoch, metrics=m.to_dict(), state_dict=weights))
    last = checkpoint_payload(**header, metrics=m.to_dict(), state_dict=weights,
                              **state.state_dict(rngs))
    save_checkpoint(run_dir / rd.LAST, compact_checkpoint(last) if config.compact_last else last)


def _check_same_teacher(ckpt: dict, teacher: Teacher | None) -> None:
    saved = ckpt.get("teacher")
    if saved and teacher is not None and saved["digest"] != teacher.digest:
        raise ModelError(f"{ckpt['path']}: the run distils from {saved['path']}, which has "
                         "changed since (another checkpoint file); resume needs the same teacher")


def _check_same_data(ckpt: dict, now: dict[str, Any]) -> None:
    """Refuse to resume on data other than the run's (runs saved before digests: counts only)."""
    saved = ckpt.get("data") or {}
    differ = []
    for part, n_key, d_key in (("training", "n_train", "train_digest"),
                               ("validation", "n_val", "val_digest")):
        if n_key in saved and saved[n_key] != now[n_key]:
            differ.append(f"{part} faces: the run had {saved[n_key]:,}, this data gives "
                          f"{now[n_key]:,}")
        elif d_key in saved and saved[d_key] != now[d_key]:
            differ.append(f"{part} faces: same count ({now[n_key]:,}) but other images or labels")
    if not differ and saved.get("steps_per_epoch", now["steps_per_epoch"]) != now[
            "steps_per_epoch"]:
        differ.append(f"steps per epoch: {saved['steps_per_epoch']} then, "
                      f"{now['steps_per_epoch']} now")
    if differ:
        raise DataError(f"{ckpt['path']}: cannot resume on other data ({'; '.join(differ)}); "
                        "resume with the run's --data, --holdout and --limit")
