"""The decoded-dataset cache: hits, invalidation by content, corrupt files, unwritable folders."""

from __future__ import annotations

import os

import numpy as np
import pytest
from synth import jpeg_bytes, kaggle_entries, make_csv_dataset, make_faces, write_folder, write_zip

from ferkit.classes import CLASSES
from ferkit.data import cache, load_dataset
from ferkit.errors import DataError


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))


def _cache_files(tmp_path):
    return sorted((tmp_path / "cache" / "datasets").glob("*.npz"))


def _same(a, b):
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.splits.tolist() == b.splits.tolist()
    assert a.names.tolist() == b.names.tolist()
    assert a.skipped == b.skipped


def _no_decoding(monkeypatch):
    """Make any decoding fail loudly, so a passing load proves it came from the cache."""
    import ferkit.data.csvio as csvio
    import ferkit.data.imagefolders as imagefolders

    def boom(*args, **kwargs):
        raise AssertionError("decoded although the cache should have been used")

    monkeypatch.setattr(csvio, "read_csv", boom)
    monkeypatch.setattr(imagefolders, "read_images", boom)


@pytest.fixture
def sources(tmp_path):
    images, labels = make_faces(2)
    splits = ["train", "val", "test"] * 4 + ["train", "train"]
    entries = kaggle_entries(images, labels, splits)
    return {
        "csv": make_csv_dataset(tmp_path, n_per_class=2),
        "zip": write_zip(tmp_path / "faces.zip", entries),
        "folder": write_folder(tmp_path / "faces", entries),
    }


@pytest.mark.parametrize("kind", ["csv", "zip", "folder"])
def test_second_load_hits_the_cache_and_equals_the_first(tmp_path, sources, kind, monkeypatch):
    first = load_dataset(sources[kind])
    assert len(_cache_files(tmp_path)) == 1
    _no_decoding(monkeypatch)
    second = load_dataset(sources[kind])
    _same(first, second)
    assert second.source == str(sources[kind])


def _touch_later(path):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


@pytest.mark.parametrize("kind", ["csv", "zip"])
def test_touching_a_file_source_keeps_the_cache(tmp_path, sources, kind):
    load_dataset(sources[kind])
    _touch_later(sources[kind])  # same bytes: the content key still matches
    calls = []
    load_dataset(sources[kind], progress=lambda d, t: calls.append(d))
    assert calls == []


def _rewrite_keeping_stat(path, data: bytes) -> None:
    """Edit in place as `cp` + `touch -r` would: same size, the old mtime put back."""
    st = path.stat()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_csv_label_edited_with_same_size_and_mtime_is_seen(tmp_path, sources):
    path = sources["csv"]
    first = load_dataset(path)
    lines = path.read_bytes().split(b"\n")
    old = int(lines[1][:1])
    lines[1] = b"%d" % ((old + 1) % 7) + lines[1][1:]  # one digit: same size
    _rewrite_keeping_stat(path, b"\n".join(lines))
    second = load_dataset(path)
    assert first.labels[0] == old and second.labels[0] == (old + 1) % 7
    assert len(_cache_files(tmp_path)) == 1  # the stale entry was replaced, not kept


def test_csv_pixel_made_invalid_with_same_size_and_mtime_is_an_error(tmp_path, sources):
    path = sources["csv"]
    load_dataset(path)
    lines = path.read_bytes().split(b"\n")
    tokens = lines[1].split(b",")[1].split(b" ")
    k = next(i for i, t in enumerate(tokens) if len(t) == 3)
    tokens[k] = b"9" + tokens[k][1:]  # 9xx > 255, same length
    y, _, usage = lines[1].split(b",")
    lines[1] = b",".join([y, b" ".join(tokens), usage])
    _rewrite_keeping_stat(path, b"\n".join(lines))
    with pytest.raises(DataError, match=f"fer2013.csv line 2: pixel {k + 1} is 9[0-9][0-9], "
                                        f"outside 0-255"):
        load_dataset(path)


def _same_size_jpegs(a: np.ndarray, b: np.ndarray) -> tuple[bytes, bytes]:
    """Two different JPEGs of exactly the same length (a comment segment pads the shorter)."""
    ja, jb = jpeg_bytes(a, quality=95), jpeg_bytes(b, quality=95)
    target = max(len(ja), len(jb)) + 16
    ja = jpeg_bytes(a, quality=95, comment=b"x" * (target - len(ja) - 4))
    jb = jpeg_bytes(b, quality=95, comment=b"x" * (target - len(jb) - 4))
    assert len(ja) == len(jb) == target and ja != jb
    return ja, jb


