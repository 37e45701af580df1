"""The training loop: `train(config)` -> TrainResult, one readable function; helpers below it.

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

from ferkit.classes import CLASSES, NUM_CLASSES
from ferkit.data.dataset import FaceDataset
from ferkit.errors import DataError, ModelError
from ferkit.models.checkpoint import checkpoint_payload, load_checkpoint, save_checkpoint
from ferkit.models.inference import predict_proba
from ferkit.models.normalize import normalized
from ferkit.models.registry import create_model, get_entry
from ferkit.precision import Precision, resolve_precision
from ferkit.training import run_dir as rd
from ferkit.training.augment import BatchAugment, flip_only, without_flip
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
from ferkit.training.distill import Teacher, TeacherViews, distill_loss
from ferkit.training.distributed import Dist, convert_sync_batchnorm, session
from ferkit.training.ema import weight_ema
from ferkit.training.finetune import checkpoint_arch_kwargs
from ferkit.training.mixing import BatchMix, Mix
from ferkit.training.optim import build_optimizer, build_scheduler
from ferkit.training.sam import SharpnessAware, frozen_bn_statistics
from ferkit.training.splits import normalization_stats, split_train_val
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


@dataclass
class _State:
    """What survives from epoch to epoch besides model/optimizer tensors (saved in last.pt)."""

    epoch: int = 0
    best_val_acc: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped: bool = False
    history: list[EpochMetrics] = field(default_factory=list)


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
    t_data = time.perf_counter()
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
    data_seconds = time.perf_counter() - t_data

    # ---- model, optimizer, schedule, loss ----
    model = normalized(_create_model(config), mean, std).to(device)
    cuda = device.type == "cuda"
    sampler = EpochSampler(split.train_labels, config.batch_size, config.balance,
                           config.balance_power, config.seed, device)
    steps, batch = sampler.steps_per_epoch, sampler.batch_size  # batch: the global batch
    dist.check_batch(batch)
    precision = choose_precision(config, device, model, train_x[:batch // dist.world_size], dist)
    channels_last = precision.channels_last
    model = model.to(memory_format=torch.channels_last if channels_last else
                     torch.contiguous_format)
    if config.sync_bn and dist.enabled:  # after the timing, which runs on rank 0 alone
        model = convert_sync_batchnorm(model, device)
    ema = weight_ema(model, config.ema) if config.ema else None
    augment = BatchAugment(config, fill=mean).to(device)
    mixer = BatchMix(config.mix, config.mix_alpha, config.mix_prob)
    optimizer = build_optimizer(model, config, device)
    scheduler = build_scheduler(optimizer, config, config.epochs * steps)
    weight = None
    if config.balance == "weights":
        weight = torch.tensor(class_weights(split.class_counts, config.balance_power),
                              dtype=torch.float32, device=device)
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    eval_batch = config.eval_batch_size or (1024 if cuda else 256)  # validation, fixed targets
    teacher = (Teacher.load(config.teacher, device, precision, CLASSES) if config.teacher
               else None)
    fixed_targets, views, t_teacher = None, None, time.perf_counter()  # --distill-targets
    if teacher is not None and config.distill_targets == "fixed":
        fixed_targets = teacher.fixed_targets(train_x, precision, eval_batch)
    if teacher is not None and config.distill_targets == "views":
        views = TeacherViews.make(teacher, train_x,
                                  BatchAugment(without_flip(config), fill=mean).to(device),
                                  config.distill_views, config.seed, precision, eval_batch)
        flip = BatchAugment(flip_only(config)).to(device)  # the views' fresh flips
    teacher_seconds = time.perf_counter() - t_teacher
    scaler = torch.amp.GradScaler(device.type, enabled=precision.dtype == torch.float16)
    sam = SharpnessAware(model, config.sam) if config.sam else None
    state = _State()
    if ckpt is not None:
        _check_same_teacher(ckpt, teacher)
        _restore(ckpt, model, optimizer, scheduler, ema, sampler, state,
                 _data_record(len(train_y), len(val_y), steps, digests), dist)
    forward: nn.Module = model
    if dist.enabled:  # averages gradients; broadcasts rank 0's weights now, its buffers per step
        forward = DistributedDataParallel(
            model, device_ids=[device.index] if cuda else None,
            find_unused_parameters=bool(config.freeze_epochs))  # frozen backbone: no grads
    if config.compile:
        forward = torch.compile(forward)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if config.resume:  # drop lines of an epoch cut off before its last.pt was written
            rd.rewrite_metrics(run_dir, [h.to_dict() for h in state.history])
        else:
            rd.write_json(run_dir / rd.CONFIG, {**config.to_dict(), EXECUTION_KEY: {
                "device": str(device), **precision.to_dict(), "threads": torch.get_num_threads(),
                "world_size": dist.world_size, "backend": dist.backend or None,
                "torch": torch.__version__,  # and --data from anywhere, for --resume elsewhere:
                rd.DATA_RESOLVED: str(Path(config.data).resolve()) if config.data else None}})
    ckpt_base = {"arch": config.model, "arch_kwargs": checkpoint_arch_kwargs(config.model_kwargs),
                 "classes": list(CLASSES), "config": config.to_dict(),
                 **({"teacher": teacher.record()} if teacher is not None else {})}
    if on_start is not None:
        on_start(RunInfo(run_dir, config, device, len(train_y), len(val_y), split.val_source,
                         steps, state.epoch, sum(p.numel() for p in model.parameters()),
                         split.class_counts.tolist(), model.stats, data_seconds,
                         precision, dist.world_size, teacher_seconds))

    # ---- the loop ----
    train_seconds = 0.0
    stopped_by_callback = False
    for epoch in range(state.epoch + 1, config.epochs + 1):
        if state.stopped:
            break
        _train_mode(model, epoch, config)
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for step, idx in enumerate(dist.shard_steps(sampler.epoch()), start=1):
            # targets: the teacher's answers for this batch (--teacher), None until known
            if views is not None:  # a stored view of each face, the teacher's answer on it
                faces, targets = views.batch(idx)
                x = flip(faces, train=True)
            else:
                x = augment(train_x[idx], train=True)
                targets = fixed_targets[idx] if fixed_targets is not None else None
            y = train_y[idx]
            x, mix = mixer(x)  # mix: None, or how pairs of faces were blended (--mix)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if teacher is not None and targets is None:  # live: on the very batch
                targets = teacher.logits(x, precision)
            elif targets is not None and mix is not None:
                targets = mix.log_probs(targets)
            with precision.autocast(device):
                logits = forward(x)
            loss = _step_loss(logits, y, mix, targets, criterion, config)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if sam is not None:  # --sam: the gradient again, at the ascent point
                sam.ascend()
                optimizer.zero_grad(set_to_none=True)
                with frozen_bn_statistics(model), precision.autocast(device):
                    perturbed = forward(x)
                scaler.scale(_step_loss(perturbed, y, mix, targets, criterion, config)).backward()
                sam.descend()
            if config.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            lr = max(g["lr"] for g in optimizer.param_groups)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
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

        eval_model = ema.module if ema is not None else model
        dist.broadcast_buffers(eval_model)  # BN statistics differ per rank without --sync-bn
        val_loss, val_acc = _evaluate_sharded(eval_model, val_shard, len(val_y), dist,
                                              eval_batch, precision)
        if val_acc > state.best_val_acc:
            state.best_val_acc, state.best_epoch, state.bad_epochs = val_acc, epoch, 0
        else:
            state.bad_epochs += 1
        state.stopped = bool(config.early_stopping) and state.bad_epochs >= config.early_stopping
        state.epoch = epoch
        m = EpochMetrics(epoch, train_loss, train_acc, val_loss, val_acc, lr, epoch_seconds,
                         steps * batch / epoch_seconds, state.best_val_acc, state.best_epoch)
        state.history.append(m)
        rngs = dist.gather_objects(_rng_state())  # every rank's, so --resume continues exactly
        stop = False
        if dist.is_main:  # ---- rank 0 writes the run directory: metrics, curves, checkpoints
            rd.append_metrics(run_dir, m.to_dict())
            plot_curves([h.to_dict() for h in state.history], run_dir / rd.CURVES,
                        f"{config.model} - {run_dir.name}")
            weights = _cpu_state(eval_model)
            if m.is_best:
                save_checkpoint(run_dir / rd.BEST, checkpoint_payload(
                    **ckpt_base, epoch=epoch, metrics=m.to_dict(), state_dict=weights))
            last = checkpoint_payload(
                **ckpt_base, epoch=epoch, metrics=m.to_dict(), state_dict=weights,
                **_resume_state(model, optimizer, scheduler, ema, sampler, state,
                                _data_record(len(train_y), len(val_y), steps, digests), rngs))
            save_checkpoint(run_dir / rd.LAST,
                            compact_checkpoint(last) if config.compact_last else last)
            if on_epoch is not None:
                stop = bool(on_epoch(m))
        if dist.broadcast_object(stop):  # a callback asked to stop: every rank ends here
            stopped_by_callback = True
            break

    dist.barrier()  # every rank returns once rank 0 has written the last epoch
    return TrainResult(run_dir, max(state.best_val_acc, 0.0), state.best_epoch, state.history,
                       time.perf_counter() - t_call, data_seconds, train_seconds, state.stopped,
                       config, stopped_by_callback, teacher_seconds)


def _step_loss(logits: torch.Tensor, y: torch.Tensor, mix: Mix | None, targets: torch.Tensor | None,
               criterion: nn.Module, config: TrainConfig) -> torch.Tensor:
    """Cross-entropy with the labels (of both blended faces under --mix), mixed with the
    distillation loss when a teacher's answers are given."""
    loss = criterion(logits.float(), y) if mix is None else mix.loss(criterion, logits.float(), y)
    if targets is None:
        return loss
    soft = distill_loss(logits.float(), targets, config.distill_temperature)
    return (1 - config.distill_weight) * loss + config.distill_weight * soft


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


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 1024, precision: Precision | None = None) -> tuple[float, float]:
    """Mean cross-entropy (no smoothing, no class weights) and accuracy on uint8 faces, through
    ferkit.models.inference.predict_proba (what Predictor uses), in `precision` (fp32 if None)."""
    loss_sum, correct = _eval_sums(model, images, labels, batch_size, precision)
    n = max(len(images), 1)
    return loss_sum.item() / n, correct.item() / n


