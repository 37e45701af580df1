"""ferkit CLI: `ferkit train`, with a Rich progress bar per epoch and a summary at the end."""

from __future__ import annotations

import ast
import json
import sys
import time
from pathlib import Path
from typing import Any

import typer

HELP = (
    "Train a model on a FER dataset; writes a run directory.\n\n"
    "RUN_DIR (default runs/<YYYYmmdd-HHMMSS>-<model>) gets config.json, metrics.jsonl (one line "
    "per epoch), best.pt (best val accuracy), last.pt (for --resume) and curves.png. Validation "
    "is the source's val split (FER2013 PublicTest), or with --holdout F a fixed stratified slice "
    "of Training: use that to choose hyper-parameters without touching PublicTest.\n\n"
    "Examples:\n\n"
    "  ferkit train --data fer2013.zip --model shallow-cnn --epochs 1 --limit 2000 --device cpu\n\n"
    "  ferkit train --data fer2013.zip --model ferkit-vgg --epochs 60 --batch-size 256 "
    "--ema 0.999\n\n"
    "  ferkit train --data fer2013.csv --holdout 0.1 --balance oversample --augment strong\n\n"
    "  ferkit train --data fer2013.zip --model ferkit-small --teacher runs/big "
    "--distill-weight 0.7\n\n"
    "  ferkit train --resume --out runs/20250101-120000-ferkit-vgg   (continue a run)\n\n"
    "  ferkit train --config runs/old/config.json --seed 1 --out runs/seed1   (repeat a recipe)\n\n"
    "  ferkit train --nproc 2 --data fer2013.zip --model ferkit-small   (DDP on this machine)\n\n"
    "  torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 "
    "-m ferkit train --data fer2013.zip --sync-bn   (on every node)"
)

