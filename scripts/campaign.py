"""The training campaign's bookkeeping: training that outlives one working period's machine.

campaign/jobs.json is the one record of every job: its `ferkit train` options, purpose, state,
the CPU-hours estimated and spent (one segment per machine it ran on) and its result.
campaign/PLAN.md holds the strategy and the rules fixed before results; its job table is
generated from jobs.json by `status --write`. A run trains in runs/JOB (ignored by git); what
outlives the machine is committed under campaign/:

    inflight/JOB/   the one in-flight run's compact last.pt, config.json and metrics.jsonl
                    (replaced each period; at most one job at a time)
    models/JOB.pt   a finished job's weights (fp16, no optimizer state)
    results/JOB.json  its PublicTest accuracy with and without flip TTA

    python scripts/campaign.py status [--write]      # the job table (--write: into PLAN.md)
    python scripts/campaign.py start JOB [--threads N --cores C]   # new run, or resume
    python scripts/campaign.py save JOB              # before the period ends: commit it next
    python scripts/campaign.py finish JOB            # a run that reached its last epoch
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path

from ferkit.models.checkpoint import load_checkpoint, save_checkpoint
from ferkit.precision import cpu_flags, cpu_name, native_bf16_flags
from ferkit.training import run_dir as rd
from ferkit.training.compact import compact_checkpoint

ROOT = Path(__file__).resolve().parent.parent
CAMPAIGN = ROOT / "campaign"
JOBS = CAMPAIGN / "jobs.json"
PLAN = CAMPAIGN / "PLAN.md"
INFLIGHT = CAMPAIGN / "inflight"
MODELS = CAMPAIGN / "models"
RESULTS = CAMPAIGN / "results"
RUNS = ROOT / "runs"
DATA = ROOT.parent / "shared" / "datasets" / "fer2013.zip"
TABLE_BEGIN, TABLE_END = "<!-- jobs: begin -->", "<!-- jobs: end -->"
FERKIT = [sys.executable, "-m", "ferkit"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("status", help="print the job table")
    p.add_argument("--write", action="store_true", help="also write it into PLAN.md")
    p = sub.add_parser("start", help="start or resume a job in the background")
    p.add_argument("job")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cores", default="1", help="taskset core list (default: core 1)")
    p.add_argument("--data", type=Path, default=DATA)
    p = sub.add_parser("save", help="store the in-flight run compactly under campaign/")
    p.add_argument("job")
    p = sub.add_parser("finish", help="store a finished run's model and its result")
    p.add_argument("job")
    p.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    jobs = json.loads(JOBS.read_text())
    if args.command == "status":
        table = job_table(jobs)
        print(table)
        if args.write:
            write_table(table)
        return
    job = find_job(jobs, args.job)
    if args.command == "start":
        start(job, args.threads, args.cores, args.data)
    elif args.command == "save":
        save(job)
    else:
        finish(job, args.data)
    JOBS.write_text(json.dumps(jobs, indent=2) + "\n")
    write_table(job_table(jobs))


def find_job(jobs: dict, name: str) -> dict:
    for job in jobs["jobs"]:
        if job["id"] == name:
            return job
    raise SystemExit(f"error: {JOBS}: no job {name!r} (jobs: "
                     f"{', '.join(j['id'] for j in jobs['jobs'])})")


def start(job: dict, threads: int, cores: str, data: Path) -> None:
    """Resume runs/JOB (from campaign/inflight/JOB on a fresh machine), or start it anew."""
    run = RUNS / job["id"]
    stored = INFLIGHT / job["id"]
    if not (run / rd.LAST).exists() and (stored / rd.LAST).exists():
        run.mkdir(parents=True, exist_ok=True)
        for f in stored.iterdir():
            shutil.copy2(f, run / f.name)
        print(f"restored {run} from {stored}")
    resume = (run / rd.LAST).exists()
    cmd = ["taskset", "-c", cores, *FERKIT, "train", "--data", str(data), "--threads",
           str(threads), "--out", str(run)]
    cmd += ["--resume"] if resume else job["args"]
    done = load_checkpoint(run / rd.LAST)["epoch"] if resume else 0
    log = RUNS / f"{job['id']}.log"
    RUNS.mkdir(exist_ok=True)
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True)
    job["state"] = "running"
    job["segments"].append({"machine": machine(), "threads": threads, "from_epoch": done,
                            "started": now(), "pid": proc.pid})
    print(f"{'resumed' if resume else 'started'} {job['id']} at epoch {done} "
          f"(pid {proc.pid}, {threads} thread(s) on core(s) {cores}); log: {log}")


def save(job: dict) -> None:
    """Compact the run's last.pt into campaign/inflight/JOB (the only in-flight job kept) and
    book the CPU-hours of the segment so far."""
    run = RUNS / job["id"]
    ckpt = load_checkpoint(run / rd.LAST)
    for other in INFLIGHT.glob("*") if INFLIGHT.exists() else ():
        if other.name != job["id"]:
            shutil.rmtree(other)
    stored = INFLIGHT / job["id"]
    stored.mkdir(parents=True, exist_ok=True)
    ckpt.pop("path", None)
    save_checkpoint(stored / rd.LAST, compact_checkpoint(ckpt))
    shutil.copy2(run / rd.CONFIG, stored / rd.CONFIG)
    rd.rewrite_metrics(stored, ckpt["history"])  # the epochs last.pt holds, no later line
    book_segment(job, ckpt["epoch"], (run / rd.LAST).stat().st_mtime)
    size = (stored / rd.LAST).stat().st_size / 2**20
    print(f"saved {job['id']} at epoch {ckpt['epoch']}/{job['epochs']} to {stored} "
          f"(last.pt {size:.1f} MiB); commit campaign/")


def finish(job: dict, data: Path) -> None:
    """The finished run's last epoch (not its best: that is chosen on PublicTest) in fp16, its
    PublicTest accuracy with and without flip, and the in-flight copy removed."""
    run = RUNS / job["id"]
    ckpt = load_checkpoint(run / rd.LAST)
    if ckpt["epoch"] < job["epochs"]:
        raise SystemExit(f"error: {run}: at epoch {ckpt['epoch']} of {job['epochs']}; "
                         "save it instead")
    book_segment(job, ckpt["epoch"], (run / rd.LAST).stat().st_mtime)
    MODELS.mkdir(parents=True, exist_ok=True)
    model = MODELS / f"{job['id']}.pt"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bundle_model.py"), str(run),
                    "--half", "--out", str(model), "--command", train_command(job),
                    "--device", job["segments"][-1]["machine"]], check=True)
    result = {"job": job["id"], "date": date.today().isoformat(), "model": rel(model),
              "epochs": ckpt["epoch"], "cpu_hours": spent(job), "publictest": {}}
    for tta in ("none", "flip"):
        out = run / f"eval-{tta}"
        subprocess.run([*FERKIT, "evaluate", "--model", str(model), "--data", str(data),
                        "--split", "val", "--tta", tta, "--out", str(out)], check=True,
                       cwd=ROOT, stdout=subprocess.DEVNULL)
        metrics = json.loads((out / "metrics.json").read_text())
        result["publictest"][tta] = {"accuracy": metrics["accuracy"],
                                     "macro_f1": metrics["macro_f1"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{job['id']}.json").write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(INFLIGHT / job["id"], ignore_errors=True)
    job["state"] = "done"
    job["result"] = {k: v["accuracy"] for k, v in result["publictest"].items()}
    print(json.dumps(result, indent=2))


def book_segment(job: dict, epoch: int, last_written: float) -> None:
    """The open segment ends at `epoch`, written at `last_written`: its CPU-hours are its wall
    time (data loading, timing and validation included) times its threads."""
    seg = job["segments"][-1]
    started = datetime.fromisoformat(seg["started"]).timestamp()
    seg["to_epoch"] = epoch
    seg["cpu_hours"] = round(max(last_written - started, 0.0) * seg["threads"] / 3600, 3)


def spent(job: dict) -> float:
    return round(sum(s.get("cpu_hours", 0.0) for s in job["segments"]), 2)


def job_table(jobs: dict) -> str:
    rows = ["| job | purpose | state | epochs | CPU-hours spent / estimated | PublicTest "
            "(flip) |", "| --- | --- | --- | ---: | ---: | --- |"]
    for job in jobs["jobs"]:
        done = max([s.get("to_epoch", s["from_epoch"]) for s in job["segments"]], default=0)
        result = job.get("result") or {}
        acc = (f"{result['none']:.2%} ({result['flip']:.2%})" if result else "-")
        rows.append(f"| {job['id']} | {job['purpose']} | {job['state']} | "
                    f"{done}/{job['epochs']} | {spent(job):.1f} / {job['estimate_cpu_hours']} | "
                    f"{acc} |")
    return "\n".join(rows)


def write_table(table: str) -> None:
    text = PLAN.read_text()
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    PLAN.write_text(f"{head}{TABLE_BEGIN}\n{table}\n{TABLE_END}{tail}")


def train_command(job: dict) -> str:
    return "ferkit train --data fer2013.zip " + " ".join(job["args"])


def machine() -> str:
    flags = cpu_flags()
    bf16 = native_bf16_flags(flags)
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    units = f"bf16 units ({', '.join(bf16)})" if bf16 else "no bf16 units"
    return f"{cpu_name()}, {os.cpu_count()} cores, {isa}, {units}"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
