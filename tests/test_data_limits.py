"""Bounded memory: zip bombs, lying zip headers and huge images are rejected before they are
inflated or decoded, and reported like any other bad entry."""

from __future__ import annotations

import re
import resource
import sys
from pathlib import Path

import pytest
from synth import (
    deflate_zeros,
    huge_png,
    kaggle_entries,
    make_faces,
    stored,
    write_folder,
    write_raw_zip,
    write_zip,
)

from ferkit.data import load_dataset
from ferkit.data.images import MAX_FACE_PIXELS, MAX_IMAGE_FILE_BYTES
from ferkit.errors import DataError

MIB = 1 << 20
BOMB_MIB = 120  # > MAX_IMAGE_FILE_BYTES inflated, ~120 KB in the zip


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(autouse=True, scope="module")
def _warm(tmp_path_factory):
    """Import the decoders first, so their own memory is not counted against a test."""
    load_dataset(write_raw_zip(tmp_path_factory.mktemp("warm") / "warm.zip", _good_members()),
                 use_cache=False)


def _peak_growth(fn) -> tuple[int, object]:
    """(how far the process's peak RSS rose while fn ran, in bytes; fn's result or exception).

    On Linux the peak is reset first (/proc/self/clear_refs), so the figure is this call's
    alone; elsewhere it is the rise of the lifetime peak, which can only under-report.
    """
    def status_kb(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def peak() -> int:
        if reset:
            return status_kb("VmHWM") * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (
            1 if sys.platform == "darwin" else 1024)

    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset, before = True, status_kb("VmRSS") * 1024
    except (OSError, KeyError):
        reset = False
        before = peak()
    try:
        result = fn()
    except Exception as exc:  # handed back to the test to check
        result = exc
    return peak() - before, result


def _good_members() -> list[tuple[str, bytes, int, int, int]]:
    images, labels = make_faces(1)
    return [stored(k, v) for k, v in
            kaggle_entries(images, labels, ["train"] * len(labels)).items()]


def _bomb_zip(path: Path, declared: int) -> Path:
    """train/happy/bomb.jpg: BOMB_MIB MiB of zeros (deflated), claiming `declared` bytes."""
    data, crc = deflate_zeros(BOMB_MIB)
    return write_raw_zip(path, [*_good_members(),
                                ("train/happy/bomb.jpg", data, 8, crc, declared)])


def _check_rejected(path: Path, entry: str, reason: str, max_growth: int = 40 * MIB) -> None:
    growth, result = _peak_growth(lambda: load_dataset(path, use_cache=False))
    assert isinstance(result, DataError), result
    assert str(result).startswith(f"{path}: {entry}: ")
    assert re.search(reason, str(result)), str(result)
    assert growth < max_growth, f"peak RSS rose by {growth / MIB:.0f} MiB"
    ds = load_dataset(path, skip_bad=True, use_cache=False)
    assert len(ds) == 7
    assert [s.entry for s in ds.skipped] == [entry]
    assert re.search(reason, ds.skipped[0].reason)


def test_zip_bomb_is_rejected_from_its_declared_size(tmp_path):
    path = _bomb_zip(tmp_path / "bomb.zip", BOMB_MIB * MIB)
    assert path.stat().st_size < 200_000
    _check_rejected(path, "train/happy/bomb.jpg",
                    f"declares {BOMB_MIB * MIB:,} bytes, over the {MAX_IMAGE_FILE_BYTES:,}-byte "
                    f"limit")


def test_zip_member_that_would_inflate_too_far_is_rejected_from_its_header(tmp_path):
    data, crc = deflate_zeros(40)  # 40 MiB: under the size limit, but ~1000:1
    path = write_raw_zip(tmp_path / "ratio.zip",
                         [*_good_members(), ("train/happy/bomb.jpg", data, 8, crc, 40 * MIB)])
    _check_rejected(path, "train/happy/bomb.jpg", r"would inflate [\d,]+:1 .* over the 100:1")


def test_lying_zip_header_cannot_inflate_past_the_declared_size(tmp_path):
    # Claims 1 MB (a plausible ratio): inflating stops there instead of producing 120 MiB.
    path = _bomb_zip(tmp_path / "liar.zip", 1_000_000)
    _check_rejected(path, "train/happy/bomb.jpg",
                    "inflates to more than the declared 1,000,000 bytes")


def test_huge_png_is_rejected_from_its_header(tmp_path):
    png = huge_png(20000, 20000)
    assert len(png) < 400_000
    images, labels = make_faces(1)
    entries = kaggle_entries(images, labels, ["train"] * len(labels))
    entries["train/happy/huge.png"] = png
    reason = (f"image too large: 20000x20000 = 400,000,000 pixels, over the limit of "
              f"{MAX_FACE_PIXELS:,} pixels")
    for path in (write_zip(tmp_path / "huge.zip", entries),
                 write_folder(tmp_path / "huge", entries)):
        where = f"{path}: train/happy/huge.png" if path.suffix else str(path /
                                                                       "train/happy/huge.png")
        growth, result = _peak_growth(lambda p=path: load_dataset(p, use_cache=False))
        assert isinstance(result, DataError), result
        assert str(result) == f"{where}: {reason} for a face (not decoded)"
        assert growth < 40 * MIB, f"peak RSS rose by {growth / MIB:.0f} MiB"
        ds = load_dataset(path, skip_bad=True, use_cache=False)
        assert len(ds) == 7 and [s.entry for s in ds.skipped] == ["train/happy/huge.png"]


def test_a_face_just_under_the_pixel_limit_is_not_rejected_by_the_check():
    from ferkit.data.images import decode_face
    from ferkit.images import ImageDecodeError

    assert decode_face(huge_png(1000, 1000)).shape == (48, 48)
    with pytest.raises(ImageDecodeError, match="image too large: 8000x6000") as info:
        decode_face(huge_png(8000, 6000))
    assert info.value.kind == "too_large"


def test_folder_file_over_the_size_limit_is_not_read(tmp_path, monkeypatch):
    import ferkit.data.imagefolders as imagefolders

    monkeypatch.setattr(imagefolders, "MAX_IMAGE_FILE_BYTES", 20_000)
    images, labels = make_faces(1)
    entries = kaggle_entries(images, labels, ["train"] * len(labels))
    entries["train/happy/big.bmp"] = b"BM" + bytes(30_000)
    path = write_folder(tmp_path / "big", entries)
    with pytest.raises(DataError, match=re.escape("big.bmp: file is over the 20,000-byte limit")):
        load_dataset(path, use_cache=False)
    ds = load_dataset(path, skip_bad=True, use_cache=False)
    assert len(ds) == 7 and [s.entry for s in ds.skipped] == ["train/happy/big.bmp"]