# CLI options that map 1:1 onto TrainConfig fields (the field name is the key).
_SCALAR_FIELDS = (
    "data", "model", "epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay",
    "schedule", "warmup", "label_smoothing", "grad_clip", "ema", "early_stopping", "balance",
    "balance_power", "teacher", "distill_weight", "distill_temperature", "freeze_epochs",
    "backbone_lr_scale", "augment", "aug_flip", "aug_rotate",
    "aug_shift", "aug_scale", "aug_jitter", "aug_erase", "holdout", "holdout_seed", "limit",
    "device", "seed", "compile", "amp", "channels_last", "threads", "eval_batch_size", "out",
    "resume", "sync_bn", "dist_timeout",
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("train", help=HELP, no_args_is_help=True)(train_command)


def train_command(
    ctx: typer.Context,
    data: str = typer.Option("", "--data", "-d", help="Dataset: FER2013 CSV, image folder or zip.",
                             rich_help_panel="Data"),
    model: str = typer.Option("shallow-cnn", "--model", "-m",
                              help="Model name (ferkit models list).", rich_help_panel="Model"),
    model_arg: list[str] = typer.Option([], "--model-arg",
                                        help="Model factory argument KEY=VALUE (repeatable), "
                                        "e.g. --model-arg dropout=0.3.", rich_help_panel="Model"),
    epochs: int = typer.Option(30, "--epochs", "-e", help="Epochs.",
                               rich_help_panel="Optimisation"),
    batch_size: int = typer.Option(128, "--batch-size", "-b", rich_help_panel="Optimisation"),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default 0.05 for "
                                    "sgd, 2e-3 for adamw).", rich_help_panel="Optimisation"),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd (Nesterov) | adamw.",
                                  rich_help_panel="Optimisation"),
    momentum: float = typer.Option(0.9, "--momentum", rich_help_panel="Optimisation"),
    weight_decay: float | None = typer.Option(None, "--weight-decay", help="Default 5e-4 for sgd, "
                                              "0.05 for adamw; never on BN/bias.",
                                              rich_help_panel="Optimisation"),
    schedule: str = typer.Option("onecycle", "--schedule", help="onecycle | cosine (per step).",
                                 rich_help_panel="Optimisation"),
    warmup: float | None = typer.Option(None, "--warmup", help="Warm-up fraction of all steps "
                                        "(default 0.25 onecycle, 0.05 cosine).",
                                        rich_help_panel="Optimisation"),
    label_smoothing: float = typer.Option(0.1, "--label-smoothing", rich_help_panel="Optimisation"),
    grad_clip: float = typer.Option(0.0, "--grad-clip", help="Max gradient norm (0 = off).",
                                    rich_help_panel="Optimisation"),
    ema: float = typer.Option(0.0, "--ema", help="EMA decay of the weights, e.g. 0.999 (0 = off); "
                              "the EMA model is evaluated and saved.",
                              rich_help_panel="Optimisation"),
    early_stopping: int = typer.Option(0, "--early-stopping", help="Stop after N epochs without "
                                       "a better val accuracy (0 = off).",
                                       rich_help_panel="Optimisation"),
    balance: str = typer.Option("none", "--balance", help="none | weights (class-weighted loss) | "
                                "oversample (minority classes drawn more often).",
                                rich_help_panel="Optimisation"),
    balance_power: float = typer.Option(0.5, "--balance-power", help="Class weight ~ (1/count)^P; "
                                        "1 = fully balanced.", rich_help_panel="Optimisation"),
    teacher: str = typer.Option("", "--teacher", help="Distil from this teacher: a run "
                                "directory, checkpoint or `ferkit ensemble` file.",
                                rich_help_panel="Distillation"),
    distill_weight: float = typer.Option(0.7, "--distill-weight", help="Share of the loss from "
                                         "the teacher's soft targets (0..1).",
                                         rich_help_panel="Distillation"),
    distill_temperature: float = typer.Option(4.0, "--distill-temperature",
                                              help="Softening temperature T.",
                                              rich_help_panel="Distillation"),
    freeze_epochs: int = typer.Option(0, "--freeze-epochs", help="Transfer learning: train only "
                                      "the head for the first N epochs.",
                                      rich_help_panel="Optimisation"),
    backbone_lr_scale: float = typer.Option(1.0, "--backbone-lr-scale", help="Transfer learning: "
                                            "backbone LR = lr x this (e.g. 0.1).",
                                            rich_help_panel="Optimisation"),
    augment: str = typer.Option("default", "--augment", "-a", help="Preset: none | light | default "
                                "| strong (the --aug-* options override its fields).",
                                rich_help_panel="Augmentation"),
    aug_flip: float | None = typer.Option(None, "--aug-flip", help="Horizontal flip probability.",
                                          rich_help_panel="Augmentation"),
    aug_rotate: float | None = typer.Option(None, "--aug-rotate", help="Max rotation, degrees.",
                                            rich_help_panel="Augmentation"),
    aug_shift: float | None = typer.Option(None, "--aug-shift", help="Max shift, image fraction.",
                                           rich_help_panel="Augmentation"),
    aug_scale: float | None = typer.Option(None, "--aug-scale", help="Max zoom in/out, fraction.",
                                           rich_help_panel="Augmentation"),
    aug_jitter: float | None = typer.Option(None, "--aug-jitter",
                                            help="Max brightness/contrast change.",
                                            rich_help_panel="Augmentation"),
    aug_erase: float | None = typer.Option(None, "--aug-erase", help="Random-erasing probability.",
                                           rich_help_panel="Augmentation"),
    holdout: float | None = typer.Option(None, "--holdout", help="Hold out this fraction of "
                                         "Training (stratified, fixed) as val (default: the "
                                         "val split, or 0.1 if there is none).",
                                         rich_help_panel="Data"),
    holdout_seed: int = typer.Option(0, "--holdout-seed", rich_help_panel="Data"),
    limit: int = typer.Option(0, "--limit", help="Train on N training images only: the first N "
                              "of a fixed shuffle, so the class mix is kept (0 = all).",
                              rich_help_panel="Data"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N | mps.",
                               rich_help_panel="Run"),
    seed: int = typer.Option(0, "--seed", rich_help_panel="Run"),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile the model.",
                                 rich_help_panel="Run"),
    amp: str = typer.Option("auto", "--amp", help="auto | bf16 | fp16 | off. auto: bf16 on "
                            "CUDA and on CPUs with native bf16 units (avx512_bf16/amx_bf16), "
                            "else fp32.", rich_help_panel="Run"),
    no_amp: bool = typer.Option(False, "--no-amp", help="Same as --amp off.", hidden=True),
    channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last",
                                       help="channels_last memory format where it is faster "
                                       "for the precision (CUDA; bf16 on the CPU).",
                                       rich_help_panel="Run"),
    threads: int = typer.Option(0, "--threads", help="CPU threads (0 = all cores).",
                                rich_help_panel="Run"),
    eval_batch_size: int = typer.Option(0, "--eval-batch-size", help="0 = 1024 on CUDA, 256 "
                                        "on the CPU.", rich_help_panel="Run"),
    out: str = typer.Option("", "--out", "-o", help="Run directory (default "
                            "runs/<YYYYmmdd-HHMMSS>-<model>).", rich_help_panel="Run"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its "
                                "last.pt (its saved options are used; --data, --device, "
                                "--threads, --compile may be given).", rich_help_panel="Run"),
    config_file: Path | None = typer.Option(None, "--config", help="Start from a config.json "
                                            "(e.g. a run's); options given here override it.",
                                            rich_help_panel="Run"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON at the end "
                                 "(no progress bar).", rich_help_panel="Run"),
    nproc: int = typer.Option(0, "--nproc", help="Train on N processes of this machine with "
                              "DistributedDataParallel (starts torchrun --standalone "
                              "--nproc_per_node N; one per GPU on CUDA, gloo on the CPU). "
                              "--batch-size stays the global batch.",
                              rich_help_panel="Distributed"),
    sync_bn: bool = typer.Option(False, "--sync-bn/--no-sync-bn", help="Distributed runs: "
                                 "BatchNorm statistics over the global batch instead of each "
                                 "process's slice of it.", rich_help_panel="Distributed"),
    dist_timeout: float = typer.Option(600.0, "--dist-timeout", help="Distributed runs: seconds "
                                       "to wait for the other processes at a collective before "
                                       "the run stops (a dead or stuck process).",
                                       rich_help_panel="Distributed"),
) -> None:
    from ferkit.errors import FerkitError
    from ferkit.training.config import ConfigError, TrainConfig

    values = dict(locals())
    if nproc < 0:
        raise ConfigError(f"--nproc must be >= 0 (0 or 1 = this process only), got {nproc}")
    if nproc > 1:
        from ferkit.training.distributed import launched

        if not launched():
            _launch(nproc)  # exits with torchrun's status
    given = {name for name in _SCALAR_FIELDS + ("model_arg",)  # options typed on the command line
             if getattr(ctx.get_parameter_source(name), "name", "DEFAULT")
             not in ("DEFAULT", "DEFAULT_MAP")}
    if no_amp:
        values["amp"] = "off"
        given.add("amp")
    base: dict[str, Any] = {}
    if config_file is not None:
        try:
            base = json.loads(Path(config_file).read_text())
        except (OSError, ValueError) as exc:
            raise FerkitError(f"--config {config_file}: cannot read a JSON config ({exc})") from exc
        base = TrainConfig.from_dict(base, strict=False).to_dict()
        base.update(out="", resume=False)
    fields = {name: values[name] for name in _SCALAR_FIELDS
              if not base or name in given}
    if "model_arg" in given or not base:
        fields["model_kwargs"] = _parse_model_args(model_arg)
    config = TrainConfig.from_dict({**base, **fields})
    if config.resume:
        from ferkit.training.config import RUNTIME_FIELDS

        ignored = sorted(f"--{n.replace('_', '-')}" for n in given - set(RUNTIME_FIELDS))
        if ignored:
            typer.echo(f"note: --resume continues the run with its saved options; ignoring "
                       f"{', '.join(ignored)}", err=True)
    if not config.data and not config.resume:
        raise ConfigError("--data PATH is required (a FER2013 CSV, image folder or zip)")
    _run(config, as_json)


