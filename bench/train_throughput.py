"""Training throughput of zoo models with the real trainer: images/s and seconds per FER2013 epoch.

    .venv/bin/python bench/train_throughput.py shallow-cnn --device cpu --images 2048   # small, CPU
    .venv/bin/python bench/train_throughput.py shallow-cnn ferkit-vgg resnet --device cuda
    .venv/bin/python bench/train_throughput.py ferkit-vgg --device cuda --compile --batch-size 512

Each model trains `--epochs` epochs (default 2) on `--images` synthetic 48x48 faces (or the
training faces of --data) through ferkit.training.train: the same device-resident batches,
Kornia augmentation, bf16 autocast/channels_last on CUDA, optimizer and EMA as a real run. The
figure reported is the fastest epoch's images/s (training steps only; the first epoch carries
warm-up, cuDNN autotuning and torch.compile), and seconds/epoch extrapolates it to FER2013's
28,709 training faces. Evaluation and checkpoint writing are excluded (they are printed apart).

On the CPU it also prints images per CPU-second of this process (steps 2..N of the best epoch,
time.process_time): on a machine shared with other jobs the wall-clock rate drops with the load,
while images/CPU-s stays close to what one otherwise idle core delivers (with --threads 1 it is
the idle single-thread rate; with more threads, spin-waiting makes it an underestimate).
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


def synthetic_dataset(n: int, seed: int = 0):
    """n random 'faces' (uniform noise with a class-dependent brightness), 90% train, 10% val."""
    from ferkit.data.dataset import FaceDataset

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, n)
    images = np.clip(rng.normal(100 + 10 * labels[:, None, None], 40, (n, 48, 48)), 0, 255)
    splits = np.where(np.arange(n) % 10 == 0, "val", "train")
    return FaceDataset(images.astype(np.uint8), labels, splits, np.arange(n).astype(str), "synth")


class CpuClock:
    """Process CPU time from the end of step 1 to the end of the last step of each epoch."""

    def __init__(self) -> None:
        self.start: dict[int, float] = {}
        self.spans: list[tuple[int, float]] = []  # (steps timed, CPU seconds)

    def on_step(self, s) -> None:
        if s.step == 1:
            self.start[s.epoch] = time.process_time()
        if s.step == s.steps and s.steps > 1:
            self.spans.append((s.steps - 1, time.process_time() - self.start[s.epoch]))

    def best_rate(self, batch_size: int) -> float:
        rates = [steps * batch_size / max(cpu, 1e-9) for steps, cpu in self.spans]
        return max(rates, default=float("nan"))


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("models", nargs="*", default=["shallow-cnn"], help="zoo model names")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=0,
                        help="synthetic faces to train on (default: 2,048 on CPU, 28,709 on CUDA)")
    parser.add_argument("--data", default="", help="train on this dataset's training faces instead")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per model; the best counts")
    parser.add_argument("--augment", default="default", help="augmentation preset")
    parser.add_argument("--ema", type=float, default=0.0, help="EMA decay (0 = off)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
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

    print(f"device {describe_device(device)}; torch {torch.__version__}, kornia "
          f"{kornia.__version__}, python {sys.version.split()[0]}")
    print(f"{n_train:,} training faces, batch {args.batch_size}, augment {args.augment}, "
          f"ema {args.ema or 'off'}, compile {args.compile}, "
          f"amp {'bf16' if device.type == 'cuda' and not args.no_amp else 'off'}")
    cpu = device.type == "cpu"
    print(f"{'model':<18}{'params':>11}{'images/s':>11}{'s/epoch*':>10}{'first ep s':>11}"
          f"{'eval+save s':>12}" + (f"{'img/CPU-s':>11}" if cpu else ""))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            config = TrainConfig(model=name, epochs=args.epochs, batch_size=args.batch_size,
                                 device=args.device, augment=args.augment, ema=args.ema,
                                 compile=args.compile, amp=not args.no_amp,
                                 threads=args.threads, out=str(Path(tmp) / name))
            t0 = time.perf_counter()
            clock = CpuClock()
            try:
                result = train(config, dataset, on_step=clock.on_step)
            except FerkitError as exc:
                print(f"{name:<18}  skipped: {exc}")
                continue
            wall = time.perf_counter() - t0
            best = max(result.history, key=lambda m: m.images_per_s)
            params = sum(p.numel() for p in create_model(name).parameters())
            overhead = (wall - result.data_seconds - result.train_seconds) / len(result.history)
            print(f"{name:<18}{params:>11,}{best.images_per_s:>11,.0f}"
                  f"{FER2013_TRAIN / best.images_per_s:>10.1f}"
                  f"{result.history[0].epoch_seconds:>11.1f}{overhead:>12.2f}"
                  + (f"{clock.best_rate(args.batch_size):>11,.0f}" if cpu else ""), flush=True)
    print(f"* seconds per epoch of FER2013's {FER2013_TRAIN:,} training faces at that rate")


if __name__ == "__main__":
    main()
