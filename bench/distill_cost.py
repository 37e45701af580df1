"""What a teacher costs per training step: no teacher, live targets and fixed targets side by side.

    .venv/bin/python bench/distill_cost.py                                  # bundled model teaches
    .venv/bin/python bench/distill_cost.py --teacher a.pt --teacher b.pt    # a two-model ensemble
    .venv/bin/python bench/distill_cost.py --data fer2013.zip --threads 1

The student (ferkit-small width 32 unless --student/--width) trains `--epochs` epochs (default 2)
on `--images` synthetic 48x48 faces (or the training faces of --data) through
ferkit.training.train, `--rounds` times (default 2) in turn: without a teacher, with
`--distill-targets live` (the teacher runs on every augmented batch) and with `--distill-targets
fixed` (its flip-averaged answers on each clean face, computed once before training). Reported:
each mode's fastest epoch (images/s, its ratio to no teacher), fixed's one-off seconds, and the
FER2013 epochs after which fixed has paid for itself.
The teacher is the bundled model, a checkpoint, or an ensemble of several --teacher files.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from train_throughput import FER2013_TRAIN, describe_device, synthetic_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--teacher", action="append", default=[],
                        help="teacher checkpoint or run dir (repeat for an ensemble; "
                        "default: the bundled model)")
    parser.add_argument("--student", default="ferkit-small")
    parser.add_argument("--width", type=int, default=32, help="the student's width argument")
    parser.add_argument("--images", type=int, default=4096, help="synthetic training faces")
    parser.add_argument("--data", default="", help="train on this dataset's training faces instead")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; the best counts")
    parser.add_argument("--rounds", type=int, default=2,
                        help="cycles through the three modes; each mode's fastest epoch counts")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    args = parser.parse_args()

    from ferkit.data import load_dataset
    from ferkit.models.ensemble import save_ensemble
    from ferkit.training.config import TrainConfig
    from ferkit.training.trainer import train

    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data) if args.data else synthetic_dataset(int(args.images / 0.9))
    n_train = int((dataset.splits == "train").sum())
    with tempfile.TemporaryDirectory() as tmp:
        teacher = args.teacher[0] if len(args.teacher) == 1 else "default"
        if len(args.teacher) > 1:
            teacher = str(Path(tmp) / "ensemble.pt")
            save_ensemble(args.teacher, teacher)
        device = torch.device("cpu")
        print(f"device {describe_device(device)}; --amp auto (timed per run); torch "
              f"{torch.__version__}")
        named = ", ".join(args.teacher) or "the bundled model"
        print(f"student {args.student} width {args.width}; teacher {named}; {n_train:,} "
              f"training faces, batch {args.batch_size}")
        print(f"{'targets':<10}{'images/s':>10}{'x none':>8}{'s/epoch*':>10}{'one-off s*':>12}")
        epoch_s: dict[str, float] = {}
        one_off = 0.0
        runs = [(r, mode) for r in range(args.rounds) for mode in ("none", "live", "fixed")]
        for r, mode in runs:
            config = TrainConfig(model=args.student, model_kwargs={"width": args.width},
                                 epochs=args.epochs, batch_size=args.batch_size, device="cpu",
                                 threads=args.threads, out=str(Path(tmp) / f"{mode}{r}"),
                                 teacher="" if mode == "none" else teacher,
                                 distill_targets="fixed" if mode == "fixed" else "live")
            result = train(config, dataset)
            one_off = result.teacher_seconds * FER2013_TRAIN / n_train  # 0 unless fixed
            rate = max(m.images_per_s for m in result.history)
            epoch_s[mode] = min(epoch_s.get(mode, float("inf")), FER2013_TRAIN / rate)
            if r < args.rounds - 1:
                continue
            rate = FER2013_TRAIN / epoch_s[mode]
            print(f"{mode:<10}{rate:>10,.0f}{epoch_s['none'] / epoch_s[mode]:>8.2f}"
                  f"{epoch_s[mode]:>10.1f}{one_off:>12.1f}",
                  flush=True)
    saved = epoch_s["live"] - epoch_s["fixed"]
    print(f"* for FER2013's {FER2013_TRAIN:,} training faces at that rate. Fixed targets save "
          f"{saved:.1f} s per epoch against live ones"
          + (f" and pay for themselves after {one_off / saved:.1f} epochs." if saved > 0
             else "."))


if __name__ == "__main__":
    main()