@pytest.mark.parametrize("kind", ["zip", "folder"])
def test_jpeg_swapped_with_same_size_and_mtime_gives_new_pixels(tmp_path, kind):
    images, labels = make_faces(1)
    old_jpeg, new_jpeg = _same_size_jpegs(images[0], 255 - images[0])
    entries = {f"train/{CLASSES[y]}/Training_{i}.jpg": jpeg_bytes(img, quality=95)
               for i, (img, y) in enumerate(zip(images, labels, strict=True))}
    name = "train/angry/Training_0.jpg"
    entries[name] = old_jpeg
    if kind == "zip":  # stored members: the archive keeps its size too
        path = write_zip(tmp_path / "faces.zip", entries)
        first = load_dataset(path)
        entries[name] = new_jpeg
        write_zip(tmp_path / "new.zip", entries)
        _rewrite_keeping_stat(path, (tmp_path / "new.zip").read_bytes())
    else:
        path = write_folder(tmp_path / "faces", entries)
        first = load_dataset(path)
        _rewrite_keeping_stat(path / name, new_jpeg)
    second = load_dataset(path)
    i = first.names.tolist().index(name)
    assert second.names.tolist() == first.names.tolist()
    assert np.abs(first.images[i].astype(int) - images[0]).mean() < 10
    assert np.abs(second.images[i].astype(int) - (255 - images[0])).mean() < 10


@pytest.mark.parametrize("kind", ["zip", "folder"])
def test_a_source_edited_during_the_decode_is_not_cached(tmp_path, sources, monkeypatch, kind):
    import ferkit.data.imagefolders as imagefolders

    path = sources[kind]
    victim = path if kind == "zip" else sorted(path.rglob("*.png"))[0]
    real = imagefolders.read_images

    def read_then_edit(source, **kwargs):
        parts = real(source, **kwargs)
        _rewrite_keeping_stat(victim, victim.read_bytes()[::-1])  # same size, mtime put back
        return parts

    monkeypatch.setattr(imagefolders, "read_images", read_then_edit)
    load_dataset(path)
    assert _cache_files(tmp_path) == []


def test_changing_a_folder_file_invalidates_the_cache(tmp_path, sources):
    folder = sources["folder"]
    first = load_dataset(folder)
    victim = folder / first.names[0]
    victim.unlink()
    second = load_dataset(folder)
    assert len(second) == len(first) - 1
    (folder / "train" / "happy" / "Training_new.png").write_bytes(
        (folder / first.names[1]).read_bytes())
    third = load_dataset(folder)
    assert len(third) == len(first)
    _touch_later(folder / first.names[1])
    calls = []
    load_dataset(folder, progress=lambda d, t: calls.append(d))
    assert calls


def test_skip_bad_is_part_of_the_key(tmp_path, sources):
    load_dataset(sources["zip"])
    calls = []
    load_dataset(sources["zip"], skip_bad=True, progress=lambda d, t: calls.append(d))
    assert calls
    assert len(_cache_files(tmp_path)) == 2


def test_skipped_entries_survive_the_cache(tmp_path, monkeypatch):
    images, labels = make_faces(1)
    entries = kaggle_entries(images, labels, ["train"] * 7)
    entries["train/happy/broken.jpg"] = b"nope"
    path = write_zip(tmp_path / "bad.zip", entries)
    first = load_dataset(path, skip_bad=True)
    assert len(first.skipped) == 1
    _no_decoding(monkeypatch)
    _same(first, load_dataset(path, skip_bad=True))


def test_corrupt_or_foreign_cache_file_is_ignored_and_rebuilt(tmp_path, sources):
    first = load_dataset(sources["zip"])
    (cache_file,) = _cache_files(tmp_path)
    cache_file.write_bytes(b"garbage, not an npz")
    again = load_dataset(sources["zip"])
    _same(first, again)
    assert cache_file.stat().st_size > 1000  # rewritten
    data = cache_file.read_bytes()
    cache_file.write_bytes(data[: len(data) // 2])  # truncated
    _same(first, load_dataset(sources["zip"]))


def test_use_cache_false_neither_reads_nor_writes(tmp_path, sources):
    load_dataset(sources["csv"], use_cache=False)
    assert _cache_files(tmp_path) == []


def test_unwritable_cache_dir_still_loads(tmp_path, sources, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(blocker))
    assert len(load_dataset(sources["csv"])) == 14


def test_cache_dir_defaults_to_home_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("FERKIT_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / ".cache" / "ferkit"


def test_no_temporary_files_are_left_behind(tmp_path, sources):
    for source in sources.values():
        load_dataset(source)
    leftovers = [p for p in (tmp_path / "cache" / "datasets").iterdir()
                 if not p.name.endswith(".npz") or p.name.startswith(".tmp")]
    assert leftovers == []
