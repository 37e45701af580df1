"""Many images through one Recognizer at full speed: read and detect in worker processes (or
threads), classify the faces of many images in one batch, hand results back in input order.

YuNet (`yuface`) holds the GIL (measured: a Python loop slows 85% beside it), so in threads two
detections never run at once, however many cores there are; worker processes, each with its
own copy of the detector (ferkit.recognition.prepare), detect side by side. They cost a start-up
(a fresh interpreter importing numpy, OpenCV and yuface, no torch) and a copy of each decoded
picture back to this process, so they are used for runs of at least PROCESS_MIN_IMAGES images
on a machine with at least two cores, and threads otherwise. Classification runs in the
caller's thread whenever the next image is not ready yet or `max_batch_faces` faces are
waiting: a batch of 40 faces costs little more than a batch of 3. At most `window` images are
in flight, so memory stays flat on a folder of any size.

    for result in recognize_images(rec, paths):
        print(result.path, result.error or [f.expression for f in result.faces])
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ferkit.devices import cpu_count
from ferkit.images import DecodedImage
from ferkit.recognition.face import Face
from ferkit.recognition.prepare import Prepared, init_worker, prepare_in_worker
from ferkit.recognition.recognizer import Recognizer

PROCESS_MIN_IMAGES = 16  # fewer images than this do not repay the worker processes' start-up


@dataclass
class ImageResult:
    """One input image: its faces, or the error that stopped it (never both)."""

    path: Path
    faces: list[Face] = field(default_factory=list)
    loaded: DecodedImage | None = None  # the picture as read (for annotating); None on error
    error: str = ""


def default_workers() -> int:
    """Reader/detector workers: one per core, at least 2 (reading waits on the disk), at most 8."""
    return max(2, min(8, cpu_count()))


def use_processes(rec: Recognizer, n_images: int | None) -> bool:
    """Processes pay where detections can run side by side: two cores or more, enough images,
    and a detector that can be copied into a worker (a custom one may not pickle)."""
    if cpu_count() < 2 or (n_images is not None and n_images < PROCESS_MIN_IMAGES):
        return False
    try:
        pickle.dumps(rec.preparer)
    except Exception:  # noqa: BLE001 - any pickling failure means: stay in threads
        return False
    return True


def _executor(rec: Recognizer, workers: int, processes: bool
              ) -> tuple[Executor, Callable[[Path], Prepared | str]]:
    """The pool and the task it runs on one path."""
    if processes:  # spawn: a clean interpreter (forking a process with torch's threads can hang)
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=init_worker, initargs=(rec.preparer,))
        return pool, prepare_in_worker
    return ThreadPoolExecutor(workers, thread_name_prefix="ferkit-read"), \
        rec.preparer.prepare_or_error


def recognize_images(rec: Recognizer, paths: Iterable[Path], workers: int = 0,
                     max_batch_faces: int = 256, window: int = 0,
                     processes: bool | None = None) -> Iterator[ImageResult]:
    """Yield one ImageResult per path, in order; unreadable files give `error`, never raise.

    workers: reader/detector workers (0 = default_workers()); window: images in flight at most
    (0 = 2 x workers + 2); processes: workers are processes (True), threads (False), or
    `use_processes` decides (None).
    """
    workers = workers or default_workers()
    window = window or 2 * workers + 2
    if processes is None:
        processes = use_processes(rec, len(paths) if hasattr(paths, "__len__") else None)
    todo = iter(paths)
    in_flight: deque[tuple[Path, Future]] = deque()
    ready: list[tuple[Path, Prepared | str]] = []

    def submit_next(pool: Executor, task: Callable[[Path], Prepared | str]) -> None:
        path = next(todo, None)
        if path is not None:
            path = Path(path)
            try:
                future = pool.submit(task, path)
            except Exception as exc:  # noqa: BLE001 - a broken pool refuses new work
                future = Future()
                future.set_exception(exc)
            in_flight.append((path, future))

    def flush() -> Iterator[ImageResult]:
        prepared = [p for _, p in ready if not isinstance(p, str)]
        faces = iter(rec.predict_prepared(prepared))
        for path, p in ready:
            if isinstance(p, str):
                yield ImageResult(path, error=p)
            else:
                yield ImageResult(path, next(faces), p.loaded)
        ready.clear()

    pool, task = _executor(rec, workers, processes)
    with pool:
        for _ in range(window):
            submit_next(pool, task)
        while in_flight:
            path, future = in_flight.popleft()
            ready.append((path, _result(path, future)))
            submit_next(pool, task)
            waiting = sum(len(p.crops) for _, p in ready if not isinstance(p, str))
            next_not_ready = not in_flight or not in_flight[0][1].done()
            if waiting >= max_batch_faces or next_not_ready:
                yield from flush()
        yield from flush()


def _result(path: Path, future: Future) -> Prepared | str:
    """The worker's answer; a worker that died (a crash in a native decoder or the detector)
    becomes this image's error, and the ones after it, never a lost image."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - BrokenProcessPool and the like
        return f"{path}: the worker reading it failed ({type(exc).__name__}: {exc})"
