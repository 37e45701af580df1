"""ferkit CLI: `ferkit train`, with a Rich progress bar per epoch and a summary at the end."""

from __future__ import annotations

import inspect
import json
import sys
import time
import typing
from pathlib import Path
from typing import Any

import typer

from ferkit.run_files import BEST, CONFIG, CURVES, LAST, METRICS

HELP = (
    "Train a model on a FER dataset; writes a run directory.\n\n"
    f"RUN_DIR (default runs/<YYYYmmdd-HHMMSS>-<model>) gets {CONFIG}, {METRICS} (one line "
    f"per epoch), {BEST} (best val accuracy), {LAST} (for --resume) and {CURVES}. Validation "
    "is the source's val split (FER2013 PublicTest), or with --holdout F a fixed stratified slice "
    "of Training: use that to choose hyper-parameters without touching PublicTest.\n\n"
    "Examples:\n\n"
    "  ferkit train --data fer2013.zip --model shallow-cnn --epochs 1 \\\n"
    "      --limit 2000 --device cpu\n\n"
    "  ferkit train --data fer2013.zip --model ferkit-vgg --epochs 60 \\\n"
    "      --batch-size 256 --ema 0.999\n\n"
    "  ferkit train --data fer2013.csv --holdout 0.1 --balance oversample \\\n"
    "      --augment strong\n\n"
    "  ferkit train --data fer2013.zip --mix cutmix --holdout 0.1\n\n"
    "  ferkit train --data fer2013.zip --model ferkit-small \\\n"
    "      --teacher runs/big --distill-weight 0.7\n\n"
    "  # continue a run\n"
    "  ferkit train --resume --out runs/20250101-120000-ferkit-vgg\n\n"
    "  # repeat a recipe\n"
    f"  ferkit train --config runs/old/{CONFIG} --seed 1 --out runs/seed1\n\n"
    "  # DDP on this machine\n"
    "  ferkit train --nproc 2 --data fer2013.zip --model ferkit-small\n\n"
    "  # on every node of a cluster\n"
    "  torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d \\\n"
    "      --rdzv-endpoint HOST:29500 \\\n"
    "      -m ferkit train --data fer2013.zip --sync-bn"
)



def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("train", help=HELP, no_args_is_help=True)(train_command)


def _own_options() -> dict[str, list[inspect.Parameter]]:
    """The options of `ferkit train` that are not TrainConfig fields, by help panel."""
    from ferkit.cli.fields import cli_option

    return {
        "Run": [
            cli_option("no_amp", bool, False, "--no-amp", help="Same as --amp off.",
                       hidden=True),
            cli_option("config_file", Path | None, None, "--config",
                       help="Start from a config.json (e.g. a run's); options given here "
                       "override it.", rich_help_panel="Run"),
            cli_option("as_json", bool, False, "--json", help="Print the result as JSON at "
                       "the end (no progress bar).", rich_help_panel="Run"),
        ],
        "Distributed": [
            cli_option("nproc", int, 0, "--nproc", help="Train on N processes of this machine "
                       "with DistributedDataParallel (starts torchrun --standalone "
                       "--nproc_per_node N; one per GPU on CUDA, gloo on the CPU). "
                       "--batch-size stays the global batch.", rich_help_panel="Distributed"),
        ],
    }


def _train_command(ctx: typer.Context, cls: type, config_file: Path | None = None,
                   as_json: bool = False, nproc: int = 0, no_amp: bool = False,
                   **options: Any) -> None:
    """`ferkit train`: the TrainConfig options typed on the command line override --config's
    (or the defaults), through TrainConfig.override like every other override."""
    from ferkit.errors import FerkitError
    from ferkit.training.config import (
        RUNTIME_FIELDS,
        ConfigError,
        flag_of,
        option_fields,
        parse_key_values,
    )

    if nproc < 0:
        raise ConfigError(f"--nproc must be >= 0 (0 or 1 = this process only), got {nproc}")
    if nproc > 1:
        from ferkit.training.torchrun import launched

        if not launched():
            _launch(nproc)  # exits with torchrun's status
    fields = {f.name: f for f in option_fields(cls)}
    given = {name for name in options  # options typed on the command line
             if getattr(ctx.get_parameter_source(name), "name", "DEFAULT")
             not in ("DEFAULT", "DEFAULT_MAP")}
    if no_amp:
        options["amp"] = "off"
        given.add("amp")
    hints = typing.get_type_hints(cls)
    for name, value in options.items():
        if typing.get_origin(hints[name]) is dict:  # --model-arg KEY=VALUE ...
            options[name] = parse_key_values(value, flag_of(fields[name]))
    base = cls()
    if config_file is not None:
        try:
            saved = json.loads(Path(config_file).read_text())
        except (OSError, ValueError) as exc:
            raise FerkitError(f"--config {config_file}: cannot read a JSON config ({exc})") from exc
        base = cls.from_dict(saved, strict=False).override({"out": "", "resume": False})
        options = {k: v for k, v in options.items() if k in given}
    config = base.override(options)
    if config.resume:
        ignored = sorted(flag_of(fields[n]) for n in given - set(RUNTIME_FIELDS))
        if ignored:
            typer.echo(f"note: --resume continues the run with its saved options; ignoring "
                       f"{', '.join(ignored)}", err=True)
    if not config.data and not config.resume:
        raise ConfigError("--data PATH is required (a FER2013 CSV, image folder or zip)")
    _run(config, as_json)


def make_train_command(cls: type | None = None):
    """_train_command with one option per field of `cls` (TrainConfig or a subclass of it; see
    ferkit.cli.fields), plus the command's own options."""
    from ferkit.cli.fields import options_from, with_signature
    from ferkit.training.config import PANELS, TrainConfig, option_fields

    cls = cls or TrainConfig

    def train_command(ctx: typer.Context, **kwargs: Any) -> None:
        _train_command(ctx, cls, **kwargs)

    ctx = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                            annotation=typer.Context)
    params = options_from(option_fields(cls), typing.get_type_hints(cls), _own_options(),
                          PANELS)
    train_command.__doc__ = _train_command.__doc__
    return with_signature(train_command, [ctx, *params])


train_command = make_train_command()


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
    from ferkit.training import run_dir as rd

    path = config.data
    if not path and config.resume and config.out:  # the run's own, found from any folder
        saved = Path(config.out) / rd.CONFIG
        path = json.loads(saved.read_text()).get("data", "") if saved.exists() else ""
        path = rd.saved_data(Path(config.out), path)
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
                  f"{c.optimizer} lr {c.lr:g} {c.schedule}"
                  + (f"; sam {c.sam:g}" if c.sam else ""))
    if info.world_size > 1:
        backend = "nccl" if info.device.type == "cuda" else "gloo"
        console.print(f"  DDP: {info.world_size} processes ({backend}), "
                      f"{batch // info.world_size} faces each per step; "
                      f"{'sync-bn' if c.sync_bn else 'BatchNorm per process'}")
    console.print(f"  augment {c.augment}"
                  + (f" + {c.mix} (alpha {c.mix_alpha:g}, {c.mix_prob:.0%} of batches)"
                     if c.mix != "none" else "")
                  + f"; balance {c.balance}" + (f"; ema {c.ema}" if c.ema else ""))
    if c.teacher:
        console.print(f"  teacher: {c.teacher} (weight {c.distill_weight:g}, temperature "
                      f"{c.distill_temperature:g}, "
                      + (f"{c.distill_views} views" if c.distill_targets == "views"
                         else f"{c.distill_targets} targets")
                      + (f" in {info.teacher_seconds:.1f} s" if c.distill_targets
                         != "live" else "") + ")")
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
