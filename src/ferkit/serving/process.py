"""Run `ferkit serve` as a child process on a free loopback port: for tests and benchmarks.

    with ServerProcess(model="runs/x/best.pt", extra=["--no-batching"]) as server:
        urllib.request.urlopen(server.url + "/healthz")

Only the standard library is used, so callers need nothing beyond ferkit[serve] itself.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`python -m ferkit serve` in a subprocess; started by __enter__, stopped by __exit__."""

    def __init__(self, model: str | Path = "default", extra: list[str] | None = None,
                 host: str = "127.0.0.1", port: int | None = None, startup_timeout: float = 90.0,
                 env: dict[str, str] | None = None) -> None:
        self.model = str(model)
        self.extra = list(extra or [])
        self.host = host
        self.port = port or free_port(host)
        self.startup_timeout = startup_timeout
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        fd, log = tempfile.mkstemp(prefix="ferkit-serve-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "ferkit", "serve", "--host", self.host, "--port",
                str(self.port), "--model", self.model, "--log-level", "warning", *self.extra]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self) -> ServerProcess:
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ferkit serve exited with {self.proc.returncode} on start:\n"
                                   f"{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as res:
                    if res.status == 200 and json.load(res).get("status") == "ok":
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"ferkit serve did not answer /healthz within "
                           f"{self.startup_timeout:.0f} s:\n{self.log()[-3000:]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (uvicorn shuts down gracefully), then SIGKILL if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)


# -- a tiny HTTP client (standard library only) ----------------------------------------------------

def encode_multipart(files: list[tuple[str, str, bytes, str]]) -> tuple[bytes, str]:
    """[(field, filename, data, content_type)] -> (body, Content-Type header with boundary)."""
    boundary = "ferkit" + secrets.token_hex(12)
    out = []
    for field, filename, data, ctype in files:
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                   f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'.encode())
        out.append(data)
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.body[:300]!r})"


def http_request(method: str, url: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 60.0,
                 conn: http.client.HTTPConnection | None = None) -> Response:
    """One request; `conn` reuses a keep-alive connection (as a browser or load client would)."""
    parts = urlsplit(url)
    own = conn is None
    if own:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path or "/", body=body, headers=headers or {})
        res = conn.getresponse()
        data = res.read()
        return Response(res.status, {k.lower(): v for k, v in res.getheaders()}, data)
    finally:
        if own:
            conn.close()


def post_image(url: str, data: bytes, content_type: str = "image/jpeg", multipart: bool = True,
               **kwargs) -> Response:
    """POST a photo to /v1/predict, as multipart field `image` or as the raw body."""
    if multipart:
        body, ctype = encode_multipart([("image", "photo", data, content_type)])
    else:
        body, ctype = data, content_type
    return http_request("POST", url, body, {"Content-Type": ctype}, **kwargs)


def post_json(url: str, payload, **kwargs) -> Response:
    return http_request("POST", url, json.dumps(payload).encode(),
                        {"Content-Type": "application/json"}, **kwargs)
