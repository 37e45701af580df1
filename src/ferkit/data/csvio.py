"""The Kaggle challenge CSV (fer2013.csv: emotion,pixels,Usage): a fast reader and a writer.

Pixels are parsed by NumPy's C text parser a chunk of rows at a time (not per pixel in
Python), so the full 35,887-row file (about 290 MB) reads in seconds rather than minutes.
"""

from __future__ import annotations

import csv
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ferkit.classes import FACE_SIZE, NUM_CLASSES, class_index
from ferkit.data.dataset import SPLITS, DecodedFaces, FaceDataset, SkippedItem
from ferkit.errors import DataError

NPIX = FACE_SIZE * FACE_SIZE
CHUNK_ROWS = 512

USAGE_OF_SPLIT = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
_SPLIT_OF_USAGE = {
    "training": "train", "train": "train",
    "publictest": "val", "val": "val", "valid": "val", "validation": "val",
    "privatetest": "test", "test": "test",
}


def split_of_usage(value: str) -> str | None:
    return _SPLIT_OF_USAGE.get(value.strip().lower())


def _unquote(field: bytes) -> bytes:
    field = field.strip()
    if len(field) >= 2 and field[:1] == b'"' and field[-1:] == b'"':
        field = field[1:-1].strip()
    return field


def _parse_header(header: bytes, where: str) -> tuple[int, int, int | None, int]:
    try:
        text = header.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{where} line 1: header is not UTF-8 text; is this really a CSV file?") \
            from None
    try:
        cols = [c.strip().lower() for c in next(csv.reader([text]), [])]
    except csv.Error as exc:
        raise DataError(f"{where} line 1: header is not valid CSV ({exc})") from None
    missing = [c for c in ("emotion", "pixels") if c not in cols]
    if missing:
        raise DataError(
            f"{where} line 1: missing column(s) {', '.join(missing)} "
            f"(header is {text.strip()[:80]!r}; expected emotion,pixels,Usage)")
    usage = cols.index("usage") if "usage" in cols else None
    return cols.index("emotion"), cols.index("pixels"), usage, len(cols)


def _pixel_problem(field: bytes) -> str:
    """Explain (slowly, for one bad row) what is wrong with a pixels field."""
    tokens = field.split()
    for k, tok in enumerate(tokens):
        if not tok.isdigit() or not tok.isascii():
            return f"pixel {k + 1} is {tok.decode('utf-8', 'replace')[:20]!r}, not a number 0-255"
        if int(tok) > 255:
            return f"pixel {k + 1} is {int(tok)}, outside 0-255"
    return f"expected {NPIX} pixels, got {len(tokens)}"


