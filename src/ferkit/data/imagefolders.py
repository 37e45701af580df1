"""Image-folder sources, as a folder on disk or read straight from a zip (no extraction).

Two layouts are recognised (after junk is dropped and one or more wrapping top folders that
are neither a split nor a class name are stripped, e.g. ``fer2013/train/...``):

* split layout: ``train/<class>/*``, ``test/<class>/*`` and optionally ``val/<class>/*``
  (``training``, ``testing``, ``valid`` and ``validation`` are accepted too);
* single-split layout: ``<class>/*`` at the top: a user's own labelled faces, split "train".

The class is the folder right under the split folder (or at the top); deeper folders inside
it are allowed. A file whose name starts with ``Training_``, ``PublicTest_`` or
``PrivateTest_`` (Kaggle's naming, any case) goes to train, val or test whatever folder it is
in; otherwise the split folder decides.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import threading
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferkit.classes import CLASSES, class_index
from ferkit.data.dataset import FACE_SIZE, SkippedItem
from ferkit.data.images import ImageDecodeError, decode_face, is_image_name, is_junk, quiet_opencv
from ferkit.errors import DataError

log = logging.getLogger(__name__)

SPLIT_DIRS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}
NAME_PREFIXES = (("training_", "train"), ("publictest_", "val"), ("privatetest_", "test"))
CHUNK = 512


@dataclass
class Planned:
    """Where each image goes, and the entries that cannot be used (before any decoding)."""

    items: list[tuple[str, int, str]]  # (entry, label, split), sorted by entry
    problems: list[tuple[str, str]]  # (entry, reason), sorted by entry
    layout: str  # "split" or "single-split"
    prefix: str  # wrapping folder(s) stripped, e.g. "fer2013/" or ""


def split_of_name(basename: str) -> str | None:
    low = basename.lower()
    for prefix, split in NAME_PREFIXES:
        if low.startswith(prefix):
            return split
    return None


def _known_classes() -> str:
    return ", ".join(CLASSES)


def plan_layout(files: list[str]) -> Planned:
    """Interpret relative file paths ('/'-separated) as one of the two layouts."""
    files = sorted(f for f in files if not is_junk(f))
    prefix = ""
    while files and all("/" in f for f in files):
        top = {f.split("/", 1)[0] for f in files}
        if len(top) != 1:
            break
        (name,) = top
        if name.lower() in SPLIT_DIRS or class_index(name) is not None:
            break
        prefix += name + "/"
        files = [f.split("/", 1)[1] for f in files]

    tops = {f.split("/", 1)[0].lower() for f in files if "/" in f}
    layout = "split" if tops & SPLIT_DIRS.keys() else "single-split"
    items: list[tuple[str, int, str]] = []
    problems: list[tuple[str, str]] = []
    labels: dict[str, int | None] = {}
    for rel in files:
        entry = prefix + rel
        parts = rel.split("/")
        if layout == "split":
            if len(parts) < 2 or parts[0].lower() not in SPLIT_DIRS:
                problems.append((entry, "not inside a train/, val/ or test/ folder"))
                continue
            dir_split, parts = SPLIT_DIRS[parts[0].lower()], parts[1:]
        else:
            dir_split = "train"
        if len(parts) < 2:
            problems.append((entry, "not inside a class folder (expected <class>/<image>)"))
            continue
        if not is_image_name(parts[-1]):
            problems.append((entry, "not an image file (by its extension)"))
            continue
        label = labels.get(parts[0], -1)
        if label == -1:
            label = labels[parts[0]] = class_index(parts[0])
        if label is None:
            problems.append((entry, f"unknown class folder {parts[0]!r} (known: "
                                    f"{_known_classes()}, and synonyms)"))
            continue
        items.append((entry, label, split_of_name(parts[-1]) or dir_split))
    return Planned(items, problems, layout, prefix)


class FolderSource:
    """A folder on disk; lists every file once (also used for the cache fingerprint)."""

    kind = "folder"

    def __init__(self, root: Path, where: str):
        self.root, self.where = root, where
        self.listing: list[tuple[str, int, int]] = []  # (rel, size, mtime_ns)
        self._walk()

    def _walk(self) -> None:
        pending = [("", str(self.root))]
        root_st = self.root.stat()
        seen = {(root_st.st_dev, root_st.st_ino)}  # symlinked folders: never loop
        while pending:
            rel_dir, path = pending.pop()
            try:
                with os.scandir(path) as it:
                    entries = list(it)
            except OSError as exc:
                raise DataError(f"{path}: cannot list folder ({exc.strerror or exc})") from None
            for entry in entries:
                rel = rel_dir + entry.name
                try:
                    if entry.is_dir():  # follows symlinks, like reading the files does
                        st = entry.stat()
                        if (st.st_dev, st.st_ino) not in seen:
                            seen.add((st.st_dev, st.st_ino))
                            pending.append((rel + "/", entry.path))
                        continue
                    st = entry.stat()
                    self.listing.append((rel, st.st_size, st.st_mtime_ns))
                except OSError:
                    self.listing.append((rel, -1, -1))  # broken link: reported when read
        self.listing.sort()

    def files(self) -> list[str]:
        return [rel for rel, _, _ in self.listing]

    def describe(self, entry: str) -> str:
        return str(Path(self.where) / entry)

    def read(self, entry: str) -> bytes:
        try:
            return (self.root / entry).read_bytes()
        except OSError as exc:
            raise ImageDecodeError(f"cannot read file ({exc.strerror or exc})") from None

    def close(self) -> None:
        pass


class ZipSource:
    """A zip read in place: member bytes are sliced out of a memory map (thread-safe)."""

    kind = "zip"

    def __init__(self, path: Path, where: str):
        self.where = where
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"{where}: not a readable zip file ({exc})") from None
        self.infos = {i.filename: i for i in self.zf.infolist() if not i.is_dir()}
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self._lock = threading.Lock()

    def files(self) -> list[str]:
        return list(self.infos)

    def describe(self, entry: str) -> str:
        return f"{self.where}: {entry}"

    def read(self, entry: str) -> bytes:
        info = self.infos[entry]
        if info.flag_bits & 0x1:
            raise ImageDecodeError("encrypted zip entry")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            try:
                with self._lock:
                    return self.zf.read(info)
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
                raise ImageDecodeError(f"cannot read zip entry ({exc})") from None
        off = info.header_offset
        head = self.mm[off:off + 30]
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            raise ImageDecodeError("corrupt zip entry (bad local header)")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        start = off + 30 + name_len + extra_len
        raw = self.mm[start:start + info.compress_size]
        if info.compress_type == zipfile.ZIP_DEFLATED:
            try:
                raw = zlib.decompress(raw, -15)
            except zlib.error as exc:
                raise ImageDecodeError(f"corrupt zip entry ({exc})") from None
        if len(raw) != info.file_size or zlib.crc32(raw) != info.CRC:
            raise ImageDecodeError("corrupt zip entry (size or CRC mismatch)")
        return raw

    def close(self) -> None:
        self.mm.close()
        self._file.close()
        self.zf.close()


def decode_workers() -> int:
    env = os.environ.get("FERKIT_DECODE_WORKERS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(8, os.cpu_count() or 1))


def read_images(source: FolderSource | ZipSource, *, skip_bad: bool,
                progress: Callable[[int, int], None] | None = None):
    """Plan the layout, then decode every image (in threads). Returns loading._Parts fields."""
    planned = plan_layout(source.files())
    csvs = [e for e, _ in planned.problems if e.lower().endswith(".csv")]
    if not planned.items and csvs:
        raise DataError(f"{source.where}: holds {csvs[0]} but no images; extract the CSV and "
                        f"load it directly")
    skipped: list[SkippedItem] = []
    for entry, reason in planned.problems:
        if not skip_bad:
            raise DataError(f"{source.describe(entry)}: {reason}")
        skipped.append(SkippedItem(entry, reason))
    items = planned.items
    n = len(items)
    if n == 0:
        if skipped:
            raise DataError(f"{source.where}: no usable images; all {len(skipped)} entries were "
                            f"bad (first: {skipped[0].entry}: {skipped[0].reason})")
        raise DataError(f"{source.where}: no images found (expected train/<class>/*.jpg and "
                        f"test/<class>/*.jpg, or <class>/*.jpg)")
    log.debug("%s: %s layout%s, %d images", source.where, planned.layout,
              f" under {planned.prefix}" if planned.prefix else "", n)

    images = np.empty((n, FACE_SIZE, FACE_SIZE), np.uint8)
    failed: dict[int, str] = {}
    stop = threading.Event()

    def work(lo: int) -> int:
        for i in range(lo, min(lo + CHUNK, n)):
            if stop.is_set():
                break
            try:
                images[i] = decode_face(source.read(items[i][0]))
            except ImageDecodeError as exc:
                failed[i] = str(exc)
                if not skip_bad:
                    stop.set()
        return min(lo + CHUNK, n) - lo

    done = 0
    if progress is not None:
        progress(0, n)
    workers = decode_workers()
    with quiet_opencv():
        if workers == 1 or n <= CHUNK:
            for k in map(work, range(0, n, CHUNK)):
                done += k
                if progress is not None:
                    progress(done, n)
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="ferkit-decode") as pool:
                for k in pool.map(work, range(0, n, CHUNK)):
                    done += k
                    if progress is not None:
                        progress(done, n)
    if failed and not skip_bad:
        i = min(failed)
        raise DataError(f"{source.describe(items[i][0])}: {failed[i]}")

    for i in sorted(failed):
        skipped.append(SkippedItem(items[i][0], failed[i]))
    skipped.sort(key=lambda s: s.entry)
    keep = np.ones(n, bool)
    keep[list(failed)] = False
    if not keep.any():
        raise DataError(f"{source.where}: no usable images; all {len(skipped)} entries were bad "
                        f"(first: {skipped[0].entry}: {skipped[0].reason})")
    names = np.array([it[0] for it in items])[keep]
    labels = np.array([it[1] for it in items], np.int64)[keep]
    splits = np.array([it[2] for it in items])[keep]
    return images[keep] if failed else images, labels, splits, names, skipped
