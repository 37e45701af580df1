"""ferkit CLI: `ferkit serve`, the HTTP API and the web page (needs the ferkit[serve] extra)."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import os
import socket
import typing
from typing import Any

import typer

from ferkit.errors import FerkitError

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


def _own_options() -> dict[str, list[inspect.Parameter]]:
    """The options of `ferkit serve` that are not ServeConfig fields: the server itself."""
    from ferkit.cli.fields import cli_option

    def server(name: str, annotation: Any, default: Any, *decls: str, **kwargs: Any
               ) -> inspect.Parameter:
        return cli_option(name, annotation, default, *decls, rich_help_panel="Server", **kwargs)

    return {"Server": [
        server("host", str, "127.0.0.1", "--host",
               help="Address to listen on. 0.0.0.0 makes the server reachable from other machines "
               "(phones on your network): only on networks you trust."),
        server("port", int, 8000, "--port", min=1, max=65535, help="TCP port."),
        server("workers", int, 1, "--workers", min=1, max=64,
               help="Server processes, each with its own copy of the model."),
        server("ssl_certfile", str | None, None, "--ssl-certfile",
               help="Serve HTTPS (browsers allow the webcam only over HTTPS or on localhost)."),
        server("ssl_keyfile", str | None, None, "--ssl-keyfile", help="Key for --ssl-certfile."),
        server("log_level", str, "info", "--log-level",
               help="uvicorn log level: critical, error, warning, info, debug."),
    ]}


def _serve(host: str, port: int, workers: int, ssl_certfile: str | None,
           ssl_keyfile: str | None, log_level: str, **settings: Any) -> None:
    """`ferkit serve`: the ServeConfig options typed here, and how to run the server."""
    missing = missing_serve_packages()
    if missing:
        raise FerkitError(f"`ferkit serve` needs {', '.join(missing)}: "
                          "pip install 'ferkit[serve]'")
    import uvicorn

    from ferkit.serving.app import ENV_CONFIG, build_from_config
    from ferkit.serving.config import ServeConfig

    config = ServeConfig(**settings)  # checks every setting
    if not config.decode_slots:
        config = dataclasses.replace(config, decode_slots=_auto_decode_slots(workers) or 0)
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

    model = config.model
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
        info = {"name": model, "arch": arch, "device": config.device}
        os.environ[ENV_CONFIG] = config.to_json()
        target = "ferkit.serving.app:create_app_from_env"
    batch = (f"batching on (<= {config.max_batch} faces, {config.max_wait_ms:g} ms)"
             if config.batching else "batching off")
    typer.echo(f"ferkit serve: model {info['name']} ({info.get('arch')}) on {info.get('device')}, "
               f"{batch}, {workers} worker{'s' if workers > 1 else ''}")
    typer.echo(f"  web page  {url}/")
    typer.echo(f"  API docs  {url}/docs")
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"  listening on {host}: reachable from other machines on this network")
    uvicorn.run(target, host=host, port=port, workers=workers, log_level=log_level,
                factory=workers > 1, timeout_graceful_shutdown=5, server_header=False, **ssl)


def make_serve_command():
    """_serve with one option per ServeConfig field (see ferkit.cli.fields), after the
    command's own server options."""
    from ferkit.cli.fields import options_from, with_signature
    from ferkit.options import option_fields
    from ferkit.serving.config import PANELS, ServeConfig

    def serve(**kwargs: Any) -> None:
        _serve(**kwargs)

    params = options_from(option_fields(ServeConfig, PANELS), typing.get_type_hints(ServeConfig),
                          _own_options(), PANELS)
    return with_signature(serve, params)


serve = make_serve_command()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("serve", help=HELP)(serve)