def _launch(nproc: int) -> None:
    """Re-run this command line under torchrun on `nproc` local processes (without --nproc)."""
    import os
    import subprocess

    from ferkit.training.config import ConfigError

    argv = sys.argv[1:]
    if "train" not in argv:
        raise ConfigError("--nproc re-runs the `ferkit train` command line under torchrun; "
                          "called another way, launch with: torchrun --nproc_per_node N -m "
                          "ferkit train ...")
    cut = argv.index("train") + 1
    args, rest = argv[:cut], iter(argv[cut:])
    for arg in rest:
        if arg == "--nproc":
            next(rest, None)  # and its value
        elif not arg.startswith("--nproc="):
            args.append(arg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(nproc), "-m", "ferkit", *args]
    env = {**os.environ}
    env.setdefault("OMP_NUM_THREADS", "1")  # ferkit sets each rank's threads itself
    sys.exit(subprocess.call(cmd, env=env))


def _parse_model_args(items: list[str]) -> dict[str, Any]:
    from ferkit.training.config import ConfigError

    kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(f"--model-arg {item!r}: expected KEY=VALUE, e.g. dropout=0.3")
        try:
            kwargs[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            kwargs[key.strip()] = raw.strip()
    return kwargs


def _run(config, as_json: bool) -> None:
    from rich.console import Console

    from ferkit.training import run_dir as rd
    from ferkit.training.distributed import env_rank
    from ferkit.training.trainer import RunInfo, train

    rank = env_rank()
    if rank:  # torchrun: only rank 0 speaks; the others print errors only
        import logging

        logging.getLogger("ferkit").setLevel(logging.ERROR)
    console = Console(stderr=as_json, highlight=False, quiet=rank > 0)
    view = _ProgressView(console, live=console.is_terminal and not as_json and not rank,
                         quiet=as_json or rank > 0)
    started = {"info": None}

    def on_start(info: RunInfo) -> None:
        started["info"] = info
        if not as_json:
            _print_header(console, info)

    t_load = time.perf_counter()
    dataset = _load_data(config, console, quiet=as_json or rank > 0)
    load_seconds = time.perf_counter() - t_load if dataset is not None else 0.0
    try:
        result = train(config, dataset, on_epoch=view.on_epoch, on_step=view.on_step,
                       on_start=on_start)
    except KeyboardInterrupt:
        view.stop()
        info = started["info"]
        if info is not None and (info.run_dir / rd.LAST).exists():
            console.print("[yellow]interrupted[/]; the last finished epoch is saved. Continue "
                          f"with:\n  ferkit train --resume --out {info.run_dir}")
        elif info is not None:
            console.print("[yellow]interrupted[/] during the first epoch: nothing was saved "
                          f"yet; start again, or resume (it starts over) with:\n"
                          f"  ferkit train --resume --out {info.run_dir}")
        sys.exit(130)
    finally:
        view.stop()
    if rank:
        return
    if as_json:
        typer.echo(json.dumps({**_result_dict(result), "load_seconds": load_seconds}, indent=2))
    else:
        _print_summary(console, result, load_seconds)


def _load_data(config, console, quiet: bool):
    """The dataset, with a progress bar while decoding (a cache miss); None lets train() load it."""
    from ferkit.cli.data import load_with_progress
    from ferkit.data import load_dataset

    path = config.data
    if not path and config.resume and config.out:
        saved = Path(config.out) / "config.json"
        path = json.loads(saved.read_text()).get("data", "") if saved.exists() else ""
    if not path:
        return None
    return load_dataset(path) if quiet else load_with_progress(path, console=console)


class _ProgressView:
    """One plain line per finished epoch (readable in a pipe or a log file), and in a terminal a
    transient Rich bar for the epoch in progress. Every line fits 80 columns."""

    READ_EVERY_S = 0.5  # reading the loss syncs the device: not more often than this
    WIDTH = 80

    def __init__(self, console, live: bool, quiet: bool = False) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console, self.live, self.quiet = console, live, quiet
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=20),
                                 MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                                 TimeElapsedColumn(), console=console, transient=True,
                                 disable=not live)
        self.task = None
        self.epoch = self.epochs = 0
        self.last_read = 0.0
        self.epoch_times: list[float] = []
        self.t_epoch = time.perf_counter()

    def on_step(self, s) -> None:
        if not self.live:
            if s.epoch != self.epoch:
                self.epoch, self.epochs, self.t_epoch = s.epoch, s.epochs, time.perf_counter()
            return
        if s.epoch != self.epoch:
            self.epoch, self.epochs = s.epoch, s.epochs
            self.t_epoch, self.last_read = time.perf_counter(), 0.0
            if self.task is None:
                self.progress.start()
            else:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(f"epoch {s.epoch}/{s.epochs}", total=s.steps,
                                               stats="")
        now = time.perf_counter()
        fields = {}
        if now - self.last_read >= self.READ_EVERY_S or s.step == s.steps:
            self.last_read = now
            fields["stats"] = f"loss {s.loss:.3f}  {_rate(s.images_per_s)} img/s"
        self.progress.update(self.task, completed=s.step, **fields)

    def on_epoch(self, m) -> None:
        self.epoch_times.append(time.perf_counter() - self.t_epoch)
        left = self.epochs - m.epoch
        eta = left * sum(self.epoch_times) / len(self.epoch_times)
        if not self.quiet:
            self.console.print(epoch_line(m, self.epochs, eta, self.WIDTH), markup=False,
                               highlight=False, soft_wrap=True)

    def stop(self) -> None:
        self.progress.stop()


