"""On-disk cache of decoded datasets: one uncompressed .npz per source, written atomically.

The key covers the source's absolute path, its size and mtime (for a folder: a fingerprint of
the whole file listing with sizes and mtimes), skip_bad and LOADER_VERSION, so any change to
the source or to the decoding rules makes a fresh entry. A cache file that cannot be read is
ignored (and rebuilt); a cache folder that cannot be written only costs the speed-up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ferkit.data.dataset import FaceDataset, SkippedItem

log = logging.getLogger(__name__)

# Bump whenever decoding or layout rules change what a source loads as.
LOADER_VERSION = 1


def cache_dir() -> Path:
    """$FERKIT_CACHE_DIR, else ~/.cache/ferkit (under $XDG_CACHE_HOME if set)."""
    env = os.environ.get("FERKIT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ferkit"


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def listing_fingerprint(listing: list[tuple[str, int, int]]) -> str:
    return hashlib.sha256(repr(listing).encode("utf-8", "surrogateescape")).hexdigest()


class CacheKey:
    def __init__(self, path: Path, kind: str, skip_bad: bool, fingerprint: str | None = None):
        self.path = str(path.resolve())
        if fingerprint is None:
            st = path.stat()
            fingerprint = f"{st.st_size}:{st.st_mtime_ns}"
        self.key = _digest({"path": self.path, "kind": kind, "fingerprint": fingerprint,
                            "skip_bad": skip_bad, "version": LOADER_VERSION})
        self.prefix = _digest({"path": self.path, "skip_bad": skip_bad})[:16]

    @property
    def file(self) -> Path:
        return cache_dir() / "datasets" / f"{self.prefix}-{self.key[:24]}.npz"


def load(key: CacheKey, source: str) -> FaceDataset | None:
    """The cached dataset for this key, or None (missing, stale or unreadable)."""
    path = key.file
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("key") != key.key:
                return None
            ds = FaceDataset(z["images"], z["labels"], z["splits"], z["names"], source,
                             [SkippedItem(e, r) for e, r in meta["skipped"]])
    except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile,
            json.JSONDecodeError) as exc:
        log.warning("ignoring unreadable dataset cache %s (%s); rebuilding it", path, exc)
        return None
    log.debug("dataset cache hit: %s", path)
    return ds


def store(key: CacheKey, ds: FaceDataset) -> Path | None:
    """Write the dataset under its key (atomic rename) and drop stale entries of the source."""
    folder = key.file.parent
    meta = {"key": key.key, "path": key.path, "version": LOADER_VERSION,
            "skipped": [[s.entry, s.reason] for s in ds.skipped]}
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=ds.images, labels=ds.labels, splits=ds.splits.astype(str),
                     names=ds.names.astype(str), meta=np.array(json.dumps(meta)))
        os.replace(tmp, key.file)
        tmp = None
    except OSError as exc:
        log.warning("could not write dataset cache in %s (%s); loading will not be faster "
                    "next time", folder, exc)
        return None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    for old in folder.glob(f"{key.prefix}-*.npz"):
        if old != key.file:
            old.unlink(missing_ok=True)
    log.debug("dataset cache written: %s", key.file)
    return key.file
