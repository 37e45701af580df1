"""Load test of `ferkit serve`: N concurrent clients on loopback, with and without micro-batching.

    .venv/bin/python bench/serve_load.py                        # bundled model, 32 clients
    .venv/bin/python bench/serve_load.py --model runs/x/best.pt --clients 64 --requests 400
    .venv/bin/python bench/serve_load.py --arch vgg-gap          # untrained zoo model
    .venv/bin/python bench/serve_load.py --endpoints predict --big-png 6000  # costly decodes

It starts two servers on free 127.0.0.1 ports, one with micro-batching and one without, and
loads one at a time, alternating between them in --rounds rounds (so load from other processes
on a shared machine hits both alike). For each endpoint it sends a bounded number of requests
from --clients threads, each with its own keep-alive connection and one request in flight:
- predict:  POST /v1/predict with the sample photo (detection + classification of its faces),
  or --photo FILE, or with --big-png N an N x N gray PNG of a few dozen kB that decodes to N*N
  bytes (the sample face pasted on a flat background): cheap to send, costly to decode;
- classify: POST /v1/classify with --faces already-cropped 48x48 faces (classification only).
It reports requests/s, p50/p99 latency, failed requests (any non-200 answer, error or timeout),
the server's own batching counters (mean requests merged per model run) and, on Linux, each
server process's peak resident memory, side by side.
Traffic goes to the loopback interface only, and every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import io
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ferkit.serving.config import DEFAULTS
from ferkit.serving.process import ServerProcess, encode_multipart, http_request


def sample_photo() -> Path:
    try:
        from ferkit.recognition.samples import sample_photo as bundled

        if bundled().exists():
            return bundled()
    except ImportError:
        pass
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def model_checkpoint(args, tmp: Path) -> str:
    """--model as given, or a checkpoint of an untrained --arch (also when no bundled model)."""
    from ferkit.models.checkpoint import DEFAULT_WEIGHTS

    if not args.arch and (args.model != "default" or DEFAULT_WEIGHTS.exists()):
        return args.model
    import torch

    from ferkit.classes import CLASSES
    from ferkit.models.checkpoint import save_checkpoint
    from ferkit.models.registry import create_model

    arch = args.arch or "shallow-cnn"
    if not args.arch:
        print(f"note: no bundled default model in this install; using an untrained {arch}")
    torch.manual_seed(0)
    model = create_model(arch)
    path = tmp / f"untrained-{arch}.pt"
    save_checkpoint(path, {"arch": arch, "arch_kwargs": {}, "classes": list(CLASSES),
                           "normalization": {"mean": 0.5, "std": 0.25}, "config": {}, "epoch": 0,
                           "metrics": {}, "state_dict": model.state_dict()})
    return str(path)


@functools.cache
def big_png(side: int) -> bytes:
    """side x side gray PNG: flat, with the sample face pasted in the middle."""
    from PIL import Image

    canvas = Image.new("L", (side, side), 128)
    face = Image.open(sample_photo()).convert("L")
    zoom = max(1, side // 3000)
    face = face.resize((face.width * zoom, face.height * zoom))
    canvas.paste(face, ((side - face.width) // 2, (side - face.height) // 2))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def photo_for(args) -> tuple[str, bytes, str]:
    """(file name, bytes, content type) of what /v1/predict gets."""
    if args.big_png:
        return "big.png", big_png(args.big_png), "image/png"
    path = args.photo or sample_photo()
    ctype = {".png": "image/png", ".webp": "image/webp"}.get(path.suffix.lower(), "image/jpeg")
    return path.name, path.read_bytes(), ctype


def peak_rss_mb(server: ServerProcess) -> float | None:
    """The server process's peak resident memory (Linux /proc), None elsewhere."""
    try:
        with open(f"/proc/{server.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, AttributeError, ValueError):
        pass
    return None


def requests_for(endpoint: str, args) -> tuple[str, bytes, dict[str, str]]:
    if endpoint == "predict":
        body, ctype = encode_multipart([("image", *photo_for(args))])
        return "/v1/predict", body, {"Content-Type": ctype}
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (args.faces, 48, 48)).tolist()
    return "/v1/classify", json.dumps({"faces": faces}).encode(), \
        {"Content-Type": "application/json"}


def run_load(url: str, endpoint: str, args, n_requests: int) -> dict:
    """n_requests from args.clients keep-alive clients; raw latencies, failures, counters."""
    path, body, headers = requests_for(endpoint, args)
    host, port = url.split("//", 1)[1].split(":")
    lock = threading.Lock()
    issued = {"n": 0}
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.monotonic() + args.max_seconds
    barrier = threading.Barrier(args.clients + 1)

    def take() -> bool:
        with lock:
            if issued["n"] >= n_requests or time.monotonic() > deadline:
                return False
            issued["n"] += 1
            return True

    def client() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=args.timeout)
        barrier.wait()
        while take():
            start = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                res = conn.getresponse()
                res.read()
                ok = res.status == 200
                reason = f"HTTP {res.status}"
            except Exception as exc:  # noqa: BLE001 - counted as a failed request
                ok, reason = False, f"{exc.__class__.__name__}: {exc}"
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=args.timeout)
            elapsed = time.perf_counter() - start
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    failures.append(reason)
        conn.close()

    before = http_request("GET", url + "/healthz").json()["batching"]
    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    after = http_request("GET", url + "/healthz").json()["batching"]
    return {"latencies": latencies, "failures": failures, "wall": wall,
            "calls": after["calls"] - before["calls"],
            "batches": after["batches"] - before["batches"],
            "max_batch_calls": after["max_batch_calls"]}


