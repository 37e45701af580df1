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

Zip member names are normalised once (backslashes become '/', '.' and empty parts go, '..'
is resolved) and those names are what every rule and message sees. A member that is absolute or
whose '..' leaves the archive root is a bad entry, and so is a name held by more than one
member (which copy would be meant?): neither is ever loaded silently. Nothing is read or
inflated beyond MAX_IMAGE_FILE_BYTES, and a member that would inflate more than
MAX_COMPRESSION_RATIO times is rejected from its header (zip bombs).
"""

from __future__ import annotations

import bz2
import contextlib
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

from ferkit.classes import CLASSES, FACE_SIZE, class_index
from ferkit.data import cstderr
from ferkit.data.dataset import DecodedFaces, LoadWarning, SkippedItem
from ferkit.data.images import MAX_IMAGE_FILE_BYTES, decode_face, is_junk, quiet_opencv
from ferkit.errors import DataError
from ferkit.images import ImageDecodeError, is_image_name

log = logging.getLogger(__name__)

SPLIT_DIRS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}
NAME_PREFIXES = (("training_", "train"), ("publictest_", "val"), ("privatetest_", "test"))
CHUNK = 512
# A member declaring more than this many bytes out per byte in is rejected unread. Real images
# barely compress (JPEG, PNG); a blank BMP of a face is about 90:1, hence the small-size floor.
MAX_COMPRESSION_RATIO = 100
RATIO_CHECK_MIN_BYTES = 1_000_000


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


def _is_drive(part: str) -> bool:
    return len(part) == 2 and part[1] == ":" and part[0].isalpha()


def member_path(name: str) -> tuple[str | None, str]:
    """A zip member name -> (normalised relative path, "") or (None, why it is unusable)."""
    parts = name.split("/")
    if ("\\" not in name and "" not in parts and "." not in parts and ".." not in parts
            and name[1:2] != ":"):
        return name, ""  # the usual case, decided quickly (35,000 names in a FER zip)
    parts = name.replace("\\", "/").split("/")
    if name[:1] in ("/", "\\") or _is_drive(parts[0]):
        return None, "absolute path in the zip; entries must be relative to the archive root"
    kept: list[str] = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not kept:
                return None, "path leaves the archive root ('..' goes above it)"
            kept.pop()
        else:
            kept.append(part)
    if not kept:
        return None, "empty path after normalisation"
    return "/".join(kept), ""


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
        self.changes: list[tuple[int, int]] = []  # (inode, ctime_ns): any write moves ctime
        self.problems: list[tuple[str, str]] = []  # none: names on disk are unique, in the root
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
                    self.changes.append((st.st_ino, st.st_ctime_ns))
                except OSError:
                    self.listing.append((rel, -1, -1))  # broken link: reported when read
                    self.changes.append((-1, -1))
        order = sorted(range(len(self.listing)), key=self.listing.__getitem__)
        self.listing = [self.listing[i] for i in order]
        self.changes = [self.changes[i] for i in order]

    def signature(self) -> tuple:
        """What a fresh walk must find again for the folder to count as unchanged."""
        return self.listing, self.changes

    def files(self) -> list[str]:
        return [rel for rel, _, _ in self.listing]

    def describe(self, entry: str) -> str:
        return str(Path(self.where) / entry)

    def read(self, entry: str) -> bytes:
        try:
            with open(self.root / entry, "rb") as f:
                data = f.read(MAX_IMAGE_FILE_BYTES + 1)  # bounded, even if the file grows
        except OSError as exc:
            raise ImageDecodeError(f"cannot read file ({exc.strerror or exc})") from None
        if len(data) > MAX_IMAGE_FILE_BYTES:
            raise ImageDecodeError(f"file is over the {MAX_IMAGE_FILE_BYTES:,}-byte limit for "
                                   f"one image (not read)")
        return data

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
        self.infos: dict[str, zipfile.ZipInfo] = {}  # normalised name -> member
        self.problems: list[tuple[str, str]] = []  # (entry, reason), found before any reading
        self._index(self.zf.infolist())
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self._lock = threading.Lock()

    def _index(self, infos: list[zipfile.ZipInfo]) -> None:
        """Normalise every member name; unusable and ambiguous names become problems."""
        shared: dict[str, list[zipfile.ZipInfo]] = {}  # names held by more than one member
        for info in infos:
            if info.filename.endswith(("/", "\\")):
                continue  # a folder entry
            rel, why = member_path(info.filename)
            if rel is None:
                self.problems.append((info.filename, why))
            elif rel not in self.infos:
                self.infos[rel] = info
            elif not is_junk(rel):
                shared.setdefault(rel, [self.infos[rel]]).append(info)
        for rel, same in shared.items():
            del self.infos[rel]
            spelled = sorted({i.filename for i in same} - {rel})
            also = f", also spelled {', '.join(map(repr, spelled))}" if spelled else ""
            for k in range(len(same)):
                self.problems.append((rel, f"duplicate entry: the zip holds {len(same)} members "
                                           f"with this name{also} (copy {k + 1} of "
                                           f"{len(same)}); none is used"))

    def files(self) -> list[str]:
        return list(self.infos)

    def describe(self, entry: str) -> str:
        return f"{self.where}: {entry}"

    def read(self, entry: str) -> bytes:
        info = self.infos[entry]
        if info.flag_bits & 0x1:
            raise ImageDecodeError("encrypted zip entry")
        size, packed = info.file_size, info.compress_size
        if size > MAX_IMAGE_FILE_BYTES or packed > MAX_IMAGE_FILE_BYTES:
            raise ImageDecodeError(f"zip entry declares {max(size, packed):,} bytes, over the "
                                   f"{MAX_IMAGE_FILE_BYTES:,}-byte limit for one image "
                                   f"(not inflated)")
        if size >= RATIO_CHECK_MIN_BYTES and size > MAX_COMPRESSION_RATIO * max(packed, 1):
            raise ImageDecodeError(f"zip entry would inflate {size / max(packed, 1):,.0f}:1 "
                                   f"({packed:,} -> {size:,} bytes), over the "
                                   f"{MAX_COMPRESSION_RATIO}:1 limit (a zip bomb?); not inflated")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED,
                                      zipfile.ZIP_BZIP2):
            return self._read_other(info)
        off = info.header_offset
        head = self.mm[off:off + 30]
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            raise ImageDecodeError("corrupt zip entry (bad local header)")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        start = off + 30 + name_len + extra_len
        raw = self.mm[start:start + packed]
        if info.compress_type != zipfile.ZIP_STORED:
            raw = _inflate(raw, info.compress_type, size)
        if len(raw) != size or zlib.crc32(raw) != info.CRC:
            raise ImageDecodeError("corrupt zip entry (size or CRC mismatch)")
        return raw

    def _read_other(self, info: zipfile.ZipInfo) -> bytes:
        """LZMA and the rest through zipfile, a few KiB of input at a time (bounded output)."""
        parts, total = [], 0
        try:
            with self._lock, self.zf.open(info) as f:
                while chunk := f.read(4096):
                    total += len(chunk)
                    if total > info.file_size:
                        raise ImageDecodeError(f"corrupt zip entry (inflates to more than the "
                                               f"declared {info.file_size:,} bytes)")
                    parts.append(chunk)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError,
                ValueError) as exc:
            raise ImageDecodeError(f"cannot read zip entry ({exc})") from None
        return b"".join(parts)

    def close(self) -> None:
        self.mm.close()
        self._file.close()
        self.zf.close()


def _inflate(raw: bytes, method: int, size: int) -> bytes:
    """Deflate or bzip2 data -> at most size + 1 bytes: a lying header cannot use more memory."""
    try:
        if method == zipfile.ZIP_DEFLATED:
            z = zlib.decompressobj(-15)
            out = z.decompress(raw, size + 1)
            if len(out) == size and not z.eof:  # exactly the declared size: is there more?
                out += z.decompress(z.unconsumed_tail, 1)
        else:
            b = bz2.BZ2Decompressor()
            out = b.decompress(raw, size + 1)
            if len(out) == size and not b.eof and not b.needs_input:
                out += b.decompress(b"", 1)
    except (zlib.error, OSError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt zip entry ({exc})") from None
    if len(out) > size:
        raise ImageDecodeError(f"corrupt zip entry (inflates to more than the declared "
                               f"{size:,} bytes; stopped there)")
    return out


def decode_workers() -> int:
    env = os.environ.get("FERKIT_DECODE_WORKERS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(8, os.cpu_count() or 1))


def read_images(source: FolderSource | ZipSource, *, skip_bad: bool,
                progress: Callable[[int, int], None] | None = None) -> DecodedFaces:
    """Plan the layout, then decode every image (in threads)."""
    planned = plan_layout(source.files())
    problems = sorted(planned.problems + source.problems)
    csvs = [e for e, _ in problems if e.lower().endswith(".csv")]
    if not planned.items and csvs:
        raise DataError(f"{source.where}: holds {csvs[0]} but no images; extract the CSV and "
                        f"load it directly")
    skipped: list[SkippedItem] = []
    for entry, reason in problems:
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
    noisy: set[int] = set()  # C stderr grew while these decoded (maybe from another thread)
    stop = threading.Event()

    def work(lo: int) -> int:
        mark = cap.size() if cap is not None else 0
        for i in range(lo, min(lo + CHUNK, n)):
            if stop.is_set():
                break
            try:
                images[i] = decode_face(source.read(items[i][0]))
            except ImageDecodeError as exc:
                failed[i] = str(exc)
                if not skip_bad:
                    stop.set()
            if cap is not None:  # one lseek per image; a false suspect only costs a re-decode
                now = cap.size()
                if now != mark:
                    noisy.add(i)
                    mark = now
        return min(lo + CHUNK, n) - lo

    done = 0
    if progress is not None:
        progress(0, n)
    workers = decode_workers()
    with quiet_opencv(), cstderr.capture() as cap:
        start = cap.size() if cap is not None else 0
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
        warned = _attribute(source, items, noisy, failed, cap, start) if cap else {}
    if failed and not skip_bad:
        i = min(failed)
        raise DataError(f"{source.describe(items[i][0])}: {failed[i]}")

    warnings = [LoadWarning(items[i][0], warned[i]) for i in sorted(warned) if i not in failed]
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
    return DecodedFaces(images[keep] if failed else images, labels, splits, names, skipped,
                        warnings)


def _attribute(source: FolderSource | ZipSource, items: list[tuple[str, int, str]],
               noisy: set[int], failed: dict[int, str], cap: cstderr.NativeStderr,
               start: int) -> dict[int, str]:
    """Which entries made the decoders print, and what: each suspect is decoded once more,
    alone, so its messages are exactly its own. Anything left over goes on to fd 2."""
    if not noisy:
        return {}
    during = cap.since(start).splitlines(keepends=True)
    warned: dict[int, str] = {}
    for i in sorted(noisy):
        mark = cap.size()
        with contextlib.suppress(ImageDecodeError):
            decode_face(source.read(items[i][0]))
        lines = cap.since(mark).splitlines(keepends=True)
        for line in lines:
            if line in during:
                during.remove(line)
        text = "; ".join(ln.decode("utf-8", "replace").strip() for ln in lines if ln.strip())
        if text and i not in failed:
            warned[i] = f"decoded, but the decoder warned: {text}"
    cstderr.forward(b"".join(during))
    return warned
