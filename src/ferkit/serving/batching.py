"""Micro-batching: classification work from concurrent requests runs as one batch on the model.

Callers (request threads) submit (n, 48, 48) uint8 faces and block on a future. One worker thread
takes the first waiting job, then keeps collecting jobs for at most `max_wait_ms` or until
`max_batch` faces are queued, runs the model once on all of them and hands each caller its rows.
With batching disabled, each call runs the model directly, serialised by a lock (the model is
shared by every request thread; PyTorch modules are not meant to run concurrently).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ferkit.serving.config import DEFAULTS

ClassifyFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class BatchStats:
    """Counters exposed in /healthz and /v1/model, so tests and benchmarks can see batches form."""

    calls: int = 0  # classify requests (one per image or /v1/classify call that had faces)
    batches: int = 0  # model runs
    faces: int = 0  # faces classified
    max_batch_calls: int = 0  # most requests merged into one model run
    max_batch_faces: int = 0
    multi_call_batches: int = 0  # model runs that served more than one request
    model_ms: float = 0.0  # total time spent in the model
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, n_calls: int, n_faces: int, ms: float) -> None:
        with self._lock:
            self.calls += n_calls
            self.batches += 1
            self.faces += n_faces
            self.max_batch_calls = max(self.max_batch_calls, n_calls)
            self.max_batch_faces = max(self.max_batch_faces, n_faces)
            self.multi_call_batches += n_calls > 1
            self.model_ms += ms

    def as_dict(self) -> dict:
        with self._lock:
            return {
                "calls": self.calls,
                "batches": self.batches,
                "faces": self.faces,
                "max_batch_calls": self.max_batch_calls,
                "max_batch_faces": self.max_batch_faces,
                "multi_call_batches": self.multi_call_batches,
                "mean_calls_per_batch": round(self.calls / max(1, self.batches), 3),
                "model_ms_total": round(self.model_ms, 1),
            }


class MicroBatcher:
    """Thread-safe `classify(faces) -> probabilities` that merges concurrent calls into batches."""

    def __init__(self, fn: ClassifyFn, *, enabled: bool = DEFAULTS.batching,
                 max_batch: int = DEFAULTS.max_batch,
                 max_wait_ms: float = DEFAULTS.max_wait_ms) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._fn = fn
        self.enabled = enabled
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self.stats = BatchStats()
        self._direct_lock = threading.Lock()
        self._queue: queue.Queue[tuple[np.ndarray, Future] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closed = False
        if enabled:
            self._thread = threading.Thread(target=self._run, name="ferkit-batcher", daemon=True)
            self._thread.start()

    def config(self) -> dict:
        return {"enabled": self.enabled, "max_batch": self.max_batch,
                "max_wait_ms": self.max_wait_ms}

    # -- callers ---------------------------------------------------------------------------------

    def submit(self, faces: np.ndarray) -> Future:
        """Queue (n, 48, 48) uint8 faces; the future gives their (n, classes) probabilities."""
        fut: Future = Future()
        if len(faces) == 0:
            fut.set_result(np.zeros((0, 0), dtype=np.float32))
            return fut
        if self._closed:
            fut.set_exception(RuntimeError("the model is shutting down"))
            return fut
        if not self.enabled:
            try:
                fut.set_result(self._run_model([faces]))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)
            return fut
        self._queue.put((faces, fut))
        return fut

    def classify(self, faces: np.ndarray, timeout: float | None = 60.0) -> np.ndarray:
        """Blocking form of submit(), for code that runs in a worker thread."""
        return self.submit(faces).result(timeout=timeout)

    def close(self) -> None:
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)

    # -- model -----------------------------------------------------------------------------------

    def _run_model(self, parts: list[np.ndarray]) -> np.ndarray:
        faces = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        start = time.perf_counter()
        with self._direct_lock:
            probs = np.asarray(self._fn(faces), dtype=np.float32)
        self.stats.record(len(parts), len(faces), (time.perf_counter() - start) * 1000)
        return probs

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            jobs = [item]
            n_faces = len(item[0])
            deadline = time.perf_counter() + self.max_wait_ms / 1000
            stop = False
            while n_faces < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else \
                        self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
                n_faces += len(nxt[0])
            self._serve(jobs)
            if stop:
                return

    def _serve(self, jobs: list[tuple[np.ndarray, Future]]) -> None:
        try:
            probs = self._run_model([faces for faces, _ in jobs])
        except BaseException as exc:  # noqa: BLE001 - every waiting caller gets the error
            for _, fut in jobs:
                fut.set_exception(exc)
            return
        start = 0
        for faces, fut in jobs:
            fut.set_result(probs[start:start + len(faces)])
            start += len(faces)