def summarise(parts: list[dict]) -> dict:
    latencies = [x for p in parts for x in p["latencies"]]
    failures = [x for p in parts for x in p["failures"]]
    wall = sum(p["wall"] for p in parts)
    calls, batches = sum(p["calls"] for p in parts), sum(p["batches"] for p in parts)
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    n = len(latencies) + len(failures)
    return {
        "requests": n,
        "failed": len(failures),
        "failures": sorted(set(failures))[:5],
        "seconds": round(wall, 2),
        "req_per_s": round(n / wall, 2) if wall else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "mean_ms": round(float(np.mean(lat)), 1),
        "model_runs": batches,
        "requests_per_model_run": round(calls / batches, 2) if batches else 0.0,
        "max_requests_per_model_run": max(p["max_batch_calls"] for p in parts),
        "server_peak_rss_mb": max((p["peak_rss_mb"] for p in parts if p.get("peak_rss_mb")),
                                  default=None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="default, a checkpoint or a run dir")
    parser.add_argument("--arch", default=None, help="benchmark an untrained zoo architecture")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (32)")
    parser.add_argument("--requests", type=int, default=160,
                        help="requests per endpoint and mode (160)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="alternate the two modes in this many rounds, so drifting load "
                             "from other processes on the machine affects both alike (4)")
    parser.add_argument("--faces", type=int, default=4, help="faces per /v1/classify request (4)")
    parser.add_argument("--photo", type=Path, default=None,
                        help="image file for /v1/predict (default: the sample photo)")
    parser.add_argument("--big-png", type=int, default=0, metavar="N",
                        help="send an N x N gray PNG to /v1/predict instead (e.g. 6000)")
    parser.add_argument("--endpoints", default="predict,classify",
                        help="comma-separated: predict, classify")
    parser.add_argument("--batch-wait-ms", type=float, default=DEFAULTS.max_wait_ms)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--max-seconds", type=float, default=240.0,
                        help="stop issuing requests after this long, per endpoint and mode")
    parser.add_argument("--server-args", default="", help="extra `ferkit serve` arguments")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    if not set(endpoints) <= {"predict", "classify"} or args.clients < 1 or args.requests < 1:
        parser.error("bad --endpoints, --clients or --requests")
    if args.photo and not args.photo.is_file():
        parser.error(f"--photo {args.photo}: no such file")
    if args.big_png < 0 or (args.photo and args.big_png):
        parser.error("--big-png takes a positive size, and not together with --photo")
    if "predict" in endpoints:
        name, data, ctype = photo_for(args)
        print(f"predict sends {name} ({ctype}, {len(data) / 1024:.0f} kB)")

    modes = {"batching": "--batching", "no batching": "--no-batching"}
    parts: dict[str, dict[str, list[dict]]] = {e: {m: [] for m in modes} for e in endpoints}
    rounds = max(1, min(args.rounds, args.requests))
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        model = model_checkpoint(args, Path(tmp))
        servers = {}
        for mode, flag in modes.items():  # both servers up at once; only one gets load at a time
            extra = [flag, "--batch-wait-ms", str(args.batch_wait_ms), *args.server_args.split()]
            servers[mode] = stack.enter_context(ServerProcess(model, extra))
        info = http_request("GET", servers["batching"].url + "/v1/model").json()
        for endpoint in endpoints:
            path, body, headers = requests_for(endpoint, args)
            for server in servers.values():  # warm-up: lazy initialisation is not measured
                for _ in range(3):
                    http_request("POST", server.url + path, body, headers)
            for r in range(rounds):
                n = args.requests // rounds + (r < args.requests % rounds)
                for mode, server in servers.items():
                    part = run_load(server.url, endpoint, args, n)
                    part["peak_rss_mb"] = peak_rss_mb(server)  # since start: earlier loads too
                    parts[endpoint][mode].append(part)
            for mode in modes:
                s = summarise(parts[endpoint][mode])
                rss = s["server_peak_rss_mb"]
                print(f"  {endpoint:8s} {mode:11s}: {s['req_per_s']:7.2f} req/s, "
                      f"p50 {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms, "
                      f"{s['failed']} failed"
                      + (f", server peak RSS {rss:.0f} MB" if rss else ""), flush=True)
    results = {e: {m: summarise(parts[e][m]) for m in modes} for e in endpoints}

    print()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"ferkit serve load test: {args.clients} concurrent clients on 127.0.0.1, "
          f"{os.cpu_count()} CPUs (load average {load:.1f} at the end), model {info['name']} "
          f"({info['arch']}), batch wait {args.batch_wait_ms:g} ms, {rounds} alternating rounds")
    header = f"{'endpoint':9s} {'mode':12s} {'requests':>8s} {'failed':>6s} {'req/s':>8s} " \
             f"{'p50 ms':>8s} {'p99 ms':>8s} {'req/run':>8s} {'RSS MB':>7s}"
    print(header)
    print("-" * len(header))
    for endpoint, modes in results.items():
        for mode, r in modes.items():
            print(f"{endpoint:9s} {mode:12s} {r['requests']:8d} {r['failed']:6d} "
                  f"{r['req_per_s']:8.2f} {r['p50_ms']:8.0f} {r['p99_ms']:8.0f} "
                  f"{r['requests_per_model_run']:8.2f} "
                  f"{r['server_peak_rss_mb'] or float('nan'):7.0f}")
            for f in r["failures"]:
                print(f"    failure: {f}")
    print("req/run: requests served per model run (micro-batches merge concurrent requests); "
          "RSS: the server's peak resident memory since it started")
    if args.json:
        args.json.write_text(json.dumps({"clients": args.clients, "model": info["name"],
                                         "arch": info["arch"], "results": results}, indent=2))
    if any(r["failed"] for modes in results.values() for r in modes.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
