"""Fuzzing the loaders with Hypothesis: whatever the CSV rows, zip member names or image bytes,
a load either succeeds or raises DataError naming the file and line/entry, never another
exception; and nothing is dropped unreported (loaded + skipped == entries).

Bounded for CI (a few seconds, deterministic examples). For a longer random run:
FERKIT_FUZZ_EXAMPLES=2000 pytest tests/test_data_fuzz.py
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from synth import jpeg_with_extraneous_bytes, make_faces

from ferkit.classes import CLASSES
from ferkit.data import FaceDataset, load_dataset
from ferkit.data.images import decode_face
from ferkit.errors import DataError
from ferkit.images import ImageDecodeError

_EXTRA = int(os.environ.get("FERKIT_FUZZ_EXAMPLES", "0"))


def fuzz_settings(examples: int):
    return settings(max_examples=_EXTRA or examples, deadline=None, database=None,
                    derandomize=not _EXTRA,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _outcome(path: Path, skip_bad: bool):
    """The dataset, or the DataError; any other exception fails the test as it is."""
    try:
        return load_dataset(path, skip_bad=skip_bad, use_cache=False)
    except DataError as exc:
        message = str(exc)
        assert "\n" not in message
        assert message.startswith(str(path)), message
        return exc


# --- CSV rows ----------------------------------------------------------------------------------

_FIELD_TEXT = st.text(alphabet=st.sampled_from('0123456789 ,"\r\t-.abcXYZé\\\x00'), max_size=6)
_EMOTIONS = st.one_of(st.sampled_from(["0", "3", "6", "7", "-1", "happy", "SAD", " 2 ", '"4"',
                                       "", "joyful", "3.0", "1e0"]), _FIELD_TEXT)
_USAGES = st.one_of(st.sampled_from(["Training", "PublicTest", "PrivateTest", "train", "test",
                                     " Training ", '"PublicTest"', "", "Holdout"]), _FIELD_TEXT)
_MUTATIONS = ("none", "drop", "extra", "word", "big", "negative", "float", "spaces", "empty",
              "text")


@st.composite
def csv_rows(draw):
    """A compact recipe for one data line (Hypothesis prints recipes, not 2304 pixels)."""
    mutation = draw(st.sampled_from(_MUTATIONS))
    token = draw(_FIELD_TEXT.filter(lambda t: t.strip() and not t.strip().isdigit())
                 if mutation in ("word", "text") else st.just(""))
    if mutation == "big":
        token = str(draw(st.integers(256, 10**6)))
    elif mutation == "negative":
        token = str(-draw(st.integers(1, 255)))
    shape = draw(st.sampled_from(["ok", "ok", "ok", "quoted", "missing", "extra"]))
    return {"seed": draw(st.integers(0, 2**32 - 1)), "mutation": mutation,
            "at": draw(st.integers(0, 2303)), "token": token, "emotion": draw(_EMOTIONS),
            "usage": draw(_USAGES), "shape": shape, "missing": draw(st.integers(0, 2)),
            "extra": draw(_FIELD_TEXT)}


def build_row(r: dict) -> tuple[str, bool, np.ndarray]:
    """(line, good by construction, the pixels a good line must load as)."""
    values = np.random.default_rng(r["seed"]).integers(0, 256, 2304)
    tokens = [str(v) for v in values.tolist()]
    mutation, k = r["mutation"], r["at"]
    if mutation == "drop":
        del tokens[k]
    elif mutation == "extra":
        tokens.insert(k, "7")
    elif mutation in ("word", "big", "negative"):
        tokens[k] = r["token"]
    elif mutation == "float":
        tokens[k] += ".5"
    pixels = " ".join(tokens)
    if mutation == "spaces":
        pixels = "  " + pixels.replace(" ", "   ", 3) + " "  # odd but valid spacing
    elif mutation == "empty":
        pixels = ""
    elif mutation == "text":
        pixels = r["token"]
    fields = [r["emotion"], pixels, r["usage"]]
    if r["shape"] == "quoted":
        fields[1] = f'"{pixels}"'
    elif r["shape"] == "missing":
        del fields[r["missing"]]
    elif r["shape"] == "extra":
        fields.append(r["extra"])
    good = (mutation in ("none", "spaces") and r["shape"] in ("ok", "quoted")
            and r["emotion"] in ("0", "3", "6", "happy", "SAD", " 2 ", '"4"')
            and r["usage"] in ("Training", "PublicTest", "PrivateTest", "train", "test",
                               " Training ", '"PublicTest"'))
    return ",".join(fields), good, values


@fuzz_settings(80)
@given(rows=st.lists(csv_rows(), min_size=1, max_size=5),
       header=st.sampled_from(["emotion,pixels,Usage", "Usage,emotion,pixels",
                               "emotion,pixels", "emotion,pixels,Usage,extra", "pixels,Usage",
                               "\ufeffemotion,pixels,Usage", ""]),
       newline=st.sampled_from(["\n", "\r\n"]), blank_lines=st.booleans())
def test_fuzz_csv(rows, header, newline, blank_lines):
    rows = [build_row(r) for r in rows]
    lines = [header] + [line for line, _, _ in rows] + ([""] if blank_lines else [])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fer2013.csv"
        path.write_bytes(newline.join(lines).encode("utf-8"))
        data_lines = path.read_bytes().split(b"\n")[1:]
        entries = [i + 2 for i, raw in enumerate(data_lines) if raw.strip()]
        strict, lenient = _outcome(path, False), _outcome(path, True)
    for result in (strict, lenient):
        if isinstance(result, DataError):
            assert re.search(r"fer2013\.csv( line \d+)?: ", str(result)), str(result)
    if isinstance(strict, FaceDataset):
        assert strict.skipped == [] and len(strict) == len(entries)
        assert isinstance(lenient, FaceDataset) and len(lenient) == len(strict)
    if isinstance(lenient, FaceDataset):
        loaded, skipped = lenient.names.tolist(), [s.entry for s in lenient.skipped]
        assert len(loaded) + len(skipped) == len(entries)  # nothing dropped unreported
        assert sorted(loaded + skipped) == sorted(f"fer2013.csv line {n}" for n in entries)
        if header in ("emotion,pixels,Usage", "\ufeffemotion,pixels,Usage"):
            faces = dict(zip(loaded, lenient.images, strict=True))
            for k, (_, good, values) in enumerate(rows):
                if good:  # a well-formed row is loaded, with its own pixels
                    face = faces[f"fer2013.csv line {k + 2}"]
                    assert np.array_equal(face.ravel(), values)
    else:
        message = str(lenient)
        assert re.search(r"line 1: |: empty file|: no data rows|: no usable rows; all "
                         rf"{len(entries)} were bad", message), message


# --- zip member names and image bytes ----------------------------------------------------------

def _encode(img: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return buf.getvalue()


_FACE = make_faces(1)[0][3]
GOOD_IMAGES = {fmt: _encode(_FACE, fmt) for fmt in ("PNG", "JPEG", "BMP", "GIF", "WEBP")}
GOOD_IMAGES["odd JPEG"] = jpeg_with_extraneous_bytes(_FACE)
_PARTS = ["train", "test", "val", "Training", "happy", "sad", "neutral", "contempt", "..", ".",
          "", "__MACOSX", "._x.png", ".DS_Store", "a.png", "b.jpg", "c.txt", "d.csv", "fer2013"]


@st.composite
def image_bytes(draw):
    """A recipe: a good image of some format, or one truncated, bit-flipped, random or empty."""
    kind = draw(st.sampled_from(["good", "good", "truncated", "flipped", "random", "empty"]))
    fmt = draw(st.sampled_from(sorted(GOOD_IMAGES)))
    size = len(GOOD_IMAGES[fmt])
    if kind == "truncated":
        return kind, fmt, draw(st.integers(0, size - 1))
    if kind == "flipped":
        return kind, fmt, draw(st.integers(0, size - 1)), draw(st.integers(1, 255))
    if kind == "random":
        return kind, draw(st.binary(max_size=64))
    return kind, fmt


def build_image(recipe: tuple) -> tuple[bytes, str | None]:
    """(bytes, the format's name if the bytes must decode, else None)."""
    kind = recipe[0]
    if kind == "good":
        return GOOD_IMAGES[recipe[1]], recipe[1]
    if kind == "truncated":
        return GOOD_IMAGES[recipe[1]][:recipe[2]], None
    if kind == "flipped":
        data, at, x = GOOD_IMAGES[recipe[1]], recipe[2], recipe[3]
        return data[:at] + bytes([data[at] ^ x]) + data[at + 1:], None
    if kind == "random":
        return recipe[1], None
    return b"", None


@st.composite
def member_names(draw):
    """A well-formed unique-looking Kaggle path, or anything built from awkward parts."""
    if draw(st.booleans()):
        cls = draw(st.sampled_from(CLASSES))
        return f"train/{cls}/Training_{draw(st.integers(0, 9))}.png", True
    parts = draw(st.lists(st.one_of(st.sampled_from(_PARTS),
                                    st.text(st.sampled_from("ab.\\ _é"), max_size=3)),
                          min_size=1, max_size=5))
    sep = draw(st.sampled_from(["/", "\\"]))
    lead = draw(st.sampled_from(["", "", "/", "./"]))
    return lead + sep.join(parts), False


def _oracle_path(name: str) -> str | None:
    """What the name means: a relative path, 'dir', 'junk', or None (outside the archive)."""
    s = name.replace("\\", "/")
    if s.endswith("/"):
        return "dir"
    if s.startswith("/") or re.match(r"[A-Za-z]:(/|$)", s):
        return None
    stack: list[str] = []
    for part in s.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return None
            stack.pop()
        else:
            stack.append(part)
    if not stack:
        return None
    if (any(p.lower() == "__macosx" for p in stack[:-1])
            or stack[-1].lower() in (".ds_store", "thumbs.db", "desktop.ini")
            or stack[-1].startswith("._")):
        return "junk"
    return "/".join(stack)


@fuzz_settings(100)
@given(members=st.lists(st.tuples(member_names(), image_bytes()), min_size=1, max_size=8),
       deflate=st.booleans())
def test_fuzz_zip(members, deflate):
    members = [(name, build_image(recipe)) for name, recipe in members]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "faces.zip"
        method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
        with warnings.catch_warnings(), zipfile.ZipFile(path, "w", method) as zf:
            warnings.simplefilter("ignore", UserWarning)  # duplicate names are the point
            for (name, _), (data, _) in members:
                zf.writestr(zipfile.ZipInfo(name), data)
        written = [i.filename for i in zipfile.ZipFile(path).infolist()]  # as zipfile stored them
        strict, lenient = _outcome(path, False), _outcome(path, True)
    meanings = [_oracle_path(n) for n in written]
    entries = [m for m in meanings if m not in ("dir", "junk")]
    if isinstance(strict, FaceDataset):
        assert strict.skipped == [] and len(strict) == len(entries)
    elif not re.search(r"faces\.zip: (no images found|no usable images|holds )", str(strict)):
        entry = str(strict).split(": ")[1]
        assert entry in written or entry in meanings, str(strict)  # names the bad entry
    if isinstance(lenient, FaceDataset):
        loaded, skipped = lenient.names.tolist(), [s.entry for s in lenient.skipped]
        assert len(loaded) + len(skipped) == len(entries), (loaded, skipped, written)
        assert set(loaded) <= set(meanings)
        assert all(s in written or s in meanings for s in skipped)
        for ((_, well_formed), (_, fmt)), meaning in zip(members, meanings, strict=True):
            if well_formed and fmt is not None and meanings.count(meaning) == 1:
                assert meaning in loaded  # a good image at a good, unique path is loaded
        assert len(lenient.warnings) <= len(loaded)
    else:
        message = str(lenient)
        assert re.search(rf"faces\.zip: (no images found|no usable images; all {len(entries)} "
                         r"entries were bad|holds \S+ but no images)", message), message
        assert "no images found" not in message or not entries


@fuzz_settings(150)
@given(data=image_bytes())
def test_fuzz_decode_face(data):
    raw, fmt = build_image(data)
    try:
        face = decode_face(raw)
    except ImageDecodeError as exc:
        assert fmt is None, f"a good {fmt} image failed: {exc}"
        assert str(exc)
        return
    assert face.shape == (48, 48) and face.dtype == np.uint8