def epoch_line(m, epochs: int, eta_seconds: float, width: int = 80) -> str:
    """`epoch 3/30  loss 1.234  train 55.1%  val 54.0% best  4,012 img/s  eta 4:10`, in at
    most `width` columns (single spaces when double ones would not fit)."""
    parts = [f"epoch {m.epoch}/{epochs}", f"loss {m.train_loss:.3f}", f"train {m.train_acc:.1%}",
             f"val {m.val_acc:.1%}" + (" best" if m.is_best else ""),
             f"{_rate(m.images_per_s)} img/s"]
    if m.epoch < epochs:
        parts.append(f"eta {_hms(eta_seconds)}")
    line = "  ".join(parts)
    return line if len(line) <= width else " ".join(parts)


def _print_header(console, info) -> None:
    c = info.config
    what = "resuming" if info.start_epoch else "training"
    after = f" after epoch {info.start_epoch}" if info.start_epoch else ""
    p = info.precision
    console.print(f"[bold]ferkit train[/]: {what} [cyan]{c.model}[/] "
                  f"({info.parameters / 1e6:.2f}M parameters){after} on [cyan]{info.device}[/]")
    console.print(f"  precision: {p.name}{', channels_last' if p.channels_last else ''} "
                  f"({p.why}){'; torch.compile' if c.compile else ''}")
    console.print(f"  data: {info.n_train:,} training faces, {info.n_val:,} val faces "
                  f"({info.val_source})")
    batch = min(c.batch_size, info.n_train)
    console.print(f"  {c.epochs} epoch{'s' if c.epochs != 1 else ''} x "
                  f"{info.steps_per_epoch} steps of {batch}; "
                  f"{c.optimizer} lr {c.lr:g} {c.schedule}")
    if info.world_size > 1:
        backend = "nccl" if info.device.type == "cuda" else "gloo"
        console.print(f"  DDP: {info.world_size} processes ({backend}), "
                      f"{batch // info.world_size} faces each per step; "
                      f"{'sync-bn' if c.sync_bn else 'BatchNorm per process'}")
    console.print(f"  augment {c.augment}; balance {c.balance}"
                  + (f"; ema {c.ema}" if c.ema else ""))
    if c.teacher:
        console.print(f"  teacher: {c.teacher} (weight {c.distill_weight:g}, temperature "
                      f"{c.distill_temperature:g})")
    console.print(f"  run dir: {info.run_dir}")


