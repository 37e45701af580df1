"""CPU inference speed of the model zoo: faces/s at a fixed batch, eval mode, inference_mode.

    .venv/bin/python bench/zoo_speed.py                      # every entry, batch 256, 2 threads
    .venv/bin/python bench/zoo_speed.py ferkit-small resnet --repeats 10
    .venv/bin/python bench/zoo_speed.py --threads 1 --cpu-time      # per-core, contention-proof

Prints the best of --repeats timed batches (after warm-up): on a shared machine, the best run is
the one least disturbed by other processes. --cpu-time times the process's CPU time instead of
the wall clock: with --threads 1 that gives faces/s per core, little affected by other processes.
"""

from __future__ import annotations

import argparse
import time

import torch

from ferkit.errors import ModelError
from ferkit.models.info import count_flops, count_parameters
from ferkit.models.registry import create_model, list_models


def faces_per_second(model: torch.nn.Module, batch: int, repeats: int, warmup: int = 2,
                     clock=time.perf_counter) -> float:
    x = torch.randn(batch, 1, 48, 48)
    model.eval()
    best = float("inf")
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(repeats):
            start = clock()
            model(x)
            best = min(best, clock() - start)
    return batch / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*",
                        help="zoo names (default: every entry under --max-mflops)")
    parser.add_argument("--max-mflops", type=float, default=5000,
                        help="without names, skip entries heavier than this per face")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu-time", action="store_true", help="time CPU, not the wall clock")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.models or [e.name for e in list_models()]
    clock = time.process_time if args.cpu_time else time.perf_counter
    print(f"batch {args.batch}, {args.threads} threads, best of {args.repeats}, "
          f"{'CPU' if args.cpu_time else 'wall'} time")
    print(f"{'model':<20}{'params':>12}{'MFLOPs':>10}{'faces/s':>10}")
    for name in names:
        try:
            model = create_model(name)
        except ModelError as exc:
            print(f"{name:<20}  skipped: {exc}")
            continue
        mflops = count_flops(model) / 1e6
        if not args.models and mflops > args.max_mflops:
            print(f"{name:<20}  skipped: {mflops:,.0f} MFLOPs/face > --max-mflops")
            continue
        fps = faces_per_second(model, args.batch, args.repeats, clock=clock)
        print(f"{name:<20}{count_parameters(model):>12,}{mflops:>10.1f}{fps:>10,.0f}", flush=True)


if __name__ == "__main__":
    main()
