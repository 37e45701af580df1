"""load_dataset on every kind of source, with synthetic data written into tmp_path."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image
from synth import (
    USAGE,
    kaggle_entries,
    make_csv_dataset,
    make_faces,
    write_csv,
    write_folder,
    write_zip,
)

from ferkit.classes import CLASSES
from ferkit.data import FaceDataset, load_dataset


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))


def _splits(n: int) -> list[str]:
    return [("train", "train", "train", "val", "test")[i % 5] for i in range(n)]


def _by_name(ds: FaceDataset) -> dict[str, tuple[bytes, int, str]]:
    return {str(n): (img.tobytes(), int(y), str(s))
            for n, img, y, s in zip(ds.names, ds.images, ds.labels, ds.splits, strict=True)}


def _png(img: np.ndarray, mode: str | None = None, **save) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(img) if mode is None else Image.fromarray(img, mode)
    im.save(buf, format=save.pop("format", "PNG"), **save)
    return buf.getvalue()


# --- the Kaggle CSV -------------------------------------------------------------------------

def test_csv_loads_images_labels_splits_and_names(tmp_path):
    images, labels = make_faces(4)
    splits = _splits(len(labels))
    path = write_csv(tmp_path / "fer2013.csv", images, labels, splits)
    ds = load_dataset(path)
    assert ds.images.dtype == np.uint8 and ds.images.shape == (28, 48, 48)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.splits.tolist() == splits
    assert ds.names[0] == "fer2013.csv line 2" and ds.names[-1] == "fer2013.csv line 29"
    assert ds.split_names == ["train", "val", "test"]
    assert ds.source == str(path) and ds.skipped == []


def test_csv_column_order_quotes_crlf_and_class_names(tmp_path):
    images, labels = make_faces(1)
    rows = ["Usage,emotion,pixels"]
    for img, y in zip(images, labels, strict=True):
        pix = " ".join(map(str, img.ravel().tolist()))
        emotion = CLASSES[y].upper() if y % 2 else str(y)
        rows.append(f'PrivateTest,{emotion},"{pix}"')
    path = tmp_path / "any name.csv"
    path.write_bytes(("\r\n".join(rows) + "\r\n\r\n").encode())
    ds = load_dataset(path)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert set(ds.splits.tolist()) == {"test"}


def test_csv_without_usage_column_is_all_train(tmp_path):
    images, labels = make_faces(1)
    path = tmp_path / "train.csv"
    path.write_text("emotion,pixels\n" + "".join(
        f"{y},{' '.join(map(str, img.ravel().tolist()))}\n"
        for img, y in zip(images, labels, strict=True)))
    ds = load_dataset(path)
    assert ds.split_names == ["train"] and len(ds) == 7


def test_csv_pixels_with_odd_spacing_and_leading_zeros(tmp_path):
    images, labels = make_faces(1)
    path = tmp_path / "fer2013.csv"
    lines = ["emotion,pixels,Usage"]
    for img, y in zip(images, labels, strict=True):
        tokens = [f"{v:03d}" for v in img.ravel().tolist()]
        lines.append(f"{y}, {'  '.join(tokens)} ,Training")
    path.write_text("\n".join(lines))  # no final newline either
    ds = load_dataset(path)
    np.testing.assert_array_equal(ds.images, images)


# --- image folders and zips -------------------------------------------------------------------

@pytest.fixture
def faces():
    images, labels = make_faces(3)
    return images, labels, _splits(len(labels))


def test_png_pixels_equal_across_csv_folder_and_zip(tmp_path, faces):
    images, labels, splits = faces
    entries = kaggle_entries(images, labels, splits, fmt="PNG")
    sources = [
        write_csv(tmp_path / "fer2013.csv", images, labels, splits),
        write_folder(tmp_path / "folder", entries),
        write_zip(tmp_path / "faces.zip", entries),
    ]
    loaded = [load_dataset(p) for p in sources]
    for ds in loaded:
        assert len(ds) == len(labels)
        assert sorted(ds.split_names) == ["test", "train", "val"]
        for s in ("train", "val", "test"):
            np.testing.assert_array_equal(ds.split(s).class_counts(),
                                          np.bincount(labels[np.array(splits) == s],
                                                      minlength=7))
    # Image sources are sorted by entry name; match each face to its CSV row by content.
    csv_faces = sorted((img.tobytes(), int(y), s) for img, y, s in
                       zip(loaded[0].images, loaded[0].labels, loaded[0].splits, strict=True))
    for ds in loaded[1:]:
        assert sorted((img.tobytes(), int(y), str(s)) for img, y, s in
                      zip(ds.images, ds.labels, ds.splits, strict=True)) == csv_faces
    assert _by_name(loaded[1]) == _by_name(loaded[2])
    assert all(n.startswith(("train/", "test/")) for n in loaded[2].names)


def test_kaggle_name_prefixes_decide_split(tmp_path, faces):
    images, labels, splits = faces
    ds = load_dataset(write_zip(tmp_path / "k.zip", kaggle_entries(images, labels, splits)))
    for name, split in zip(ds.names, ds.splits, strict=True):
        base = name.rsplit("/", 1)[1]
        assert USAGE[split] == base.split("_")[0]
    # test/ holds PublicTest_* (val) and PrivateTest_* (test) files, as in the full download
    in_test = {s for n, s in zip(ds.names, ds.splits, strict=True) if n.startswith("test/")}
    assert in_test == {"val", "test"}


def test_split_folders_without_prefixes(tmp_path):
    images, labels = make_faces(2)
    entries = {}
    for i, (img, y) in enumerate(zip(images, labels, strict=True)):
        top = ("train", "Validation", "test", "val")[i % 4]
        entries[f"{top}/{CLASSES[y]}/img{i}.png"] = _png(img)
    ds = load_dataset(write_folder(tmp_path / "d", entries))
    got = {str(n): str(s) for n, s in zip(ds.names, ds.splits, strict=True)}
    for name, split in got.items():
        top = name.split("/")[0].lower()
        assert split == {"train": "train", "validation": "val", "val": "val", "test": "test"}[top]


def test_wrapped_zip_and_junk_are_tolerated(tmp_path, faces):
    images, labels, splits = faces
    entries = {f"fer2013/{k}": v for k, v in kaggle_entries(images, labels, splits).items()}
    entries["__MACOSX/fer2013/train/._x.png"] = b"junk"
    entries["fer2013/.DS_Store"] = b"junk"
    entries["fer2013/train/happy/Thumbs.db"] = b"junk"
    zpath = tmp_path / "wrapped.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:  # deflated members too
        zf.writestr("fer2013/", b"")
        for k, v in entries.items():
            zf.writestr(k, v)
    ds = load_dataset(zpath)
    assert len(ds) == len(labels) and ds.skipped == []
    assert all(n.startswith("fer2013/") for n in ds.names)
    flat = load_dataset(write_zip(tmp_path / "flat.zip", kaggle_entries(images, labels, splits)))
    assert sorted(n.removeprefix("fer2013/") for n in ds.names) == sorted(flat.names.tolist())


def test_single_split_class_folder_synonyms_case_and_subset(tmp_path):
    images, labels = make_faces(2, classes=(0, 3, 5, 6))
    folder_names = {0: "Anger", 3: "HAPPINESS", 5: "surprised", 6: "4_neutral"}
    entries = {f"{folder_names[y]}/face{i}.png": _png(img)
               for i, (img, y) in enumerate(zip(images, labels, strict=True))}
    for source in (write_folder(tmp_path / "mine", entries),
                   write_zip(tmp_path / "mine.zip", entries),
                   write_zip(tmp_path / "wrapped.zip", {f"my faces/{k}": v
                                                        for k, v in entries.items()})):
        ds = load_dataset(source)
        assert ds.split_names == ["train"]
        assert ds.class_counts().tolist() == [2, 0, 0, 2, 0, 2, 2]
        for name, y in zip(ds.names, ds.labels, strict=True):
            assert name.split("/")[-2] == folder_names[int(y)]


def test_nested_folders_inside_a_class_folder(tmp_path):
    images, labels = make_faces(1, classes=(1, 2))
    entries = {"disgust/session1/a.png": _png(images[0]), "fear/b/c/d.png": _png(images[1])}
    ds = load_dataset(write_folder(tmp_path / "nested", entries))
    assert ds.labels.tolist() == [1, 2]


def test_any_image_mode_size_and_format_becomes_48x48_gray(tmp_path):
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (96, 96), dtype=np.uint8)
    rgb = np.stack([gray, gray, gray], -1)
    wide = np.zeros((60, 120), np.uint8)
    wide[:, 30:90] = 200  # the centre square is uniform: the centre crop keeps only it
    g16 = gray.astype(np.uint16) * 257
    portrait = np.zeros((48, 48), np.uint8)
    portrait[:, :24] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    entries = {
        "happy/rgb.png": _png(rgb),
        "happy/rgba.png": _png(np.dstack([rgb, np.full_like(gray, 128)])),
        "happy/palette.png": (lambda b: b.getvalue())(_save_palette(gray)),
        "happy/gray16.png": _png(g16),
        "happy/wide.jpg": _png(wide, format="JPEG", quality=100),
        "happy/small.bmp": _png(gray[:24, :24], format="BMP"),
        "happy/anim.gif": _png(gray, format="GIF"),
        "happy/photo.webp": _png(rgb, format="WEBP", lossless=True),
        "happy/scan.tif": _png(gray, format="TIFF"),
        "sad/rotated.jpg": _png(portrait, format="JPEG", quality=100, exif=exif.tobytes()),
    }
    ds = load_dataset(write_folder(tmp_path / "modes", entries))
    assert ds.images.shape == (10, 48, 48) and ds.skipped == []
    faces = dict(zip(ds.names.tolist(), ds.images, strict=True))
    reference = faces["happy/scan.tif"].astype(int)
    for name in ("happy/rgb.png", "happy/rgba.png", "happy/gray16.png", "happy/photo.webp",
                 "happy/anim.gif"):
        assert np.abs(faces[name].astype(int) - reference).max() <= 1, name
    assert np.abs(faces["happy/palette.png"].astype(int) - reference).mean() < 12
    assert np.abs(faces["happy/wide.jpg"][:, 4:-4].astype(int) - 200).max() <= 3
    rotated = faces["sad/rotated.jpg"].astype(int)
    assert rotated[:20].mean() > 200 and rotated[-20:].mean() < 50  # white half now on top


def _save_palette(gray: np.ndarray) -> io.BytesIO:
    buf = io.BytesIO()
    Image.fromarray(gray).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(buf, "PNG")
    return buf


def test_progress_is_reported_while_decoding_only(tmp_path, faces):
    images, labels, splits = faces
    path = write_zip(tmp_path / "p.zip", kaggle_entries(images, labels, splits))
    calls = []
    load_dataset(path, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (len(labels), len(labels))
    calls.clear()
    load_dataset(path, progress=lambda done, total: calls.append((done, total)))
    assert calls == []  # cache hit: nothing to decode


def test_parallel_and_serial_decoding_agree(tmp_path, monkeypatch):
    images, labels = make_faces(200)  # 1400 images: several chunks
    entries = kaggle_entries(images, labels, ["train"] * len(labels), fmt="JPEG")
    path = write_zip(tmp_path / "many.zip", entries)
    monkeypatch.setenv("FERKIT_DECODE_WORKERS", "1")
    serial = load_dataset(path, use_cache=False)
    monkeypatch.setenv("FERKIT_DECODE_WORKERS", "4")
    parallel = load_dataset(path, use_cache=False)
    np.testing.assert_array_equal(serial.images, parallel.images)
    assert serial.names.tolist() == parallel.names.tolist()


def test_package_level_load_dataset_has_the_same_signature(tmp_path):
    import ferkit

    ds = ferkit.load_dataset(make_csv_dataset(tmp_path, n_per_class=2), skip_bad=False,
                             use_cache=False, progress=None)
    assert len(ds) == 14


def test_symlink_loops_in_a_folder_do_not_hang(tmp_path):
    images, labels = make_faces(1, classes=(3,))
    root = write_folder(tmp_path / "loop", {"happy/a.png": _png(images[0])})
    (root / "happy" / "again").symlink_to(root)  # happy/again -> the root itself
    ds = load_dataset(root)
    assert ds.names.tolist() == ["happy/a.png"]


def test_both_readers_hand_back_named_decoded_faces(tmp_path, faces):
    """read_csv and read_images return one named type, DecodedFaces, that load_dataset turns
    into the FaceDataset."""
    from ferkit.data.csvio import read_csv
    from ferkit.data.dataset import DecodedFaces
    from ferkit.data.imagefolders import ZipSource, read_images

    images, labels, splits = faces
    csv_path = write_csv(tmp_path / "fer2013.csv", images, labels, splits)
    zip_path = write_zip(tmp_path / "faces.zip", kaggle_entries(images, labels, splits))
    source = ZipSource(zip_path, str(zip_path))
    try:
        read = [read_csv(csv_path, str(csv_path), skip_bad=False),
                read_images(source, skip_bad=False)]
    finally:
        source.close()
    for got in read:
        assert isinstance(got, DecodedFaces)
        assert got.images.shape == (len(labels), 48, 48) and got.images.dtype == np.uint8
        assert len(got.labels) == len(got.splits) == len(got.names) == len(labels)
        assert got.skipped == [] and got.warnings == []
        ds = got.to_dataset("src")
        assert isinstance(ds, FaceDataset) and ds.source == "src" and len(ds) == len(labels)