def _print_summary(console, r, load_seconds: float = 0.0) -> None:
    from rich.table import Table

    t = Table(show_header=False, box=None, padding=(0, 2))
    t.add_row("best val accuracy", f"[bold green]{r.best_val_accuracy:.2%}[/] (epoch "
              f"{r.best_epoch} of {len(r.history)})" if r.history else "n/a")
    if r.stopped_early:
        t.add_row("early stopping", f"stopped after epoch {r.history[-1].epoch}")
    t.add_row("run dir", str(r.run_dir))
    t.add_row("wall time", f"{_hms(r.wall_seconds + load_seconds)} (loading data "
              f"{load_seconds + r.data_seconds:.1f} s, training {r.train_seconds:.1f} s)")
    console.print(t)
    data = r.config.data if r.config is not None and r.config.data else "DATA"
    console.print(f"next: ferkit evaluate --model {r.run_dir} --data {data}")


def _result_dict(r) -> dict[str, Any]:
    return {"run_dir": str(r.run_dir), "best_val_accuracy": r.best_val_accuracy,
            "best_epoch": r.best_epoch, "epochs_run": len(r.history),
            "stopped_early": r.stopped_early, "wall_seconds": r.wall_seconds,
            "data_seconds": r.data_seconds, "train_seconds": r.train_seconds,
            "history": [h.to_dict() for h in r.history]}


def _rate(per_s: float) -> str:
    """4,012 or 12.3k or 123k: at most 5 characters for any realistic rate."""
    if per_s < 10_000:
        return f"{per_s:,.0f}"
    return f"{per_s / 1000:.1f}k" if per_s < 100_000 else f"{per_s / 1000:.0f}k"


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
