"""Bad input: DataError naming the file and line/entry; skip_bad loads the rest and lists it."""

from __future__ import annotations

import io
import re
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image
from synth import (
    jpeg_with_extraneous_bytes,
    kaggle_entries,
    make_faces,
    write_csv,
    write_folder,
    write_zip,
)

from ferkit.classes import CLASSES
from ferkit.data import load_dataset
from ferkit.errors import DataError


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))


def _load_error(path, match: str) -> str:
    with pytest.raises(DataError, match=match) as info:
        load_dataset(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def _csv_lines(n_per_class: int = 3) -> list[str]:
    images, labels = make_faces(n_per_class)
    return [f"{y},{' '.join(map(str, img.ravel().tolist()))},Training"
            for img, y in zip(images, labels, strict=True)]


def _write(tmp_path, lines: list[str], header: str = "emotion,pixels,Usage"):
    path = tmp_path / "fer2013.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def _pixels(line: str) -> list[str]:
    return line.split(",")[1].split(" ")


def _replace_pixels(line: str, tokens: list[str]) -> str:
    y, _, usage = line.split(",")
    return f"{y},{' '.join(tokens)},{usage}"


BAD_ROWS = {
    "short": (lambda ln: _replace_pixels(ln, _pixels(ln)[:-1]), "expected 2304 pixels, got 2303"),
    "long": (lambda ln: _replace_pixels(ln, [*_pixels(ln), "7"]), "expected 2304 pixels, got 2305"),
    "word": (lambda ln: _replace_pixels(ln, ["12", "ab", *_pixels(ln)[2:]]),
             "pixel 2 is 'ab', not a number 0-255"),
    "float": (lambda ln: _replace_pixels(ln, ["1.5", *_pixels(ln)[1:]]),
              "pixel 1 is '1.5', not a number"),
    "negative": (lambda ln: _replace_pixels(ln, ["-3", *_pixels(ln)[1:]]),
                 "pixel 1 is '-3', not a number"),
    "too big": (lambda ln: _replace_pixels(ln, [*_pixels(ln)[:9], "300", *_pixels(ln)[10:]]),
                "pixel 10 is 300, outside 0-255"),
    "empty pixels": (lambda ln: f"{ln.split(',')[0]},,Training", "expected 2304 pixels, got 0"),
    "usage": (lambda ln: ln.replace("Training", "Holdout"), "unknown Usage 'Holdout'"),
    "emotion 7": (lambda ln: "7" + ln[1:], "unknown emotion '7'"),
    "emotion word": (lambda ln: "joyful" + ln[1:], "unknown emotion 'joyful'"),
    "columns": (lambda ln: ln + ",extra", "expected 3 columns, got 4"),
}


@pytest.mark.parametrize("kind", list(BAD_ROWS))
def test_bad_csv_row_names_file_and_line(tmp_path, kind):
    change, reason = BAD_ROWS[kind]
    lines = _csv_lines()
    lines[15] = change(lines[15])  # file line 17 (line 1 is the header)
    path = _write(tmp_path, lines)
    message = _load_error(path, re.escape(f"fer2013.csv line 17: {reason}"))
    assert message.startswith(str(path))

    ds = load_dataset(path, skip_bad=True)
    assert len(ds) == len(lines) - 1
    assert [(s.entry, s.reason[:len(reason)]) for s in ds.skipped] == [
        ("fer2013.csv line 17", reason)]
    assert "fer2013.csv line 17" not in ds.names.tolist()
    assert "fer2013.csv line 18" in ds.names.tolist()


def test_csv_fails_on_the_first_problem_and_skip_bad_lists_all(tmp_path):
    lines = _csv_lines(100)  # 700 rows: problems in different parse chunks
    for i in (3, 250, 600):
        lines[i] = _replace_pixels(lines[i], _pixels(lines[i])[:100])
    lines[400] = lines[400].replace("Training", "Nope")
    path = _write(tmp_path, lines)
    _load_error(path, "fer2013.csv line 5: expected 2304 pixels, got 100")
    ds = load_dataset(path, skip_bad=True)
    assert [s.entry for s in ds.skipped] == [f"fer2013.csv line {i + 2}"
                                             for i in (3, 250, 400, 600)]
    assert len(ds) == 696


def test_csv_missing_columns(tmp_path):
    path = _write(tmp_path, _csv_lines(1), header="label,pixels,Usage")
    _load_error(path, r"fer2013.csv line 1: missing column\(s\) emotion")
    with pytest.raises(DataError, match="missing column"):
        load_dataset(path, skip_bad=True)  # not an entry problem: nothing to skip
    path = _write(tmp_path, ["0,Training"], header="emotion,Usage")
    _load_error(path, r"line 1: missing column\(s\) pixels")


def test_csv_empty_header_only_and_binary(tmp_path):
    path = tmp_path / "fer2013.csv"
    path.write_text("")
    _load_error(path, "fer2013.csv: empty file")
    path.write_text("emotion,pixels,Usage\n\n")
    _load_error(path, "fer2013.csv: no data rows")
    path.write_bytes(b"\xff\xd8\xff\xe0 not text \x00\x01")
    _load_error(path, "fer2013.csv line 1")


def test_csv_all_rows_bad_is_an_error_even_with_skip_bad(tmp_path):
    lines = [ln.replace("Training", "Nope") for ln in _csv_lines(1)]
    path = _write(tmp_path, lines)
    with pytest.raises(DataError, match="no usable rows; all 7 were bad"):
        load_dataset(path, skip_bad=True)


# --- image folders and zips -------------------------------------------------------------------

def _good_entries(n_per_class: int = 2) -> dict[str, bytes]:
    images, labels = make_faces(n_per_class)
    return kaggle_entries(images, labels, ["train"] * len(labels))


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((48, 48), 9, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


BAD_ENTRIES = {
    "corrupt": ("train/happy/Training_bad.jpg", b"\xff\xd8\xff\xe0 garbage",
                "cannot decode image"),
    "truncated": ("train/sad/Training_cut.png", _png_bytes()[:60], "cannot decode image"),
    "empty file": ("train/sad/Training_empty.png", b"", "cannot decode image (empty file)"),
    "unknown class": ("train/contempt/Training_1.png", _png_bytes(),
                      "unknown class folder 'contempt'"),
    "non-image": ("train/happy/notes.txt", b"hello", "not an image file"),
    "no class folder": ("train/loose.png", _png_bytes(), "not inside a class folder"),
    "outside splits": ("README.md", b"# readme", "not inside a train/, val/ or test/ folder"),
}


@pytest.mark.parametrize("container", ["zip", "folder"])
@pytest.mark.parametrize("kind", list(BAD_ENTRIES))
def test_bad_image_entry_names_file_and_entry(tmp_path, kind, container):
    entry, data, reason = BAD_ENTRIES[kind]
    entries = _good_entries()
    entries[entry] = data
    if container == "zip":
        path = write_zip(tmp_path / "faces.zip", entries)
        where = f"{path}: {entry}: "
    else:
        path = write_folder(tmp_path / "faces", entries)
        where = f"{path / entry}: "
    message = _load_error(path, re.escape(reason))
    assert message.startswith(where)

    ds = load_dataset(path, skip_bad=True)
    assert len(ds) == 14
    assert [s.entry for s in ds.skipped] == [entry]
    assert reason in ds.skipped[0].reason


def test_unknown_class_folder_with_skip_bad_lists_every_file(tmp_path):
    entries = _good_entries()
    for i in range(3):
        entries[f"train/contempt/Training_c{i}.png"] = _png_bytes()
    path = write_zip(tmp_path / "faces.zip", entries)
    ds = load_dataset(path, skip_bad=True)
    assert len(ds) == 14
    assert [s.entry for s in ds.skipped] == [f"train/contempt/Training_c{i}.png"
                                             for i in range(3)]


def test_corrupt_zip_member_is_caught_by_crc(tmp_path):
    entries = _good_entries(1)
    path = write_zip(tmp_path / "faces.zip", entries)
    raw = bytearray(path.read_bytes())
    target = entries["train/angry/Training_0.png"]
    at = raw.find(target)
    raw[at + len(target) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    message = _load_error(path, "train/angry/Training_0.png: corrupt zip entry")
    assert message.startswith(str(path))


def test_missing_path_unsupported_type_and_bad_zip(tmp_path):
    _load_error(tmp_path / "nope.zip", "nope.zip: no such file or folder")
    (tmp_path / "notes.txt").write_text("hi")
    _load_error(tmp_path / "notes.txt", r"notes.txt: unsupported file type '.txt'")
    (tmp_path / "face.png").write_bytes(_png_bytes())
    _load_error(tmp_path / "face.png", "unsupported file type '.png'")
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    _load_error(tmp_path / "broken.zip", "broken.zip: not a readable zip file")


def test_empty_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    _load_error(tmp_path / "empty", "no images found")
    path = write_zip(tmp_path / "junk.zip", {"__MACOSX/._a.png": b"x", ".DS_Store": b"x"})
    _load_error(path, "junk.zip: no images found")


def test_all_entries_bad_is_an_error_even_with_skip_bad(tmp_path):
    path = write_zip(tmp_path / "bad.zip", {"happy/a.jpg": b"nope", "happy/b.jpg": b"nope"})
    with pytest.raises(DataError, match="no usable images; all 2 entries were bad"):
        load_dataset(path, skip_bad=True)


def test_images_fail_on_first_problem_in_entry_order(tmp_path):
    images, labels = make_faces(150)  # several decode chunks
    entries = kaggle_entries(images, labels, ["train"] * len(labels))
    names = sorted(entries)
    for name in (names[100], names[900]):
        entries[name] = b"broken"
    path = write_folder(tmp_path / "many", entries)
    message = _load_error(path, "cannot decode image")
    assert names[100] in message or names[900] in message
    ds = load_dataset(path, skip_bad=True)
    assert [s.entry for s in ds.skipped] == sorted([names[100], names[900]])
    assert len(ds) == len(labels) - 2


def test_skip_bad_keeps_labels_aligned_with_images(tmp_path):
    images, labels = make_faces(2)
    entries = kaggle_entries(images, labels, ["train"] * len(labels))
    bad = sorted(entries)[3]
    entries[bad] = b"broken"
    ds = load_dataset(write_zip(tmp_path / "z.zip", entries), skip_bad=True)
    clean = load_dataset(write_csv(tmp_path / "fer2013.csv", images, labels,
                                   ["train"] * len(labels)))
    by_pixels = {img.tobytes(): int(y)
                 for img, y in zip(clean.images, clean.labels, strict=True)}
    assert all(by_pixels[img.tobytes()] == int(y)
               for img, y in zip(ds.images, ds.labels, strict=True))


def test_zip_holding_only_a_csv_says_to_extract_it(tmp_path):
    path = write_zip(tmp_path / "challenge.zip", {"fer2013/fer2013.csv": b"emotion,pixels\n"})
    _load_error(path, "challenge.zip: holds fer2013/fer2013.csv but no images; extract the CSV")


# --- zip member names: duplicates, '..', absolute paths ----------------------------------------

def _zip_with(tmp_path, extra: list[tuple[str, bytes]], name: str = "names.zip"):
    """Good entries plus `extra` members, written in that order (duplicates allowed)."""
    path = tmp_path / name
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as zf:
        warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name"
        for k, v in _good_entries().items():
            zf.writestr(k, v)
        for k, v in extra:
            zf.writestr(zipfile.ZipInfo(k), v)
    return path


def test_duplicate_zip_entries_are_reported_not_silently_merged(tmp_path):
    path = _zip_with(tmp_path, [("train/happy/a.png", _png_bytes()),
                                ("train/happy/a.png", _png_bytes()[::-1])])
    message = _load_error(path, "duplicate entry")
    assert message.startswith(f"{path}: train/happy/a.png: duplicate entry: the zip holds 2 "
                              f"members with this name")
    ds = load_dataset(path, skip_bad=True)
    assert len(ds) == 14 and "train/happy/a.png" not in ds.names.tolist()
    assert [s.entry for s in ds.skipped] == ["train/happy/a.png"] * 2  # one per member
    assert [s.reason.split("(")[1][:11] for s in ds.skipped] == ["copy 1 of 2", "copy 2 of 2"]


def test_names_that_mean_the_same_file_are_duplicates_too(tmp_path):
    path = _zip_with(tmp_path, [("train/happy/b.png", _png_bytes()),
                                ("train\\happy\\b.png", _png_bytes())])
    message = _load_error(path, "duplicate entry")
    assert "train/happy/b.png: duplicate entry" in message and "also spelled" in message


@pytest.mark.parametrize(("name", "reason"), [
    ("train/happy/../../../y.png", "path leaves the archive root"),
    ("../train/happy/y.png", "path leaves the archive root"),
    ("/train/happy/y.png", "absolute path in the zip"),
    ("\\train\\happy\\y.png", "absolute path in the zip"),
    ("C:/train/happy/y.png", "absolute path in the zip"),
])
def test_zip_entries_outside_the_archive_root_are_rejected(tmp_path, name, reason):
    path = _zip_with(tmp_path, [(name, _png_bytes())])
    message = _load_error(path, re.escape(reason))
    assert message.startswith(f"{path}: {name}: {reason}")
    ds = load_dataset(path, skip_bad=True)
    assert len(ds) == 14 and [(s.entry, s.reason[:len(reason)]) for s in ds.skipped] == [
        (name, reason)]


def test_zip_member_paths_are_normalised_once_for_every_rule(tmp_path):
    path = _zip_with(tmp_path, [("train/../train/sad/t.png", _png_bytes()),
                                ("./train//happy/./u.png", _png_bytes()),
                                ("train\\fear\\v.png", _png_bytes()),
                                ("train/sad/../../w.png", _png_bytes())])
    ds = load_dataset(path, skip_bad=True)
    names = ds.names.tolist()
    assert {"train/sad/t.png", "train/happy/u.png", "train/fear/v.png"} <= set(names)
    assert len(ds) == 17
    # w.png resolves to the archive root: inside it, but not in a split folder.
    assert [(s.entry, s.reason) for s in ds.skipped] == [
        ("w.png", "not inside a train/, val/ or test/ folder")]
    labels = dict(zip(names, ds.labels.tolist(), strict=True))
    assert labels["train/sad/t.png"] == CLASSES.index("sad")
    assert labels["train/fear/v.png"] == CLASSES.index("fear")


# --- images that decode with a warning from the decoder ----------------------------------------

def test_corrupt_but_decodable_jpeg_is_loaded_with_a_named_warning(tmp_path, capfd):
    images, labels = make_faces(1)
    entries = kaggle_entries(images, labels, ["train"] * len(labels))
    entries["train/happy/odd.jpg"] = jpeg_with_extraneous_bytes(images[3])
    path = write_zip(tmp_path / "odd.zip", entries)
    ds = load_dataset(path)
    assert len(ds) == 8 and ds.skipped == []
    assert [w.entry for w in ds.warnings] == ["train/happy/odd.jpg"]
    assert re.search(r"Corrupt JPEG data: \d+ extraneous bytes before marker 0xd9",
                     ds.warnings[0].message)
    assert capfd.readouterr().err == ""  # said once, with the entry, not anonymously on stderr
    again = load_dataset(path)  # from the cache
    assert again.warnings == ds.warnings


def test_decoder_warnings_are_attributed_exactly_when_decoding_in_threads(tmp_path, monkeypatch,
                                                                          capfd):
    monkeypatch.setenv("FERKIT_DECODE_WORKERS", "2")
    images, labels = make_faces(80)  # 560 images: more than one decode chunk
    entries = kaggle_entries(images, labels, ["train"] * len(labels))
    names = sorted(entries)
    odd = [names[5], names[300], names[301], names[555]]
    for name in odd:
        entries[name] = jpeg_with_extraneous_bytes(images[0], 100)
    ds = load_dataset(write_folder(tmp_path / "many", entries), use_cache=False)
    assert [w.entry for w in ds.warnings] == odd
    assert len(ds) == len(names) and ds.skipped == []
    assert capfd.readouterr().err == ""


def test_c_level_stderr_is_given_back_after_loading(tmp_path, capfd):
    import cv2

    images, labels = make_faces(1)
    entries = kaggle_entries(images, labels, ["train"] * len(labels))
    load_dataset(write_zip(tmp_path / "ok.zip", entries), use_cache=False)
    cv2.imdecode(np.frombuffer(jpeg_with_extraneous_bytes(images[0]), np.uint8),
                 cv2.IMREAD_GRAYSCALE)  # outside a load: libjpeg prints as it always did
    assert "extraneous bytes" in capfd.readouterr().err


def test_without_a_findable_c_stderr_decoder_warnings_just_print(tmp_path, monkeypatch, capfd):
    from ferkit.data import cstderr

    monkeypatch.setattr(cstderr, "_setup", lambda: None)  # e.g. Windows, or an unusual libc
    images, labels = make_faces(1)
    entries = kaggle_entries(images, labels, ["train"] * len(labels))
    entries["train/happy/odd.jpg"] = jpeg_with_extraneous_bytes(images[3])
    ds = load_dataset(write_zip(tmp_path / "odd.zip", entries), use_cache=False)
    assert len(ds) == 8 and ds.warnings == []
    assert "extraneous bytes" in capfd.readouterr().err  # as before: not lost, just anonymous
