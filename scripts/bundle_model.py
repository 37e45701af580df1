"""Write src/ferkit/weights/default.pt from a training run's last epoch (not its best: the best
epoch is chosen on the val split, which is also the reporting split), without the optimizer
and RNG state, and with a note of where it came from.

    python scripts/bundle_model.py RUN_DIR --command "ferkit train ..." --device "2-core CPU"
"""

from __future__ import annotations

import argparse
import subprocess
from datetime import date
from pathlib import Path

from ferkit.models.checkpoint import DEFAULT_WEIGHTS, load_checkpoint, save_checkpoint

# load_checkpoint gives the current layout; its version is kept, and a distilled run's teacher
KEEP = ("version", "arch", "arch_kwargs", "classes", "normalization", "config", "epoch",
        "metrics", "state_dict", "teacher")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--command", required=True, help="the ferkit train command that ran")
    parser.add_argument("--device", required=True, help="what it ran on")
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--half", action="store_true",
                        help="store the weights in fp16 (half the file; they load into fp32)")
    args = parser.parse_args()
    ckpt = load_checkpoint(args.run_dir / "last.pt")
    try:  # "" where the tree is no git checkout or git is missing (a GPU machine's copy)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    bundled = {k: ckpt[k] for k in KEEP if k in ckpt}
    if args.half:
        bundled["state_dict"] = {k: v.half() if v.is_floating_point() else v
                                 for k, v in bundled["state_dict"].items()}
    bundled["provenance"] = {"command": args.command, "device": args.device, "commit": commit,
                             "date": date.today().isoformat(), "run": args.run_dir.name}
    save_checkpoint(args.out, bundled)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.2f} MB), epoch {ckpt['epoch']}, "
          f"metrics {ckpt.get('metrics')}")


if __name__ == "__main__":
    main()
