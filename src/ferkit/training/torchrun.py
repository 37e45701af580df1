"""What a process started by torchrun needs before torch is imported: whether it was started so,
and how it ends.

Kept free of torch so that `ferkit` can ask on every command without paying torch's import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import NoReturn


def launched() -> bool:
    """Whether this process was started by torchrun (even as the only process)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def exit_code(exc: SystemExit) -> int:
    """The status a SystemExit asks for, as the interpreter reads it (a message: printed, 1)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def end_worker(code: int) -> NoReturn:
    """End a torchrun worker with `code` once its command is done, skipping interpreter
    finalization.

    By then the process group is destroyed and the run directory written, but gloo's C++
    threads can still be torn down among the static destructors, and under load that
    occasionally aborts a rank that has finished ("terminate called without an active
    exception", SIGABRT): torchrun then reports a finished run as failed. Seen in 2 of 34 runs
    of tests/test_ddp.py's dead-rank test beside a busy process on a 2-core Xeon (2026-12-07);
    pytorch/pytorch#179291 describes the same teardown race. Output and logs are flushed first,
    so nothing the command wrote is lost.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing can reach it
            stream.flush()
    os._exit(code)