def _evaluate_sharded(model: nn.Module, shard: tuple[torch.Tensor, torch.Tensor], n_total: int,
                      dist: Dist, batch_size: int, precision: Precision) -> tuple[float, float]:
    """evaluate() over every rank's shard of the validation faces, summed over the ranks."""
    loss_sum, correct = dist.all_reduce_sum(*_eval_sums(model, *shard, batch_size, precision))
    n = max(n_total, 1)
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


def _data_record(n_train: int, n_val: int, steps: int, digests: dict[str, str]
                 ) -> dict[str, Any]:
    """What last.pt records of the data, so --resume can refuse other data."""
    return {"n_train": n_train, "n_val": n_val, "steps_per_epoch": steps,
            "train_digest": digests["train"], "val_digest": digests["val"]}


def _resume_state(model, optimizer, scheduler, ema, sampler, state: _State,
                  data: dict[str, Any], rngs: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The last.pt entries that let --resume continue exactly where this epoch ended (rngs:
    every rank's random state, rank 0's first)."""
    return {
        "train_state_dict": _cpu_state(model) if ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "sampler": sampler.state_dict(),
        "rng": rngs[0] if rngs else _rng_state(),
        "world_size": len(rngs) if rngs else 1,
        "rng_ranks": rngs if rngs and len(rngs) > 1 else None,
        "early_stopping": {"best_val_acc": state.best_val_acc, "best_epoch": state.best_epoch,
                           "bad_epochs": state.bad_epochs, "stopped": state.stopped},
        "history": [h.to_dict() for h in state.history],
        "data": data,
    }


def _restore(ckpt: dict, model, optimizer, scheduler, ema, sampler, state: _State,
             data: dict[str, Any], dist: Dist) -> None:
    _check_same_data(ckpt, data)
    model.load_state_dict(ckpt["train_state_dict"] if ema is not None else ckpt["state_dict"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if ema is not None:
        ema.load_state_dict(ema_state(ckpt))
    sampler.load_state_dict(ckpt["sampler"])
    es = ckpt["early_stopping"]
    state.epoch = int(ckpt["epoch"])
    state.best_val_acc, state.best_epoch = float(es["best_val_acc"]), int(es["best_epoch"])
    state.bad_epochs, state.stopped = int(es["bad_epochs"]), bool(es["stopped"])
    state.history = [EpochMetrics(**h) for h in ckpt["history"]]
    # last: building the model above consumed random numbers
    ranks = ckpt.get("rng_ranks") or [ckpt["rng"]]
    if len(ranks) == dist.world_size:
        _set_rng_state(ranks[dist.rank])
    else:  # another number of processes: the ranks' augmentation streams start anew
        if dist.is_main:
            log.warning("%s: the run had %d process(es), this resume has %d: training goes on "
                        "from the same weights and schedule, but its random augmentation (and "
                        "per-rank BatchNorm batches) differ from an uninterrupted run",
                        ckpt["path"], len(ranks), dist.world_size)
        _set_rng_state(ranks[0])
        if dist.rank:
            torch.manual_seed(int(ckpt["config"]["seed"]) + dist.rank + 1000 * state.epoch)


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
