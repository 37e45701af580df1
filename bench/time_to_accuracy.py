"""Wall time for a training recipe to reach a target PublicTest (val) accuracy.

    # a small CPU check
    .venv/bin/python bench/time_to_accuracy.py --data /work/shared/datasets/fer2013.zip \\
        --model shallow-cnn --epochs 3 --limit 4000 --target 0.40 --device cpu
    # a GPU recipe
    .venv/bin/python bench/time_to_accuracy.py --data fer2013.zip --model ferkit-vgg \\
        --epochs 30 --batch-size 256 --target 0.70 --device cuda --compile

Loads the dataset (timed apart: a first load decodes the JPEGs, later ones hit ferkit's cache),
then trains the recipe with ferkit.training.train and stops after the first epoch whose val
accuracy (FER2013 PublicTest) reaches --target. Prints the data-load time, the training-step time
and the wall time from the start of training to that epoch (evaluation and checkpoints
included). Extra trainer options go through --set KEY=VALUE (any TrainConfig field), checked
and parsed by TrainConfig.override like `ferkit train`'s options.
"""

from __future__ import annotations

import argparse
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--data", required=True, help="FER2013 zip/CSV/folder (val = PublicTest)")
    parser.add_argument("--model", default="ferkit-vgg")
    parser.add_argument("--target", type=float, default=0.65, help="val accuracy to reach (0-1)")
    parser.add_argument("--epochs", type=int, default=30, help="the recipe's epochs (schedule)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--limit", type=int, default=0, help="train on the first N faces only")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--out", default="", help="run directory (default: a temporary one)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other TrainConfig option, e.g. --set ema=0.999")
    parser.add_argument("--no-stop", action="store_true",
                        help="train all epochs even after the target is reached")
    args = parser.parse_args()

    from ferkit.training.config import TrainConfig, parse_overrides

    extra = parse_overrides(args.set)
    recipe = {"data": args.data, "model": args.model, "epochs": args.epochs,
              "batch_size": args.batch_size, "lr": args.lr, "limit": args.limit,
              "device": args.device, "seed": args.seed, "compile": args.compile}
    TrainConfig().override({**recipe, **extra}, "--set").validated()  # fail before loading

    import torch

    from ferkit.data import load_dataset
    from ferkit.training.run_dir import read_metrics
    from ferkit.training.trainer import train

    t0 = time.perf_counter()
    dataset = load_dataset(args.data)
    load_seconds = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig().override({**recipe, "out": args.out or f"{tmp}/run", **extra},
                                        "--set")
        reached = {}
        t_train = time.perf_counter()

        def on_epoch(m) -> bool:  # True stops the run
            wall = time.perf_counter() - t_train
            print(f"epoch {m.epoch:>3}: val {m.val_acc:.2%}  train loss {m.train_loss:.3f}  "
                  f"{m.images_per_s:,.0f} img/s  wall {wall:.1f} s", flush=True)
            if m.val_acc >= args.target and not reached:
                reached.update(epoch=m.epoch, wall=wall, val=m.val_acc)
                return not args.no_stop
            return False

        info = {}
        train(config, dataset, on_epoch=on_epoch,
              on_start=lambda i: info.update(data_seconds=i.data_seconds, n=i.n_train))
        history_seconds = [r["epoch_seconds"] for r in read_metrics(config.out)]
        device = "cuda " + torch.cuda.get_device_name() if torch.cuda.is_available() and \
            args.device in ("auto", "cuda") else "cpu"
        print(f"\nrecipe: {args.model}, {args.epochs} epochs, batch {args.batch_size}, "
              f"limit {args.limit or 'none'}{', ' + str(extra) if extra else ''} on {device}; "
              f"torch {torch.__version__}")
        print(f"data load:          {load_seconds:8.1f} s (file -> memory; a cache hit after "
              "the first load)")
        print(f"data to device:     {info.get('data_seconds', 0):8.1f} s "
              f"({info.get('n', 0):,} training faces)")
        if reached:
            steps = sum(history_seconds[:reached["epoch"]])
            print(f"target {args.target:.2%} reached at epoch {reached['epoch']} "
                  f"(val {reached['val']:.2%})")
            print(f"training steps:     {steps:8.1f} s")
            print(f"wall to target:     {reached['wall']:8.1f} s (incl. eval and checkpoints)")
        else:
            print(f"target {args.target:.2%} NOT reached in {args.epochs} epochs "
                  f"(training steps {sum(history_seconds):.1f} s)")


if __name__ == "__main__":
    main()
