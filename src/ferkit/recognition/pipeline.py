"""Many images through one Recognizer at full speed: read and detect in worker threads,
classify the faces of many images in one batch, hand results back in input order.

Reading (PIL/libjpeg) and alignment (OpenCV) release the GIL, and so do the classifier's
forward pass and YuNet's (onnxruntime or PyTorch), so worker threads overlap them (the
`yunet-c` detector, the yuface wheel's C library, holds the GIL: two of those never run at
once). Classification
runs in the caller's thread whenever the next image is not ready yet or `max_batch_faces` faces
are waiting: a batch of 40 faces costs little more than a batch of 3. At most `window` images
are in flight, so memory stays flat on a folder of any size.

    for result in recognize_images(rec, paths):
        print(result.path, result.error or [f.expression for f in result.faces])
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ferkit.devices import cpu_count
from ferkit.errors import FerkitError
from ferkit.images import DecodedImage
from ferkit.recognition.face import Face
from ferkit.recognition.recognizer import Prepared, Recognizer


@dataclass
class ImageResult:
    """One input image: its faces, or the error that stopped it (never both)."""

    path: Path
    faces: list[Face] = field(default_factory=list)
    loaded: DecodedImage | None = None  # the picture as read (for annotating); None on error
    error: str = ""


def default_workers() -> int:
    """Reader/detector threads: one per core, at least 2 (reading waits on the disk), at most 8."""
    return max(2, min(8, cpu_count()))


def _prepare(rec: Recognizer, path: Path) -> Prepared | str:
    try:
        return rec.prepare(path)
    except FerkitError as exc:  # InputError and friends name the file
        return str(exc)


def recognize_images(rec: Recognizer, paths: Iterable[Path], workers: int = 0,
                     max_batch_faces: int = 256, window: int = 0) -> Iterator[ImageResult]:
    """Yield one ImageResult per path, in order; unreadable files give `error`, never raise.

    workers: reader/detector threads (0 = default_workers()); window: images in flight at most
    (0 = 2 x workers + 2).
    """
    workers = workers or default_workers()
    window = window or 2 * workers + 2
    todo = iter(paths)
    in_flight: deque[tuple[Path, Future]] = deque()
    ready: list[tuple[Path, Prepared | str]] = []

    def submit_next(pool: ThreadPoolExecutor) -> None:
        path = next(todo, None)
        if path is not None:
            path = Path(path)
            in_flight.append((path, pool.submit(_prepare, rec, path)))

    def flush() -> Iterator[ImageResult]:
        prepared = [p for _, p in ready if not isinstance(p, str)]
        faces = iter(rec.predict_prepared(prepared))
        for path, p in ready:
            if isinstance(p, str):
                yield ImageResult(path, error=p)
            else:
                yield ImageResult(path, next(faces), p.loaded)
        ready.clear()

    with ThreadPoolExecutor(workers, thread_name_prefix="ferkit-read") as pool:
        for _ in range(window):
            submit_next(pool)
        while in_flight:
            path, future = in_flight.popleft()
            ready.append((path, future.result()))
            submit_next(pool)
            waiting = sum(len(p.crops) for _, p in ready if not isinstance(p, str))
            next_not_ready = not in_flight or not in_flight[0][1].done()
            if waiting >= max_batch_faces or next_not_ready:
                yield from flush()
        yield from flush()
