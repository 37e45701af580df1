"""A throwaway PostgreSQL server for tests: initdb in a temp folder, started on a free port of
127.0.0.1 as an unprivileged user (the server refuses to run as root), stopped and deleted after.

Needs the server binaries (Debian: `apt-get install postgresql`, see scripts/install-postgres.sh);
`find_bin()` says where they are, or None.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

USER = "ferkit"  # the database superuser initdb creates (trust authentication, local only)
UNPRIVILEGED = "nobody"  # who runs the server when the tests run as root


def find_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's newest
    /usr/lib/postgresql/N/bin."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", f"--reuid={UNPRIVILEGED}", "--regid=nogroup", "--clear-groups", *cmd]


def _run(cmd: list[str], timeout: float = 60) -> None:
    res = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "LC_ALL": "C", "HOME": "/tmp"})
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stdout}{res.stderr}")


@contextlib.contextmanager
def throwaway_postgres(bin_dir: Path) -> Iterator[str]:
    """Start a server; yield its URL (postgresql://ferkit@127.0.0.1:PORT/postgres)."""
    base = Path(tempfile.mkdtemp(prefix="ferkit-pg-"))  # /tmp/...: reachable by `nobody`
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, user=UNPRIVILEGED, group="nogroup")
    port = _free_port()
    pg_ctl = str(bin_dir / "pg_ctl")
    started = False
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "-A", "trust", "-E", "UTF8",
              "--no-locale", "--no-sync"])
        options = (f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=50")
        _run([pg_ctl, "-D", str(data), "-l", str(base / "server.log"), "-o", options, "-w",
              "-t", "60", "start"], timeout=90)
        started = True
        yield f"postgresql://{USER}@127.0.0.1:{port}/postgres"
    finally:
        if started:
            with contextlib.suppress(Exception):
                _run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(base, ignore_errors=True)
