"""Train a wide teacher, distil the bundled model's architecture from it, bundle and evaluate it.

    # a GPU session (bench/gpu_suite.sh runs this): about 8 minutes in all
    python bench/distill_pipeline.py --data .carry/fer2013.zip --device cuda --out $OUT
    # anywhere, CPU, synthetic data, tiny models: checks the script end to end in a minute
    python bench/distill_pipeline.py --tiny --out /tmp/pipeline

The path to the 71% bundled model where compute allows it (the CPU here trains the teacher at
160-900 images/s, hours for 100 epochs). The recipe is fixed beforehand, nothing is chosen on
PublicTest: the teacher `ferkit-vgg` width 64 and then the student `ferkit-small` width 32 (the
bundled model's architecture), each `--epochs` epochs (100) unless its measured seconds per
epoch would take it past its minutes (then the epochs that fit: the JSON says so), the trainer's
defaults otherwise (SGD one-cycle lr 0.05, batch 128, label smoothing 0.1, the default
augmentation), EMA 0.999, live distillation (weight 0.7, T 4), all of Training. Both are
evaluated on the val split (PublicTest) from their last epoch, without and with flip TTA. The
student is written as a bundled model (scripts/bundle_model.py) to OUT/default.pt, the figures
to OUT/distill.json (after each stage); copy the first to src/ferkit/weights/ only after reading
the second. The teacher comes back too, in fp16 (OUT/teacher.pt, 9 MB; the device tool returns
files up to 16 MiB): a CPU session can distil from it with `--distill-targets fixed`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from train_throughput import describe_device, synthetic_dataset  # bench/ is on sys.path
from zoo_table import probe_seconds_per_epoch, run_entry

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ("ferkit-vgg", {"width": 64})
STUDENT = ("ferkit-small", {"width": 32})
TINY_WIDTH = 8


def train_stage(name: str, kwargs: dict, minutes: float, dataset, args, out: Path,
                **recipe) -> dict:
    """Probe, then train `name` for the epochs that fit `minutes`; evaluate its last epoch."""
    s_per_epoch = probe_seconds_per_epoch(name, kwargs, dataset, args, out.parent, **recipe)
    epochs = max(1, min(args.epochs, math.floor(minutes * 60 / s_per_epoch)))
    print(f"{name} {kwargs}: {s_per_epoch:.1f} s/epoch -> {epochs} epochs", flush=True)
    run = run_entry(name, kwargs, args.seed, epochs, dataset, args, out, **recipe)
    print(f"{name}: PublicTest {run['accuracy']:.2%} ({run['accuracy_flip']:.2%} with flip), "
          f"{run['train_seconds']:.0f} s of training", flush=True)
    return {"model": name, "model_kwargs": kwargs,
            "budget": f"{args.epochs} epochs or {minutes:g} min",
            "budget_limited": epochs < args.epochs, "seconds_per_epoch": round(s_per_epoch, 2),
            **run}


def bundle(run_dir: Path, path: Path, command: str, device: str, *extra: str) -> None:
    """scripts/bundle_model.py: the last epoch without optimizer state, with its provenance."""
    path_entries = [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path_entries))}
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bundle_model.py"), str(run_dir),
                    "--command", command, "--device", device, "--out", str(path), *extra],
                   check=True, env=env)


def write(report: dict, out: Path) -> None:
    (out / "distill.json").write_text(json.dumps(report, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--data", default="", help="FER2013 zip/CSV/folder (val = PublicTest)")
    parser.add_argument("--out", type=Path, default=Path("results"),
                        help="folder for distill.json and default.pt")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=100, help="epochs of each, unless over "
                        "its budget")
    parser.add_argument("--teacher-minutes", type=float, default=4.0)
    parser.add_argument("--student-minutes", type=float, default=2.5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    parser.add_argument("--tiny", action="store_true",
                        help="synthetic data, width-8 models, 1 epoch each, on the CPU")
    args = parser.parse_args()
    if not args.tiny and not args.data:
        parser.error("--data is required (or --tiny)")

    from ferkit.data import load_dataset
    from ferkit.devices import resolve_device

    teacher, student = TEACHER, STUDENT
    if args.tiny:
        args.epochs, args.batch_size, args.device = 1, 64, "cpu"
        teacher, student = ((name, {"width": TINY_WIDTH}) for name, _ in (TEACHER, STUDENT))
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    dataset = synthetic_dataset(448) if args.tiny else load_dataset(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"device": describe_device(device), "torch": torch.__version__,
              "date": date.today().isoformat(),
              "data": "synthetic (--tiny)" if args.tiny else Path(args.data).name,
              "recipe": f"ferkit train defaults, batch {args.batch_size}, ema 0.999; the student "
                        "distilled live (weight 0.7, T 4) from the teacher's last epoch"}
    with tempfile.TemporaryDirectory() as tmp_name:
        runs = Path(tmp_name)
        report["teacher"] = train_stage(*teacher, args.teacher_minutes, dataset, args,
                                        runs / "teacher")
        write(report, args.out)
        bundle(runs / "teacher", args.out / "teacher.pt", "ferkit train --model "
               f"{teacher[0]} --model-arg width={teacher[1]['width']} --epochs "
               f"{report['teacher']['epochs']} --ema 0.999", report["device"], "--half")
        report["student"] = train_stage(*student, args.student_minutes, dataset, args,
                                        runs / "student", teacher=str(runs / "teacher" / "last.pt"))
        command = (f"bench/distill_pipeline.py --epochs {args.epochs} --teacher-minutes "
                   f"{args.teacher_minutes:g} --student-minutes {args.student_minutes:g} "
                   f"--seed {args.seed}: ferkit train --model {student[0]} "
                   f"--model-arg width={student[1]['width']} --epochs "
                   f"{report['student']['epochs']} --ema 0.999 --teacher TEACHER_RUN")
        bundle(runs / "student", args.out / "default.pt", command, report["device"])
    report["bundled"] = {"path": "default.pt",
                         "bytes": (args.out / "default.pt").stat().st_size}
    report["wall_seconds"] = round(time.perf_counter() - t0, 1)
    write(report, args.out)
    print(f"wrote {args.out / 'distill.json'} and {args.out / 'default.pt'} "
          f"({report['wall_seconds']:.0f} s in all)")


if __name__ == "__main__":
    main()
