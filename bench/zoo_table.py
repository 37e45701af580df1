"""Train every seed architecture of the zoo under one recipe and budget; write a result JSON.

    # the CPU table (hours in all: run it in the background, it resumes where it stopped)
    nohup .venv/bin/python bench/zoo_table.py --data fer2013.zip --device cpu \\
        --out results/zoo-cpu.json > zoo.log 2>&1 &
    .venv/bin/python bench/zoo_table.py --readme results/zoo-cpu.json   # the README table
    .venv/bin/python bench/zoo_table.py --tiny --out /tmp/zoo.json           # a 1-minute check

One recipe for every entry (the trainer's defaults: SGD Nesterov one-cycle, label smoothing 0.1,
the default augmentation, batch 128, EMA 0.999, --amp auto), `--epochs` epochs (60) unless the
entry's measured seconds per epoch would take it past `--minutes` (25): then it trains for the
epochs that fit, and the table says so. Each entry is evaluated on the val split (FER2013
PublicTest) from its last epoch (not the best one: that would choose on the reporting split),
without and with flip TTA. Cheap entries (under `--cheap-mflops` per face) get `--seeds` seeds,
mean and spread. The JSON is rewritten after every run, and entries already in it are skipped,
so an interrupted table loses at most the run in progress. The runs' directories are deleted unless
`--keep-runs DIR` keeps them (a trained entry can then be a teacher: `ferkit train --teacher`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from train_throughput import describe_device, synthetic_dataset  # bench/ is on sys.path

# The zoo entries that stand for a seed project, with the seed's own figure (its protocol in
# the text), and ferkit's own models.
ENTRIES: list[tuple[str, dict, str]] = [
    ("shallow-cnn", {}, "56.31% (FER2013 test)"),
    ("deep-cnn", {}, "65.55% (FER2013 test)"),
    ("cnn4", {}, "64.8% val (71.4% on another dataset's test)"),
    ("vgg1", {}, "-"),
    ("vgg2", {}, "-"),
    ("vgg3", {}, "56.49% (VGG16 transfer: 58.03%)"),
    ("resnet", {}, "63.60% (60 epochs)"),
    ("inception", {}, "-"),
    ("mini-xception", {}, "65.9% (fer package, PrivateTest)"),
    ("efficientnet-lite0", {"pretrained": True}, "58.03% (the seed's VGG16 transfer)"),
    ("ferkit-small", {}, "-"),
    ("ferkit-vgg", {"width": 32}, "-"),
]
TINY_ENTRIES = ("shallow-cnn", "ferkit-small")


def probe_seconds_per_epoch(name: str, kwargs: dict, dataset, args, tmp: Path, **recipe
                            ) -> float:
    """Seconds per epoch of the full training set, from a short run on a slice of it (`recipe`:
    more TrainConfig fields, e.g. a teacher, whose cost counts too)."""
    from ferkit.training.config import TrainConfig
    from ferkit.training.trainer import train

    n_train = int((dataset.splits == "train").sum())
    limit = min(n_train, 40 * args.batch_size)
    config = TrainConfig(model=name, model_kwargs=kwargs, epochs=2, limit=limit,
                         batch_size=args.batch_size, device=args.device, threads=args.threads,
                         out=str(tmp / f"probe-{name}"), **recipe)
    history = train(config, dataset).history
    rate = max(h.images_per_s for h in history)
    return n_train / rate


def run_entry(name: str, kwargs: dict, seed: int, epochs: int, dataset, args, out: Path,
              **recipe) -> dict:
    """Train with the table's recipe (plus `recipe`: more TrainConfig fields) into `out`, then
    evaluate the last epoch on the val split without and with flip TTA."""
    from ferkit.evaluation.evaluate import evaluate
    from ferkit.models.predictor import Predictor
    from ferkit.training.config import TrainConfig
    from ferkit.training.trainer import train

    config = TrainConfig(model=name, model_kwargs=kwargs, epochs=epochs, seed=seed,
                         batch_size=args.batch_size, ema=0.999, device=args.device,
                         threads=args.threads, out=str(out), **recipe)
    t0 = time.perf_counter()
    result = train(config, dataset)
    wall = time.perf_counter() - t0
    predictor = Predictor.load(result.run_dir / "last.pt", device=args.device)
    acc = {tta: evaluate(predictor, dataset, split="val", tta=tta).accuracy
           for tta in ("none", "flip")}
    return {"seed": seed, "epochs": epochs, "train_seconds": round(result.train_seconds, 1),
            "wall_seconds": round(wall, 1), "accuracy": acc["none"],
            "accuracy_flip": acc["flip"], "train_accuracy": result.history[-1].train_acc}


def summarise(runs: list[dict], key: str) -> dict:
    values = [r[key] for r in runs]
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--data", default="", help="FER2013 zip/CSV/folder (val = PublicTest)")
    parser.add_argument("--out", default="results/zoo-cpu.json", help="result JSON")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", default="", help="comma-separated subset of the entries")
    parser.add_argument("--epochs", type=int, default=60, help="epochs unless over budget")
    parser.add_argument("--minutes", type=float, default=25.0, help="training budget per run")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads per run (0 = the cores this process may use)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds for cheap entries")
    parser.add_argument("--cheap-mflops", type=float, default=100.0,
                        help="entries under this many MFLOPs per face get --seeds seeds")
    parser.add_argument("--redo", action="store_true",
                        help="retrain the --models entries already in the JSON (e.g. with a "
                             "larger budget) instead of skipping them")
    parser.add_argument("--tiny", action="store_true",
                        help="synthetic data, 2 entries, 1 epoch: checks the script end to end")
    parser.add_argument("--keep-runs", metavar="DIR", default="",
                        help="keep each run's directory (checkpoints, curves) under DIR, e.g. as "
                             "a teacher for `ferkit train --teacher` (default: deleted)")
    parser.add_argument("--readme", metavar="JSON", default="",
                        help="print the README table of this result file and exit")
    args = parser.parse_args()
    if args.readme:
        print(readme_table(json.loads(Path(args.readme).read_text())))
        return

    from ferkit.data import load_dataset
    from ferkit.devices import resolve_device
    from ferkit.models.info import model_info
    from ferkit.training.finetune import checkpoint_arch_kwargs

    if not args.tiny and not args.data:
        parser.error("--data is required (or --tiny)")
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)  # evaluation, and the thread count the JSON records
    entries = [e for e in ENTRIES if not args.tiny or e[0] in TINY_ENTRIES]
    if args.models:
        wanted = set(args.models.split(","))
        entries = [e for e in entries if e[0] in wanted]
    if args.tiny:
        args.epochs, args.seeds, args.batch_size = 1, 1, 64
    dataset = synthetic_dataset(448) if args.tiny else load_dataset(args.data)
    out = Path(args.out)
    table = json.loads(out.read_text()) if out.exists() else {"entries": {}}
    table.update(device=describe_device(device), device_type=device.type, torch=torch.__version__,
                 recipe=f"ferkit train defaults, batch {args.batch_size}, ema 0.999, amp auto; "
                        "per run the entry's budget (epochs or minutes, whichever comes first)",
                 data="synthetic (--tiny)" if args.tiny else Path(args.data).name)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        runs_dir = Path(args.keep_runs) if args.keep_runs else tmp
        for name, kwargs, seed_figure in entries:
            key = name + "".join(f" {k}={v}" for k, v in kwargs.items())
            if key in table["entries"] and not (args.tiny or args.redo):
                print(f"{key}: already in {out}, skipped", flush=True)
                continue
            info = model_info(name, **checkpoint_arch_kwargs(kwargs))  # no weights to load
            try:
                s_per_epoch = probe_seconds_per_epoch(name, kwargs, dataset, args, tmp)
            except Exception as exc:  # an entry that cannot train here is reported, not fatal
                table["entries"][key] = {"error": f"{exc.__class__.__name__}: {exc}"}
                _write(out, table, key)
                print(f"{key}: cannot train ({exc})", flush=True)
                continue
            fit = max(1, math.floor(args.minutes * 60 / s_per_epoch))
            epochs = min(args.epochs, fit)
            seeds = args.seeds if (info.get("mflops") or 0) < args.cheap_mflops else 1
            print(f"{key}: {s_per_epoch:.1f} s/epoch -> {epochs} epochs x {seeds} seed(s)",
                  flush=True)
            entry_dir = runs_dir / (name + "".join(f"-{k}={v}" for k, v in kwargs.items()))
            runs = [run_entry(name, kwargs, seed, epochs, dataset, args, entry_dir / f"seed{seed}")
                    for seed in range(seeds)]
            table["entries"][key] = {
                "params": info.get("params"), "mflops": info.get("mflops"),
                "seconds_per_epoch": round(s_per_epoch, 1), "epochs": epochs,
                "budget_limited": epochs < args.epochs, "seed_figure": seed_figure,
                "budget": f"{args.epochs} epochs or {args.minutes:g} min",
                "threads": torch.get_num_threads(),
                "accuracy": summarise(runs, "accuracy"),
                "accuracy_flip": summarise(runs, "accuracy_flip"), "runs": runs,
                "date": date.today().isoformat()}
            _write(out, table, key)
            acc = table["entries"][key]["accuracy"]
            print(f"{key}: PublicTest {acc['mean']:.2%} (n={acc['n']})", flush=True)
    print(readme_table(json.loads(out.read_text()) if out.exists() else table))


def _write(path: Path, table: dict, key: str) -> None:
    """Save entry `key` into the file as it is now: two runs of this script (one per core) may
    share one result file, and neither overwrites the other's entries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(path.read_text()) if path.exists() else {"entries": {}}
    current.update({k: v for k, v in table.items() if k != "entries"})
    current["entries"][key] = table["entries"][key]
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(current, indent=1) + "\n")
    tmp.replace(path)


def _pct(summary: dict) -> str:
    text = f"{summary['mean']:.2%}"
    if summary["n"] > 1:
        text += f" ({summary['min']:.1%}-{summary['max']:.1%}, n={summary['n']})"
    return text


def readme_table(table: dict) -> str:
    """The README's zoo table: one row per entry of the result file, blanks explained."""
    lines = [f"Device: {table.get('device')} (torch {table.get('torch')}); data: "
             f"{table.get('data')}; recipe: {table.get('recipe')}.", "",
             "| model | params | MFLOPs | budget | epochs | s/epoch | PublicTest | + flip TTA | "
             "seed's figure |", "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for key, e in table.get("entries", {}).items():
        if "error" in e:
            lines.append(f"| {key} | | | | | | not trained: {e['error']} | | |")
            continue
        epochs = f"{e['epochs']}" + (" (budget)" if e.get("budget_limited") else "")
        budget = e["budget"] + (f", {e['threads']} thread(s)" if "threads" in e else "")
        lines.append(f"| {key} | {e['params']:,} | {e['mflops']} | {budget} | {epochs} | "
                     f"{e['seconds_per_epoch']} | {_pct(e['accuracy'])} | "
                     f"{_pct(e['accuracy_flip'])} | {e['seed_figure']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
