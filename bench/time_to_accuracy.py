"""Wall time for a training recipe to reach target PublicTest (val) accuracies, over seeds.

    # a small CPU check
    .venv/bin/python bench/time_to_accuracy.py --data /work/shared/datasets/fer2013.zip \\
        --model shallow-cnn --epochs 3 --limit 4000 --target 0.30,0.40 --seeds 2 --device cpu
    # the CPU recipe of the README, three seeds, results kept
    .venv/bin/python bench/time_to_accuracy.py --data fer2013.zip --model ferkit-small \\
        --model-arg width=32 --epochs 50 --batch-size 128 --set ema=0.999 --seeds 3 \\
        --out runs/tta
    # a GPU recipe
    .venv/bin/python bench/time_to_accuracy.py --data fer2013.zip --model ferkit-vgg \\
        --epochs 30 --batch-size 256 --target 0.70 --device cuda --compile

Loads the dataset (timed apart: a first load decodes the JPEGs, later ones hit ferkit's cache),
then trains the recipe with ferkit.training.train once per seed and stops a run after the first
epoch whose val accuracy (FER2013 PublicTest) reaches the highest --target. Prints, per target,
the wall time from the start of training to that epoch (evaluation and checkpoints included)
and the training-step time: mean, min-max and how many seeds got there. Extra trainer options
go through --set KEY=VALUE (any TrainConfig field), checked and parsed by TrainConfig.override
like `ferkit train`'s options. With --out, every epoch of every run goes to OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path


def parse_targets(text: str) -> list[float]:
    """'0.65,0.70' -> [0.65, 0.7]: accuracies in [0, 1], sorted."""
    try:
        targets = sorted(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise SystemExit(f"--target {text!r}: expected accuracies such as 0.65,0.70") from None
    if not targets or not all(0 <= t <= 1 for t in targets):
        raise SystemExit(f"--target {text!r}: expected accuracies in [0, 1], such as 0.65,0.70")
    return targets


def spread(values: list[float]) -> str:
    """'mean s (min-max, n=N)' of a few seconds figures."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.1f} s (n=1)"
    return f"{mean:.1f} s ({min(values):.1f}-{max(values):.1f}, n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--data", required=True, help="FER2013 zip/CSV/folder (val = PublicTest)")
    parser.add_argument("--model", default="ferkit-vgg")
    parser.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="a model keyword, as in ferkit train, e.g. --model-arg width=32")
    parser.add_argument("--target", default="0.65,0.70",
                        help="val accuracies to reach (0-1), comma-separated")
    parser.add_argument("--epochs", type=int, default=30, help="the recipe's epochs (schedule)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--limit", type=int, default=0, help="train on the first N faces only")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--seeds", type=int, default=1, help="runs, seeds --seed, --seed+1, ...")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--out", default="", help="run directories go under it (default: "
                        "temporary); its results.json holds every run's epochs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other TrainConfig option, e.g. --set ema=0.999")
    parser.add_argument("--no-stop", action="store_true",
                        help="train all epochs even after the last target is reached")
    args = parser.parse_args()
    targets = parse_targets(args.target)

    from ferkit.training.config import TrainConfig, parse_key_values, parse_overrides

    extra = parse_overrides(args.set)
    recipe = {"data": args.data, "model": args.model,
              "model_kwargs": parse_key_values(args.model_arg), "epochs": args.epochs,
              "batch_size": args.batch_size, "lr": args.lr, "limit": args.limit,
              "device": args.device, "seed": args.seed, "compile": args.compile}
    TrainConfig().override({**recipe, **extra}, "--set").validated()  # fail before loading

    import torch

    from ferkit.data import load_dataset
    from ferkit.precision import native_bf16_flags
    from ferkit.training.trainer import train

    t0 = time.perf_counter()
    dataset = load_dataset(args.data)
    load_seconds = time.perf_counter() - t0

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        for seed in range(args.seed, args.seed + args.seeds):
            config = TrainConfig().override(
                {**recipe, "seed": seed, "out": str(root / f"seed-{seed}"), **extra}, "--set")
            run = {"seed": seed, "epochs": [], "reached": {}}
            t_train = time.perf_counter()

            def on_epoch(m, run=run, t_train=t_train) -> bool:  # True stops the run
                wall = time.perf_counter() - t_train
                run["epochs"].append({"epoch": m.epoch, "val_acc": m.val_acc, "wall_s": wall,
                                      "epoch_seconds": m.epoch_seconds})
                print(f"seed {run['seed']} epoch {m.epoch:>3}: val {m.val_acc:.2%}  train loss "
                      f"{m.train_loss:.3f}  {m.images_per_s:,.0f} img/s  wall {wall:.1f} s",
                      flush=True)
                for target in targets:
                    if m.val_acc >= target and target not in run["reached"]:
                        steps = sum(e["epoch_seconds"] for e in run["epochs"])
                        run["reached"][target] = {"epoch": m.epoch, "wall_s": wall,
                                                  "steps_s": steps, "val_acc": m.val_acc}
                return len(run["reached"]) == len(targets) and not args.no_stop

            info: dict = {}
            train(config, dataset, on_epoch=on_epoch,
                  on_start=lambda i, info=info: info.update(data_seconds=i.data_seconds,
                                                            n=i.n_train))
            run.update(data_to_device_s=info.get("data_seconds", 0), n_train=info.get("n", 0))
            runs.append(run)

        device = "cuda " + torch.cuda.get_device_name() if torch.cuda.is_available() and \
            args.device in ("auto", "cuda") else \
        f"cpu ({platform.processor() or platform.machine()}, flags " \
        f"{' '.join(native_bf16_flags()) or 'no bf16'})"
        threads = torch.get_num_threads()
        kwargs = "".join(f" {k}={v}" for k, v in recipe["model_kwargs"].items())
        print(f"\nrecipe: {args.model}{kwargs}, {args.epochs} epochs, batch {args.batch_size}, "
              f"limit {args.limit or 'none'}{', ' + str(extra) if extra else ''}; seeds "
              f"{args.seed}-{args.seed + args.seeds - 1}")
        print(f"device: {device}, {threads} torch threads; torch {torch.__version__}; "
              f"{time.strftime('%Y-%m-%d')}")
        print(f"data load: {load_seconds:.1f} s (file -> memory; a cache hit after the first "
              f"load); to the device: {runs[0]['data_to_device_s']:.1f} s "
              f"({runs[0]['n_train']:,} training faces); both apart from the times below")
        for run in runs:
            best = max(e["val_acc"] for e in run["epochs"])
            got = ", ".join(f"{t:.0%} at epoch {r['epoch']} ({r['wall_s']:.1f} s)"
                            for t, r in run["reached"].items()) or "no target reached"
            print(f"seed {run['seed']}: {got}; best val {best:.2%} in "
                  f"{len(run['epochs'])} epochs")
        for target in targets:
            walls = [r["reached"][target]["wall_s"] for r in runs if target in r["reached"]]
            steps = [r["reached"][target]["steps_s"] for r in runs if target in r["reached"]]
            if not walls:
                print(f"target {target:.2%}: reached by none of {len(runs)} seeds")
                continue
            print(f"target {target:.2%}: reached by {len(walls)} of {len(runs)} seeds; wall "
                  f"to target {spread(walls)} (incl. eval and checkpoints), training steps "
                  f"{spread(steps)}")
        if args.out:
            summary = {"recipe": {**recipe, **extra}, "device": device, "threads": threads,
                       "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
                       "data_load_s": load_seconds, "targets": targets, "runs": runs}
            (root / "results.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
