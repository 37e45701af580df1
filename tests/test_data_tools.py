"""Audit, CSV export and the inspect summary/figures, on crafted synthetic datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from synth import kaggle_entries, make_csv_dataset, make_faces, write_folder, write_zip

from ferkit.classes import CLASSES
from ferkit.data import FaceDataset, load_dataset
from ferkit.data.audit import audit, duplicate_groups
from ferkit.data.csvio import write_csv
from ferkit.data.report import summarize, write_figures


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))


def crafted() -> FaceDataset:
    """Known problems: 2 within-train copies, 1 train/val leak, 1 val/test leak with a label
    conflict, 1 three-way group, 2 blank faces (identical), 1 near-constant face."""
    images, labels = make_faces(4)  # 28 distinct faces, labels 0..6
    images, labels = images.copy(), labels.copy()
    splits = np.array(["train"] * 20 + ["val"] * 4 + ["test"] * 4)
    images[1] = images[0]                       # within train, same label
    images[20], labels[20] = images[2], labels[2]  # train -> val leak
    images[24] = images[21]                     # val/test leak ...
    labels[24] = (labels[21] + 1) % 7           # ... with conflicting labels
    images[22] = images[25] = images[3]         # group spanning train, val, test
    labels[22] = labels[25] = labels[3]
    images[26] = 0
    images[27] = 0                              # two blank faces in test
    images[10] = 100
    images[10, 5, 5] = 104                      # near-constant (range 4) in train
    names = np.array([f"img{i:02d}.png" for i in range(28)])
    return FaceDataset(images, labels, splits, names, "crafted")


def test_duplicate_groups_are_exact():
    ds = crafted()
    groups = [g.tolist() for g in duplicate_groups(ds.images)]
    assert groups == [[0, 1], [2, 20], [3, 22, 25], [21, 24], [26, 27]]
    other = ds.images.copy()
    other[1, 0, 0] ^= 1  # one pixel differs: no longer a duplicate
    assert [0, 1] not in [g.tolist() for g in duplicate_groups(other)]


def test_audit_finds_crafted_problems():
    report = audit(crafted()).to_dict()
    json.dumps(report)  # serialisable
    dup = report["duplicates"]
    assert dup["groups"] == 5 and dup["images"] == 11 and dup["redundant"] == 6
    assert dup["blank_groups"] == 1
    assert dup["within_split"] == {
        "train": {"groups": 1, "images": 2, "redundant": 1},
        "val": {"groups": 0, "images": 0, "redundant": 0},
        "test": {"groups": 1, "images": 2, "redundant": 1},
    }
    across = dup["across_splits"]
    assert across["groups"] == 3 and across["images"] == 7
    assert across["pairs"] == {"train-val": 2, "train-test": 1, "val-test": 2}
    assert across["leaked"] == {"val": 2, "test": 2}
    assert dup["conflicting_labels"] == {"groups": 1, "images": 2, "across_splits": 1}
    (conflict,) = dup["examples"]["conflicting_labels"]
    assert {m["name"] for m in conflict["members"]} == {"img21.png", "img24.png"}
    assert conflict["splits"] == ["val", "test"] and len(conflict["labels"]) == 2
    blank = report["blank"]
    assert blank["count"] == 3 and blank["per_split"] == {"train": 1, "val": 0, "test": 2}
    assert [b["name"] for b in blank["examples"]] == ["img10.png", "img26.png", "img27.png"]
    assert report["images"] == 28 and report["splits"] == {"train": 20, "val": 4, "test": 4}


def test_audit_of_a_clean_dataset_finds_nothing(tmp_path):
    ds = load_dataset(make_csv_dataset(tmp_path, n_per_class=3))
    report = audit(ds).to_dict()
    assert report["duplicates"]["groups"] == 0
    assert report["duplicates"]["across_splits"]["leaked"] == {"val": 0, "test": 0}
    assert report["blank"]["count"] == 0


def test_export_csv_round_trip_from_zip(tmp_path):
    images, labels = make_faces(3)
    splits = [("train", "val", "test")[i % 3] for i in range(len(labels))]
    source = load_dataset(write_zip(tmp_path / "faces.zip", kaggle_entries(images, labels,
                                                                           splits)))
    out = tmp_path / "out" / "fer2013.csv"
    out.parent.mkdir()
    assert write_csv(source, out) == len(source)
    header, first = out.read_text().splitlines()[:2]
    assert header == "emotion,pixels,Usage"
    assert first.split(",")[2] in {"Training", "PublicTest", "PrivateTest"}
    back = load_dataset(out)
    np.testing.assert_array_equal(back.images, source.images)
    np.testing.assert_array_equal(back.labels, source.labels)
    assert back.splits.tolist() == source.splits.tolist()
    assert summarize(back)["splits"] == summarize(source)["splits"]
    assert not list(out.parent.glob(".*.tmp"))


def test_export_csv_extreme_pixel_values(tmp_path):
    images = np.zeros((3, 48, 48), np.uint8)
    images[1] = 255
    images[2] = np.arange(48 * 48).reshape(48, 48) % 256
    ds = FaceDataset(images, np.array([0, 3, 6]), np.array(["train", "val", "test"]),
                     np.array(["a", "b", "c"]))
    out = tmp_path / "x.csv"
    write_csv(ds, out)
    back = load_dataset(out, use_cache=False)
    np.testing.assert_array_equal(back.images, images)
    assert back.labels.tolist() == [0, 3, 6]


def test_summarize_has_every_class_for_every_present_split(tmp_path):
    images, labels = make_faces(2, classes=(3, 4))
    encoded = kaggle_entries(images, labels, ["train"] * 4).values()
    entries = {f"{CLASSES[y]}/f{i}.png": v
               for i, (v, y) in enumerate(zip(encoded, labels, strict=True))}
    ds = load_dataset(write_folder(tmp_path / "two", entries))
    summary = summarize(ds)
    assert summary == {
        "source": str(tmp_path / "two"),
        "splits": {"train": {"count": 4, "per_class": {"angry": 0, "disgust": 0, "fear": 0,
                                                       "happy": 2, "sad": 2, "surprise": 0,
                                                       "neutral": 0}}},
        "skipped": [],
        "warnings": [],
    }


def test_figures_are_written_as_pngs(tmp_path):
    ds = load_dataset(make_csv_dataset(tmp_path, n_per_class=3))
    paths = write_figures(ds, tmp_path / "figs")
    assert [p.name for p in paths] == ["class_distribution.png", "samples_train.png",
                                       "samples_val.png", "samples_test.png"]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 300
