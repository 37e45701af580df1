"""TrainConfig: every training option, with defaults that train a good FER2013 model.

The config is what `ferkit train` writes to RUN_DIR/config.json and into every checkpoint, so a
run can be repeated or resumed from it alone. Options left as None are resolved from others by
`validated()` (e.g. the learning rate from the optimizer, the augmentation fields from the preset),
and the resolved values are what gets saved.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ferkit.errors import ConfigError
from ferkit.precision import AMP_MODES

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine")
BALANCE_MODES = ("none", "weights", "oversample")
AUGMENT_PRESETS = ("none", "light", "default", "strong")

# Fields of each augmentation preset (see ferkit.training.augment for what each one does).
PRESETS: dict[str, dict[str, float]] = {
    "none": {"aug_flip": 0.0, "aug_rotate": 0.0, "aug_shift": 0.0, "aug_scale": 0.0,
             "aug_jitter": 0.0, "aug_erase": 0.0},
    "light": {"aug_flip": 0.5, "aug_rotate": 5.0, "aug_shift": 0.05, "aug_scale": 0.05,
              "aug_jitter": 0.0, "aug_erase": 0.0},
    "default": {"aug_flip": 0.5, "aug_rotate": 10.0, "aug_shift": 0.1, "aug_scale": 0.1,
                "aug_jitter": 0.2, "aug_erase": 0.25},
    "strong": {"aug_flip": 0.5, "aug_rotate": 15.0, "aug_shift": 0.15, "aug_scale": 0.2,
               "aug_jitter": 0.3, "aug_erase": 0.5},
}

# Options that describe where and how fast a run executes, not what it learns: on --resume they
# come from the caller, everything else from the run's saved config.
# config.json's record of how the run executed (device, precision, threads): not an option.
EXECUTION_KEY = "execution"
RUNTIME_FIELDS = ("data", "device", "threads", "compile", "out", "resume", "num_workers",
                  "dist_timeout")

_DEFAULT_LR = {"sgd": 0.05, "adamw": 2e-3}
_DEFAULT_WD = {"sgd": 5e-4, "adamw": 0.05}
_DEFAULT_WARMUP = {"onecycle": 0.25, "cosine": 0.05}


@dataclass
class TrainConfig:
    """All options of a training run. Field comments give the CLI meaning."""

    # data and model
    data: str = ""  # dataset path (CSV, image folder or zip) for ferkit.data.load_dataset
    model: str = "shallow-cnn"  # a name from `ferkit models list`
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra factory arguments
    limit: int = 0  # train on N training images only (a fixed random subset; 0 = all)
    holdout: float | None = None  # fraction of Training held out (stratified, fixed) as val;
    # None: the source's val split, or 0.1 when it has none
    holdout_seed: int = 0  # the holdout slice depends on this, not on `seed`

    # optimisation
    epochs: int = 30
    batch_size: int = 128
    lr: float | None = None  # peak learning rate; None: 0.05 (sgd) or 2e-3 (adamw)
    optimizer: str = "sgd"  # sgd (Nesterov) | adamw
    momentum: float = 0.9  # SGD momentum (one-cycle cycles it between 0.85 and 0.95)
    weight_decay: float | None = None  # None: 5e-4 (sgd) or 0.05 (adamw); never on BN/bias
    schedule: str = "onecycle"  # onecycle | cosine (with linear warmup), stepped every batch
    warmup: float | None = None  # fraction of all steps spent warming up; None: 0.25 / 0.05
    label_smoothing: float = 0.1
    grad_clip: float = 0.0  # max gradient norm (0 = off)
    ema: float = 0.0  # EMA decay of the weights, e.g. 0.999 (0 = off); evaluated and saved if on
    early_stopping: int = 0  # stop after this many epochs without a better val accuracy (0 = off)
    balance: str = "none"  # none | weights (class-weighted loss) | oversample (resample minorities)
    balance_power: float = 0.5  # class weight ~ (1 / class count) ** power; 1 = fully balanced
    teacher: str = ""  # knowledge distillation from this run dir / checkpoint / ensemble
    distill_weight: float = 0.7  # share of the loss that is the teacher's soft targets
    distill_temperature: float = 4.0  # softening temperature T of both distributions
    freeze_epochs: int = 0  # transfer learning: train only the head for the first N epochs
    backbone_lr_scale: float = 1.0  # transfer learning: backbone LR = lr * this (e.g. 0.1)

    # augmentation, applied to whole batches on the device
    augment: str = "default"  # preset: none | light | default | strong; fields below override it
    aug_flip: float | None = None  # horizontal flip probability
    aug_rotate: float | None = None  # max rotation, degrees
    aug_shift: float | None = None  # max shift, fraction of the image size
    aug_scale: float | None = None  # max zoom in/out, fraction
    aug_jitter: float | None = None  # max brightness/contrast change, fraction
    aug_erase: float | None = None  # random-erasing probability

    # execution
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    seed: int = 0
    compile: bool = False  # torch.compile the model (CUDA: faster after a warm-up)
    amp: str = "auto"  # auto | bf16 | fp16 | off: autocast precision (ferkit.precision)
    channels_last: bool = True  # channels_last where it is faster for the chosen precision
    threads: int = 0  # CPU threads for torch (0 = all cores)
    num_workers: int = 0  # unused by the in-memory pipeline; kept for config compatibility
    eval_batch_size: int = 0  # 0 = 1024 on CUDA, 256 on the CPU (smaller is faster there)
    out: str = ""  # run directory; "" = runs/<YYYYmmdd-HHMMSS>-<model>
    resume: bool = False  # continue the run in `out` from its last.pt

    # distributed runs (torchrun; see ferkit.training.distributed)
    sync_bn: bool = False  # BatchNorm statistics over the global batch, not each rank's slice
    dist_timeout: float = 600.0  # seconds a collective waits for the other processes

    # ----------------------------------------------------------------------------------------

    def validated(self) -> TrainConfig:
        """A copy with None options resolved; raises ConfigError on a value that cannot work."""
        c = dataclasses.replace(self, model_kwargs=dict(self.model_kwargs))
        if not isinstance(c.epochs, int) or c.epochs <= 0:
            raise ConfigError(f"--epochs must be a positive integer, got {c.epochs}")
        if c.batch_size <= 0:
            raise ConfigError(f"--batch-size must be positive, got {c.batch_size}")
        if c.eval_batch_size < 0:
            raise ConfigError(f"--eval-batch-size must be >= 0 (0 = auto), got "
                              f"{c.eval_batch_size}")
        if c.limit < 0:
            raise ConfigError(f"--limit must be >= 0 (0 = all), got {c.limit}")
        _choice("optimizer", c.optimizer, OPTIMIZERS)
        _choice("schedule", c.schedule, SCHEDULES)
        _choice("balance", c.balance, BALANCE_MODES)
        _choice("augment", c.augment, AUGMENT_PRESETS)
        if isinstance(c.amp, bool):  # configs before --amp took a mode: true/false
            c.amp = "auto" if c.amp else "off"
        _choice("amp", c.amp, AMP_MODES)
        if c.lr is None:
            c.lr = _DEFAULT_LR[c.optimizer]
        if c.weight_decay is None:
            c.weight_decay = _DEFAULT_WD[c.optimizer]
        if c.warmup is None:
            c.warmup = _DEFAULT_WARMUP[c.schedule]
        for name, value in PRESETS[c.augment].items():
            if getattr(c, name) is None:
                setattr(c, name, value)
        _positive("lr", c.lr)
        _range("weight_decay", c.weight_decay, 0, math.inf)
        _range("warmup", c.warmup, 0, 0.99)
        _range("momentum", c.momentum, 0, 0.999)
        _range("label_smoothing", c.label_smoothing, 0, 0.99)
        _range("grad_clip", c.grad_clip, 0, math.inf)
        _range("balance_power", c.balance_power, 0, 4)
        if c.ema != 0:
            _range("ema", c.ema, 0, 0.99999, "(an EMA decay such as 0.999, or 0 for off)")
        if c.holdout is not None:
            _range("holdout", c.holdout, 0, 0.9)
        if c.early_stopping < 0:
            raise ConfigError(f"--early-stopping must be >= 0 (0 = off), got {c.early_stopping}")
        _range("aug_flip", c.aug_flip, 0, 1)
        _range("aug_rotate", c.aug_rotate, 0, 180)
        _range("aug_shift", c.aug_shift, 0, 0.5)
        _range("aug_scale", c.aug_scale, 0, 0.9)
        _range("aug_jitter", c.aug_jitter, 0, 0.9)
        _range("aug_erase", c.aug_erase, 0, 1)
        _range("distill_weight", c.distill_weight, 0, 1)
        _positive("distill_temperature", c.distill_temperature)
        if c.freeze_epochs < 0:
            raise ConfigError(f"--freeze-epochs must be >= 0, got {c.freeze_epochs}")
        _range("backbone_lr_scale", c.backbone_lr_scale, 0, 10)
        if c.threads < 0:
            raise ConfigError(f"--threads must be >= 0 (0 = all cores), got {c.threads}")
        check_execution(c)
        return c

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (config.json, checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], strict: bool = True) -> TrainConfig:
        """Inverse of to_dict; unknown keys are an error unless strict=False (old checkpoints)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - {EXECUTION_KEY})
        if unknown and strict:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in names})


def check_execution(c: TrainConfig) -> None:
    """ConfigError unless --device and --dist-timeout can work (checked before anything else,
    since a distributed run opens its device and process group first)."""
    dev = c.device.lower()
    if not (dev in ("auto", "cpu", "mps") or dev == "cuda" or
            (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(f"--device {c.device}: expected auto, cpu, cuda, cuda:N or mps")
    _positive("dist_timeout", c.dist_timeout)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"--{name} {value!r}: expected one of {', '.join(allowed)}")


def _range(name: str, value: float, lo: float, hi: float, hint: str = "") -> None:
    if value is None or not (lo <= value <= hi):
        opt = name.replace("_", "-")
        raise ConfigError(f"--{opt} must be in [{lo}, {hi}], got {value} {hint}".rstrip())


def _positive(name: str, value: float) -> None:
    if value is None or not value > 0:
        raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
