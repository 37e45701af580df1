"""ferkit CLI: `ferkit serve`, the HTTP API and the web page (needs the ferkit[serve] extra)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket

import typer

from ferkit.errors import FerkitError
from ferkit.recognition.sizes import DETECT_SIZE, DETECT_SIZE_HELP, check_detect_size

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
SERVE_MODULES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart"}


def missing_serve_packages() -> list[str]:
    return [pkg for mod, pkg in SERVE_MODULES.items() if importlib.util.find_spec(mod) is None]


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise FerkitError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                              "pick another port with --port") from None


def _auto_decode_slots(workers: int) -> int | None:
    """With several workers, share the CPUs among them; one process decides for itself."""
    if workers == 1:
        return None
    from ferkit.serving.limits import usable_cpus

    return max(1, usable_cpus() // workers)


HELP = """Serve the HTTP API and the web page (photo upload, live webcam).

Needs `pip install 'ferkit\\[serve]'`. The API reference is at /docs once it runs.

Examples:

  ferkit serve

  ferkit serve --model runs/ferkit-vgg --port 8080

  # from another shell, once it runs
  curl -F image=@photo.jpg http://127.0.0.1:8000/v1/predict
"""


def serve(
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Address to listen on. 0.0.0.0 makes the server reachable from "
                                  "other machines (phones on your network): only on networks you "
                                  "trust."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    model: str = typer.Option("default", "--model", "-m",
                              help="'default' (bundled weights), a checkpoint file or a run "
                                   "directory."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    workers: int = typer.Option(1, "--workers", min=1, max=64,
                                help="Server processes, each with its own copy of the model."),
    threads: int = typer.Option(0, "--threads", min=0, max=256,
                                help="Decoding/detection threads per process (0: CPU count + 2, "
                                     "at most 8)."),
    decode_slots: int = typer.Option(0, "--decode-slots", min=0, max=256,
                                     help="Uploads decoded at once per process; the others "
                                          "queue, so memory holds at most this many big photos "
                                          "(0: one per CPU, divided among --workers)."),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", min=0.001,
                                        help="Larger uploads are refused with 413."),
    max_pixels: int = typer.Option(40_000_000, "--max-pixels", min=1,
                                   help="Images with more pixels are refused with 413 before "
                                        "they are decoded."),
    work_pixels: int = typer.Option(2_000_000, "--work-pixels", min=10_000,
                                    help="Larger photos are downscaled to this many pixels for "
                                         "detection (boxes are reported in the original's "
                                         "pixels)."),
    batching: bool = typer.Option(True, "--batching/--no-batching",
                                  help="Micro-batch the classification of concurrent requests."),
    max_batch: int = typer.Option(64, "--max-batch", min=1, max=4096,
                                  help="Most faces in one micro-batch."),
    batch_wait_ms: float = typer.Option(3.0, "--batch-wait-ms", min=0.0, max=1000.0,
                                        help="How long a micro-batch waits for more requests."),
    min_confidence: float = typer.Option(0.5, "--min-confidence", min=0.0, max=1.0,
                                         help="Face detection threshold."),
    detect_size: int = typer.Option(DETECT_SIZE, "--detect-size", min=0, metavar="PX",
                                    help=DETECT_SIZE_HELP),
    ssl_certfile: str = typer.Option(None, "--ssl-certfile",
                                     help="Serve HTTPS (browsers allow the webcam only over "
                                          "HTTPS or on localhost)."),
    ssl_keyfile: str = typer.Option(None, "--ssl-keyfile", help="Key for --ssl-certfile."),
    log_level: str = typer.Option("info", "--log-level",
                                  help="uvicorn log level: critical, error, warning, info, debug."),
) -> None:
    missing = missing_serve_packages()
    if missing:
        raise FerkitError(f"`ferkit serve` needs {', '.join(missing)}: "
                          "pip install 'ferkit[serve]'")
    import uvicorn

    from ferkit.serving.app import ENV_CONFIG, build_from_config

    config = {
        "model": model, "device": device, "min_confidence": min_confidence,
        "detect_size": detect_size,
        "batching": batching, "max_batch": max_batch, "max_wait_ms": batch_wait_ms,
        "threads": threads or None,
        "decode_slots": decode_slots or _auto_decode_slots(workers),
        "limits": {"max_upload_bytes": int(max_upload_mb * 2**20), "max_pixels": max_pixels,
                   "work_pixels": work_pixels},
    }
    check_detect_size(detect_size)
    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise FerkitError("--ssl-certfile and --ssl-keyfile go together")
    for opt, value in (("--ssl-certfile", ssl_certfile), ("--ssl-keyfile", ssl_keyfile)):
        if value and not os.path.isfile(value):
            raise FerkitError(f"{opt} {value}: no such file")
    if log_level not in LOG_LEVELS:
        raise FerkitError(f"--log-level {log_level}: expected one of {', '.join(LOG_LEVELS)}")
    _check_port(host, port)
    ssl = {"ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile} if ssl_certfile else {}
    scheme = "https" if ssl_certfile else "http"
    shown = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{'127.0.0.1' if host in ('0.0.0.0', '') else shown}:{port}"

    if workers == 1:
        app = build_from_config(config)  # load once, here: a bad --model fails before binding
        info = app.state.engine.info()
        target = app
    else:
        from ferkit.models.checkpoint import load_checkpoint
        from ferkit.models.onnx_predictor import OnnxPredictor, is_onnx_file

        # fail fast in the parent (an exported .onnx too); each worker loads its own copy
        arch = (OnnxPredictor.load(model).arch if is_onnx_file(model)
                else load_checkpoint(model).get("arch"))
        info = {"name": model, "arch": arch, "device": device}
        os.environ[ENV_CONFIG] = json.dumps(config)
        target = "ferkit.serving.app:create_app_from_env"
    batch = f"batching on (<= {max_batch} faces, {batch_wait_ms:g} ms)" if batching \
        else "batching off"
    typer.echo(f"ferkit serve: model {info['name']} ({info.get('arch')}) on {info.get('device')}, "
               f"{batch}, {workers} worker{'s' if workers > 1 else ''}")
    typer.echo(f"  web page  {url}/")
    typer.echo(f"  API docs  {url}/docs")
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"  listening on {host}: reachable from other machines on this network")
    uvicorn.run(target, host=host, port=port, workers=workers, log_level=log_level,
                factory=workers > 1, timeout_graceful_shutdown=5, server_header=False, **ssl)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("serve", help=HELP)(serve)