def _fromstring(text: bytes) -> np.ndarray | None:
    """Whitespace-separated integers -> int64 array, or None if some token is not a number."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return np.fromstring(text, dtype=np.int64, sep=" ")
        except (ValueError, DeprecationWarning):
            return None


def parse_pixel_fields(fields: list[bytes]) -> tuple[np.ndarray, dict[int, str]]:
    """Space-separated pixel strings -> (uint8 (n_ok, 2304), {index: problem} for bad rows).

    Rows listed as bad are left out of the returned array, which keeps the others in order.
    The fast path parses a whole chunk in one NumPy call (C speed); a chunk that fails any
    check (odd spacing, a bad token, a wrong count, a value outside 0-255) is redone row by
    row to find exactly which rows are bad and why.
    """
    n = len(fields)
    if n == 0:
        return np.empty((0, NPIX), np.uint8), {}
    if all(f.count(b" ") == NPIX - 1 for f in fields):
        values = _fromstring(b" ".join(fields))
        if (values is not None and values.size == n * NPIX
                and values.min() >= 0 and values.max() <= 255):
            return values.astype(np.uint8).reshape(n, NPIX), {}
    rows: list[np.ndarray] = []
    problems: dict[int, str] = {}
    for k, field in enumerate(fields):
        values = _fromstring(field)
        if values is None or values.size != NPIX or (values.min() < 0 or values.max() > 255):
            problems[k] = _pixel_problem(field)
        else:
            rows.append(values.astype(np.uint8))
    return (np.stack(rows) if rows else np.empty((0, NPIX), np.uint8)), problems


def read_csv(path: Path, where: str, *, skip_bad: bool,
             progress: Callable[[int, int], None] | None = None) -> DecodedFaces:
    """Read a fer2013.csv. `where` is how messages name the file (the path as the user gave it)."""
    label = path.name  # entry names stay the same however the path was spelled
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{where}: cannot read file ({exc.strerror or exc})") from None
    lines = data.split(b"\n")
    del data
    header = lines[0]
    if not header.strip():
        raise DataError(f"{where}: empty file; expected a header line emotion,pixels,Usage")
    ie, ip, iu, ncols = _parse_header(header.rstrip(b"\r"), where)
    total = len(lines) - 1

    skipped: list[SkippedItem] = []
    images, labels, splits, names = [], [], [], []

    def bad(line_no: int, reason: str) -> None:
        if not skip_bad:
            raise DataError(f"{where} line {line_no}: {reason}")
        skipped.append(SkippedItem(f"{label} line {line_no}", reason))

    for start in range(0, total, CHUNK_ROWS):
        chunk_problems: dict[int, str] = {}
        meta: list[tuple[int, int, str]] = []
        fields: list[bytes] = []
        for i in range(start, min(start + CHUNK_ROWS, total)):
            raw = lines[i + 1]
            if not raw.strip():
                continue  # blank line (e.g. the end of the file)
            line_no = i + 2
            row = raw.rstrip(b"\r").split(b",")
            if len(row) != ncols and b'"' in raw:
                text = raw.rstrip(b"\r").decode("utf-8", "replace")
                try:
                    row = [f.encode() for f in next(csv.reader([text]), [])]
                except csv.Error as exc:  # e.g. a stray carriage return inside a field
                    chunk_problems[line_no] = f"malformed CSV row ({exc})"
                    continue
            if len(row) != ncols:
                chunk_problems[line_no] = f"expected {ncols} columns, got {len(row)}"
                continue
            emo = _unquote(row[ie]).decode("utf-8", "replace")
            y = class_index(emo) if emo else None
            if y is None:
                chunk_problems[line_no] = (f"unknown emotion {emo!r} (expected 0-{NUM_CLASSES - 1}"
                                           f" or a class name)")
                continue
            split = "train"
            if iu is not None:
                usage = _unquote(row[iu]).decode("utf-8", "replace")
                split = split_of_usage(usage)
                if split is None:
                    chunk_problems[line_no] = (f"unknown Usage {usage!r} (expected Training, "
                                               f"PublicTest or PrivateTest)")
                    continue
            meta.append((line_no, y, split))
            fields.append(_unquote(row[ip]))
        pixels, pix_problems = parse_pixel_fields(fields)
        for k, reason in pix_problems.items():
            chunk_problems[meta[k][0]] = reason
        for line_no in sorted(chunk_problems):
            bad(line_no, chunk_problems[line_no])
        ok = [m for k, m in enumerate(meta) if k not in pix_problems]
        images.append(pixels.reshape(-1, FACE_SIZE, FACE_SIZE))
        labels.extend(m[1] for m in ok)
        splits.extend(m[2] for m in ok)
        names.extend(f"{label} line {m[0]}" for m in ok)
        if progress is not None:
            progress(min(start + CHUNK_ROWS, total), total)

    if not labels:
        if skipped:
            raise DataError(f"{where}: no usable rows; all {len(skipped)} were bad (first: "
                            f"{skipped[0].entry}: {skipped[0].reason})")
        raise DataError(f"{where}: no data rows after the header")
    return DecodedFaces(np.concatenate(images), np.array(labels, np.int64), np.array(splits),
                        np.array(names), skipped)


def _token_table() -> tuple[np.ndarray, np.ndarray]:
    """Each value 0-255 as its decimal text plus a space, NUL-padded to 4 bytes (as uint32)."""
    tokens = np.array([f"{v} ".encode() for v in range(256)], dtype="S4")
    return tokens.view(np.uint32), np.array([len(f"{v} ") for v in range(256)], np.int64)


def write_csv(dataset: FaceDataset, out: Path,
              progress: Callable[[int, int], None] | None = None) -> int:
    """Write a Kaggle-format fer2013.csv (atomically). Returns the number of rows written."""
    out = Path(out)
    tokens, lens = _token_table()
    usage = {s: USAGE_OF_SPLIT[s].encode() for s in SPLITS}
    n = len(dataset)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise DataError(f"{out}: cannot write here ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"emotion,pixels,Usage\n")
            for start in range(0, n, CHUNK_ROWS):
                flat = dataset.images[start:start + CHUNK_ROWS].reshape(-1, NPIX)
                # One gather of 4-byte tokens, then drop the NUL padding (both at C speed).
                body = tokens[flat].tobytes().translate(None, b"\0")
                ends = np.cumsum(lens[flat].sum(1))
                parts = []
                pos = 0
                for k, end in enumerate(ends.tolist()):
                    i = start + k
                    parts.append(b"%d," % int(dataset.labels[i]))
                    parts.append(body[pos:end - 1])  # drop the trailing space
                    parts.append(b",%s\n" % usage[str(dataset.splits[i])])
                    pos = end
                f.write(b"".join(parts))
                if progress is not None:
                    progress(min(start + CHUNK_ROWS, n), n)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a CSV is an ordinary file
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


__all__ = ["USAGE_OF_SPLIT", "parse_pixel_fields", "read_csv", "split_of_usage",
           "write_csv"]
