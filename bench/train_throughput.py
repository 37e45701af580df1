"""Training throughput with the real trainer, precision modes side by side: images/s and ratios.

    .venv/bin/python bench/train_throughput.py                      # CPU: the three issue models
    .venv/bin/python bench/train_throughput.py ferkit-small --modes fp32,auto --images 4096
    .venv/bin/python bench/train_throughput.py ferkit-vgg resnet --device cuda

Each model trains `--epochs` epochs (default 2) on `--images` synthetic 48x48 faces (or the
training faces of --data) through ferkit.training.train, once per mode: `fp32` (--amp off, NCHW,
eager), `auto` (what --amp auto picks here: bf16 + channels_last on CPUs with native bf16 units
and on CUDA, else fp32) and `auto+compile` (the same with torch.compile). The figure reported is
the fastest epoch's images/s (training steps incl. augmentation; the first epoch carries warm-up
and compilation, shown apart), and the ratio is to the fp32 row of the same model in the same
run. Seconds/epoch extrapolates to FER2013's 28,709 training faces. The header names the CPU,
its bf16 flags, torch and the threads, so figures from two machines are never mixed up.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

FER2013_TRAIN = 28_709
# --modes: fp32 (--amp off), bf16 (forced: what the CPU flags alone would pick), auto (timed)
AMP_OF_MODE = {"fp32": "off", "bf16": "bf16"}


def synthetic_dataset(n: int, seed: int = 0):
    """n random 'faces' (uniform noise with a class-dependent brightness), 90% train, 10% val."""
    from ferkit.data.dataset import FaceDataset

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, n)
    images = np.clip(rng.normal(100 + 10 * labels[:, None, None], 40, (n, 48, 48)), 0, 255)
    splits = np.where(np.arange(n) % 10 == 0, "val", "train")
    return FaceDataset(images.astype(np.uint8), labels, splits, np.arange(n).astype(str), "synth")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("models", nargs="*", default=["ferkit-small", "shallow-cnn", "ferkit-vgg"],
                        help="zoo model names (ferkit-vgg runs at width 32 unless --vgg-width)")
    parser.add_argument("--modes", default="fp32,auto,auto+compile",
                        help="comma-separated: fp32, bf16, auto, auto+compile")
    parser.add_argument("--vgg-width", type=int, default=32, help="ferkit-vgg width")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=0,
                        help="synthetic faces to train on (default: 2,048 on CPU, 28,709 on CUDA)")
    parser.add_argument("--data", default="", help="train on this dataset's training faces instead")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per model; the best counts")
    parser.add_argument("--augment", default="default", help="augmentation preset")
    parser.add_argument("--ema", type=float, default=0.0, help="EMA decay (0 = off)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    args = parser.parse_args()

    from ferkit.devices import resolve_device
    from ferkit.errors import FerkitError
    from ferkit.models.registry import create_model
    from ferkit.training.config import TrainConfig
    from ferkit.training.trainer import train

    device = resolve_device(args.device)
    if args.data:
        from ferkit.data import load_dataset

        dataset = load_dataset(args.data)
    else:
        n = args.images or (FER2013_TRAIN if device.type == "cuda" else 2048)
        dataset = synthetic_dataset(int(n / 0.9))
    n_train = int((dataset.splits == "train").sum())
    if args.threads:
        torch.set_num_threads(args.threads)
    elif device.type == "cpu":
        import os

        torch.set_num_threads(os.cpu_count() or 1)
    import kornia

    from ferkit.precision import NATIVE_BF16_CPU_FLAGS, cpu_flags

    flags = sorted(f for f in cpu_flags() if f in NATIVE_BF16_CPU_FLAGS or f == "avx512f")
    print(f"device {describe_device(device)}; cpu flags {' '.join(flags) or 'none of interest'}")
    print(f"torch {torch.__version__}, kornia {kornia.__version__}, python "
          f"{sys.version.split()[0]}; auto = what ferkit train chose for the model (timed)")
    print(f"{n_train:,} training faces, batch {args.batch_size}, augment {args.augment}, "
          f"ema {args.ema or 'off'}")
    nw = max(len(name) for name in ["model", *args.models]) + 2  # the model column's width
    print(f"{'model':<{nw}}{'mode':<14}{'runs as':<22}{'params':>10}{'images/s':>10}"
          f"{'x fp32':>8}{'s/epoch*':>9}{'first ep s':>11}{'eval+save s':>12}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            kwargs = {"width": args.vgg_width} if name == "ferkit-vgg" else {}
            params = sum(p.numel() for p in create_model(name, **kwargs).parameters())
            base = None
            for mode in modes:
                config = TrainConfig(model=name, model_kwargs=kwargs, epochs=args.epochs,
                                     batch_size=args.batch_size, device=args.device,
                                     augment=args.augment, ema=args.ema,
                                     amp=AMP_OF_MODE.get(mode, "auto"),
                                     compile=mode.endswith("+compile"), threads=args.threads,
                                     out=str(Path(tmp) / f"{name}-{mode}"))
                t0 = time.perf_counter()
                try:
                    result = train(config, dataset)
                except FerkitError as exc:
                    print(f"{name:<{nw}}{mode:<14}  skipped: {exc}")
                    continue
                wall = time.perf_counter() - t0
                best = max(result.history, key=lambda m: m.images_per_s)
                base = base or (best.images_per_s if mode == "fp32" else None)
                ratio = f"{best.images_per_s / base:.2f}" if base else "-"
                overhead = (wall - result.data_seconds - result.train_seconds) / len(result.history)
                runs_as = _precision_label(result.run_dir)
                print(f"{name:<{nw}}{mode:<14}{runs_as:<22}{params:>10,}"
                      f"{best.images_per_s:>10,.0f}{ratio:>8}"
                      f"{FER2013_TRAIN / best.images_per_s:>9.1f}"
                      f"{result.history[0].epoch_seconds:>11.1f}{overhead:>12.2f}", flush=True)
    print(f"* seconds per epoch of FER2013's {FER2013_TRAIN:,} training faces at that rate")


def _precision_label(run_dir: Path) -> str:
    """'bf16 + channels_last', 'fp32': how the run computed (its config.json's execution)."""
    import json

    from ferkit.precision import precision_label

    execution = json.loads((run_dir / "config.json").read_text())["execution"]
    return precision_label(execution["precision"], execution["channels_last"])


if __name__ == "__main__":
    main()
