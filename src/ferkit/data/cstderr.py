"""Catch what C libraries print on C's ``stderr`` while images decode, so it can be reported
with the entry's name instead of reaching the terminal anonymously.

OpenCV's bundled libjpeg prints warnings such as "Corrupt JPEG data: 12 extraneous bytes before
marker 0xd9" with ``fprintf(stderr, ...)``; OpenCV's own log level does not cover them. While a
capture is active, C's global ``stderr`` (a ``FILE *``) points at an unbuffered stream on an
anonymous temporary file; file descriptor 2 is left alone, so Python's ``sys.stderr``, logging
and progress bars keep working and nothing else is swallowed. Each decode compares the
file's size before and after (one lseek each), which costs about half a microsecond.

The pointer is process-wide, so other threads' C-level writes to ``stderr`` made during a
capture land in the file too; read_images hands back to fd 2 whatever it cannot attribute to
one of its entries (two loads running at once may each hand back the other's lines: printed,
never lost). Where C's ``stderr`` cannot be found (not glibc, musl or macOS), capture() yields
None and such messages reach the terminal as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

_IONBF = 2  # setvbuf mode "unbuffered", the same value in glibc, musl and macOS


class NativeStderr:
    """The capture file: offsets into it mark what was written during one decode."""

    def __init__(self, file, pointer: ctypes.c_void_p, stream: int):
        self._file = file  # a Python file object kept open for the life of the process
        self._fd = file.fileno()
        self._pointer = pointer  # C's `stderr` variable
        self._stream = stream  # the FILE * that writes into self._file
        self._saved: int | None = None
        self._users = 0
        self._lock = threading.Lock()

    def size(self) -> int:
        """Bytes written so far (the mark to pass to since()). A seek to the end is 4x cheaper
        than fstat; the offset it moves is not used (the stream appends, reads use pread)."""
        return os.lseek(self._fd, 0, os.SEEK_END)

    def since(self, mark: int) -> bytes:
        """What was written after mark."""
        end = self.size()
        return os.pread(self._fd, end - mark, mark) if end > mark else b""

    def _enter(self) -> None:
        with self._lock:
            if self._users == 0:
                self._saved = self._pointer.value
                self._pointer.value = self._stream
            self._users += 1

    def _exit(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._pointer.value = self._saved
                # The FILE stays open (a thread may still hold the pointer); only its data goes.
                os.ftruncate(self._fd, 0)


_instance: NativeStderr | None = None
_unavailable = False
_setup_lock = threading.Lock()


def _setup() -> NativeStderr | None:
    global _instance, _unavailable
    with _setup_lock:
        if _instance is not None or _unavailable:
            return _instance
        try:
            libc = ctypes.CDLL(None)
            name = "__stderrp" if sys.platform == "darwin" else "stderr"
            pointer = ctypes.c_void_p.in_dll(libc, name)
            libc.fdopen.restype = ctypes.c_void_p
            libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
            libc.setvbuf.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                     ctypes.c_size_t]
            file = tempfile.TemporaryFile(prefix="ferkit-stderr-")  # noqa: SIM115 - kept open
            stream = libc.fdopen(os.dup(file.fileno()), b"a")
            if not stream or not pointer.value:
                raise OSError("fdopen failed or stderr is NULL")
            libc.setvbuf(stream, None, _IONBF, 0)
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            log.debug("cannot capture C-level stderr (%s); decoder warnings go to stderr", exc)
            _unavailable = True
            return None
        _instance = NativeStderr(file, pointer, stream)
        return _instance


@contextlib.contextmanager
def capture() -> Iterator[NativeStderr | None]:
    """Point C's stderr at the capture file for the duration (nestable, thread-safe)."""
    cap = _setup()
    if cap is None:
        yield None
        return
    cap._enter()
    try:
        yield cap
    finally:
        cap._exit()


def forward(text: bytes) -> None:
    """Write bytes that belong to no entry to the real stderr (fd 2), as they would have gone."""
    if text:
        with contextlib.suppress(OSError):  # stderr closed: nowhere to put them
            os.write(2, text)
