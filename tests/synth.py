"""Synthetic FER-like data for tests: learnable class patterns, written as CSV, folders or zips."""

from __future__ import annotations

import csv
import struct
import zipfile
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from ferkit.classes import CLASSES

USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


def class_patterns(seed: int = 0) -> np.ndarray:
    """One fixed smooth 48x48 pattern per class, so a small CNN can learn the labels fast."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((len(CLASSES), 6, 6))
    return np.kron(coarse, np.ones((8, 8)))  # (7, 48, 48) in [0, 1]


def make_faces(
    n_per_class: int, seed: int = 0, classes: tuple[int, ...] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 48, 48) uint8 images and int labels: class pattern plus noise, labels in class order."""
    rng = np.random.default_rng(seed + 1)
    patterns = class_patterns()
    wanted = classes if classes is not None else range(len(CLASSES))
    labels = np.repeat(np.array(wanted), n_per_class)
    noise = rng.normal(0, 20, (len(labels), 48, 48))
    images = np.clip(60 + 130 * patterns[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def write_csv(path: Path, images: np.ndarray, labels: np.ndarray, splits: list[str]) -> Path:
    """Kaggle fer2013.csv format: emotion,pixels,Usage."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["emotion", "pixels", "Usage"])
        for img, label, split in zip(images, labels, splits, strict=True):
            writer.writerow([int(label), " ".join(map(str, img.ravel().tolist())), USAGE[split]])
    return path


def _encode(img: np.ndarray, fmt: str) -> bytes:
    buf = BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return buf.getvalue()


def kaggle_entries(images: np.ndarray, labels: np.ndarray, splits: list[str], fmt: str = "PNG"
                   ) -> dict[str, bytes]:
    """Relative path -> encoded bytes in the Kaggle layout (train/<class>/Training_i.png)."""
    ext = "png" if fmt == "PNG" else "jpg"
    entries = {}
    for i, (img, label, split) in enumerate(zip(images, labels, splits, strict=True)):
        top = "train" if split == "train" else "test"
        entries[f"{top}/{CLASSES[label]}/{USAGE[split]}_{i}.{ext}"] = _encode(img, fmt)
    return entries


def write_folder(root: Path, entries: dict[str, bytes]) -> Path:
    for rel, data in entries.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in entries.items():
            zf.writestr(rel, data)
    return path


def make_csv_dataset(tmp_path: Path, n_per_class: int = 20, seed: int = 0) -> Path:
    """A small fer2013.csv with train/val/test rows (lossless, so tests can compare pixels)."""
    images, labels = make_faces(n_per_class, seed)
    splits = [("train", "train", "train", "val", "test")[i % 5] for i in range(len(labels))]
    return write_csv(tmp_path / "fer2013.csv", images, labels, splits)


# --- hostile inputs: zip bombs, lying headers, huge images, corrupt-but-decodable JPEGs --------

def jpeg_bytes(img: np.ndarray, **save) -> bytes:
    buf = BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", **save)
    return buf.getvalue()


def jpeg_with_extraneous_bytes(img: np.ndarray, n: int = 200) -> bytes:
    """A JPEG that libjpeg still decodes, warning "Corrupt JPEG data: N extraneous bytes before
    marker 0xd9" (garbage between the scan data and the end marker)."""
    data = jpeg_bytes(img, quality=90)
    assert data.endswith(b"\xff\xd9")
    return data[:-2] + bytes(range(1, 1 + n % 255)) * (n // 255 + 1) + b"\xff\xd9"


def deflate_zeros(mib: int) -> tuple[bytes, int]:
    """(raw deflate stream, CRC-32) of `mib` MiB of zero bytes, in milliseconds: one MiB is
    compressed and full-flushed (byte-aligned, no back references), then repeated."""
    zeros = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    final = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty last block
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    return block * mib + final, crc


def write_raw_zip(path: Path, members: list[tuple[str, bytes, int, int, int]]) -> Path:
    """A zip written byte by byte, so headers can say anything: members are (name, stored
    bytes, method (0 stored, 8 deflated), CRC-32, declared uncompressed size)."""
    body, central = bytearray(), bytearray()
    for name, data, method, crc, size in members:
        raw = name.encode()
        offset = len(body)
        body += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc,
                            len(data), size, len(raw), 0) + raw + data
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21,
                               crc, len(data), size, len(raw), 0, 0, 0, 0, 0, offset) + raw
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members),
                      len(central), len(body), 0)
    path.write_bytes(bytes(body + central + end))
    return path


def stored(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
    """An honest stored member for write_raw_zip."""
    return name, data, 0, zlib.crc32(data), len(data)


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of zeros: a few hundred KB for 20000x20000, built row by row
    (never the whole picture in memory)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    rows = bytes(1 + (width + 7) // 8) * 1000  # filter byte 0, then packed zero bits
    assert height % 1000 == 0, "whole batches of rows only"
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(rows) + c.flush(zlib.Z_FULL_FLUSH)  # repeatable, as in deflate_zeros
    adler = 1
    for _ in range(height // 1000):
        adler = zlib.adler32(rows, adler)
    idat = (b"\x78\xda" + block * (height // 1000)
            + zlib.compressobj(9, zlib.DEFLATED, -15).flush() + struct.pack(">I", adler))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))
