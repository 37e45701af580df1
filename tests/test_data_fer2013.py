"""Integration: the real FER2013 zip (../shared/datasets/fer2013.zip beside the repository, or
$FERKIT_FER2013). Skipped with a reason when it is not there."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from ferkit.classes import CLASSES
from ferkit.data import load_dataset
from ferkit.data.audit import audit
from ferkit.data.csvio import write_csv

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared/datasets/fer2013.zip"
FER2013 = Path(os.environ.get("FERKIT_FER2013") or DEFAULT)

EXPECTED = {
    "train": dict(zip(CLASSES, (3995, 436, 4097, 7215, 4830, 3171, 4965), strict=True)),
    "val": dict(zip(CLASSES, (467, 56, 496, 895, 653, 415, 607), strict=True)),
}

pytestmark = pytest.mark.skipif(
    not FER2013.is_file(),
    reason=f"FER2013 zip not found at {FER2013} (set FERKIT_FER2013 to its path to run this)")


def _counts(ds) -> dict:
    """Per-class counts of train and val (a full Kaggle download also has a test split)."""
    return {s: dict(zip(CLASSES, ds.split(s).class_counts().tolist(), strict=True))
            for s in ("train", "val")}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("fer2013-cache")
    old = os.environ.get("FERKIT_CACHE_DIR")
    os.environ["FERKIT_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("FERKIT_CACHE_DIR", None)
    else:
        os.environ["FERKIT_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def fer(cache_dir):
    t0 = time.perf_counter()
    ds = load_dataset(FER2013)
    print(f"\nFER2013 cold load: {time.perf_counter() - t0:.2f}s")
    return ds


def test_exact_counts(fer):
    assert _counts(fer) == EXPECTED
    assert fer.split_names[:2] == ["train", "val"]
    if "test" not in fer.split_names:
        assert len(fer) == 28709 + 3589
    assert fer.skipped == []
    assert fer.images.shape[1:] == (48, 48) and fer.images.dtype == np.uint8


def test_second_load_comes_from_the_cache_fast(fer):
    t0 = time.perf_counter()
    again = load_dataset(FER2013, progress=lambda d, t: pytest.fail("decoded again"))
    elapsed = time.perf_counter() - t0
    print(f"\nFER2013 warm load: {elapsed:.3f}s")
    assert elapsed < 3.0  # the target is < 1 s; generous for a busy 2-core CI machine
    assert np.array_equal(again.images, fer.images)
    assert np.array_equal(again.labels, fer.labels)
    assert np.array_equal(again.names, fer.names)


def test_audit_finds_the_known_duplicates(fer):
    report = audit(fer).to_dict()
    dup = report["duplicates"]
    assert dup["groups"] > 1000
    assert dup["across_splits"]["groups"] > 100
    assert dup["conflicting_labels"]["groups"] > 10
    assert report["blank"]["count"] >= 10


def test_export_csv_and_reload_gives_the_same_faces(fer, tmp_path):
    out = tmp_path / "fer2013.csv"
    assert write_csv(fer, out) == len(fer)
    back = load_dataset(out, use_cache=False)
    assert _counts(back) == EXPECTED
    np.testing.assert_array_equal(back.images, fer.images)
    np.testing.assert_array_equal(back.labels, fer.labels)
