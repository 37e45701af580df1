"""Serving internals without a server: the micro-batcher and upload decoding/limits."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageOps

from ferkit.serving.batching import MicroBatcher
from ferkit.serving.limits import (
    ApiError,
    DecodeGate,
    Limits,
    check_part_type,
    decode_face,
    decode_image,
    face_from_json,
)


def fake_model(calls: list[int], delay: float = 0.02):
    """Each face's 'probabilities' are its mean pixel, so callers can check they got their rows."""

    def fn(faces: np.ndarray) -> np.ndarray:
        calls.append(len(faces))
        time.sleep(delay)
        return np.repeat(faces.reshape(len(faces), -1).mean(axis=1, keepdims=True), 7, axis=1)

    return fn


def faces_of(value: int, n: int = 1) -> np.ndarray:
    return np.full((n, 48, 48), value, np.uint8)


def run_concurrently(batcher: MicroBatcher, n: int) -> list[np.ndarray]:
    barrier = threading.Barrier(n)

    def call(i: int) -> np.ndarray:
        barrier.wait()
        return batcher.classify(faces_of(i, n=1 + i % 3))

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(call, range(n)))


def test_batcher_merges_concurrent_calls_and_returns_each_its_rows():
    calls: list[int] = []
    batcher = MicroBatcher(fake_model(calls), max_batch=64, max_wait_ms=20)
    try:
        results = run_concurrently(batcher, 12)
    finally:
        batcher.close()
    for i, probs in enumerate(results):
        assert probs.shape == (1 + i % 3, 7)
        assert np.all(probs == i)
    stats = batcher.stats.as_dict()
    assert stats["calls"] == 12 and stats["faces"] == sum(1 + i % 3 for i in range(12))
    assert stats["batches"] == len(calls) < 12
    assert stats["max_batch_calls"] > 1 and stats["multi_call_batches"] >= 1


def test_batcher_respects_max_batch():
    calls: list[int] = []
    batcher = MicroBatcher(fake_model(calls), max_batch=4, max_wait_ms=50)
    try:
        run_concurrently(batcher, 10)
    finally:
        batcher.close()
    # A batch stops growing once it holds max_batch faces (a single call may bring up to 3).
    assert max(calls) <= 4 + 2
    assert sum(calls) == sum(1 + i % 3 for i in range(10))


def test_batching_disabled_runs_each_call_alone():
    calls: list[int] = []
    batcher = MicroBatcher(fake_model(calls, delay=0.005), enabled=False)
    results = run_concurrently(batcher, 8)
    assert all(np.all(r == i) for i, r in enumerate(results))
    stats = batcher.stats.as_dict()
    assert stats["batches"] == stats["calls"] == 8
    assert stats["max_batch_calls"] == 1 and stats["multi_call_batches"] == 0


def test_batcher_errors_reach_every_caller_and_it_keeps_working():
    state = {"fail": True}

    def flaky(faces: np.ndarray) -> np.ndarray:
        if state["fail"]:
            raise RuntimeError("model exploded")
        return np.zeros((len(faces), 7), np.float32)

    batcher = MicroBatcher(flaky, max_wait_ms=1)
    try:
        with pytest.raises(RuntimeError, match="exploded"):
            batcher.classify(faces_of(1))
        state["fail"] = False
        assert batcher.classify(faces_of(1, 2)).shape == (2, 7)
        assert batcher.classify(np.zeros((0, 48, 48), np.uint8)).shape[0] == 0
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="shutting down"):
        batcher.classify(faces_of(1))


# -- decoding and limits ------------------------------------------------------------------------

def jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def gradient(w: int, h: int) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    return Image.fromarray(np.stack([x, x[::-1], np.full_like(x, 80)], -1).astype(np.uint8))


def test_big_jpeg_is_decoded_downscaled():
    limits = Limits(work_pixels=300_000)
    img = decode_image(jpeg(gradient(2400, 1600)), limits)
    assert img.original_size == (2400, 1600) and img.format == "JPEG"
    h, w = img.array.shape[:2]
    assert w * h <= 300_000 and abs(w / h - 1.5) < 0.01
    assert img.scale == pytest.approx(2400 / w)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def test_big_png_is_shrunk_before_any_full_size_copy(monkeypatch):
    """PNG has no reduced decode: after the one full-size decode, only small copies are made
    (no full-size rotation, conversion to RGB or resize input: each costs time and memory)."""
    made: list[tuple[str, tuple[int, int]]] = []
    new = Image.Image._new

    def spy(self, im):
        out = new(self, im)
        made.append((out.mode, out.size))
        return out

    data = png(gradient(3000, 2000).convert("L"))  # 6 MP of gray, 20x the working size
    monkeypatch.setattr(Image.Image, "_new", spy)
    img = decode_image(data, Limits(work_pixels=300_000))
    assert img.original_size == (3000, 2000) and img.format == "PNG"
    h, w = img.array.shape[:2]
    assert w * h <= 300_000 and abs(w / h - 1.5) < 0.01
    assert made and max(a * b for _, (a, b) in made) <= 4 * 300_000, made


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16"])
@pytest.mark.parametrize("orientation", [1, 6, 3])
def test_big_images_shrunk_keep_their_picture_and_orientation(mode, orientation):
    original = gradient(1800, 1200)
    original.paste((250, 250, 250), (100, 100, 400, 300))  # a mark near one corner
    if mode == "I;16":
        stored = Image.fromarray(np.asarray(original.convert("L"), np.uint16) * 257)
    else:
        stored = original.convert(mode)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, format="PNG", exif=exif.tobytes())
    img = decode_image(buf.getvalue(), Limits(work_pixels=120_000))
    # What decoding at full size gives (as the server did before it shrank big images early).
    reference = ImageOps.exif_transpose(Image.open(buf))
    if mode == "I;16":  # 16 bits scale to 8 (Pillow's own convert("RGB") clips them to white)
        reference = Image.fromarray((np.asarray(reference, float) / 257 + 0.5).astype(np.uint8))
    reference = reference.convert("RGB")
    assert img.original_size == reference.size
    h, w = img.array.shape[:2]
    assert w * h <= 120_000 and img.scale == pytest.approx(reference.width / w)
    expected = np.asarray(reference.resize((w, h), Image.Resampling.BOX), float)
    assert np.abs(img.array.astype(float) - expected).mean() < 6, (mode, orientation)


def test_big_rotated_jpeg_is_drafted_and_upright():
    exif = Image.Exif()
    exif[0x0112] = 8
    img = decode_image(jpeg(gradient(3200, 2400), exif=exif.tobytes(), quality=90),
                       Limits(work_pixels=200_000))
    assert img.original_size == (2400, 3200)
    h, w = img.array.shape[:2]
    assert w * h <= 200_000 and h > w
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(
        jpeg(gradient(3200, 2400), exif=exif.tobytes(), quality=90)))).resize((w, h))
    assert np.abs(img.array.astype(float) - np.asarray(expected, float)).mean() < 6


def test_decode_gate_bounds_concurrent_decodes():
    gate = DecodeGate(2)
    pool = ThreadPoolExecutor(6)

    def work(i: int) -> int:
        time.sleep(0.02)
        return i

    async def one(i: int) -> int:
        async with gate:
            return await asyncio.get_running_loop().run_in_executor(pool, gate.counted(work), i)

    async def main() -> list[int]:
        return await asyncio.gather(*(one(i) for i in range(8)))

    try:
        assert asyncio.run(main()) == list(range(8))
    finally:
        pool.shutdown()
    assert gate.stats() == {"slots": 2, "active": 0, "waiting": 0, "max_active": 2,
                            "decodes": 8}


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6
    img = decode_image(jpeg(gradient(300, 200), exif=exif.tobytes()), Limits())
    assert img.original_size == (200, 300) and img.array.shape == (300, 200, 3)


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(ApiError) as err:
        decode_image(jpeg(gradient(400, 300)), Limits(max_pixels=100_000))
    assert err.value.status == 413 and err.value.code == "too_many_pixels"


@pytest.mark.parametrize("data", [b"", b"GIF89a garbage", b"\x89PNG\r\n\x1a\nbroken", b"%PDF-1.4"])
def test_undecodable_bytes_are_422(data):
    with pytest.raises(ApiError) as err:
        decode_image(data, Limits())
    assert err.value.status == 422


def test_part_types():
    for ok in ("image/jpeg", "image/png; q=1", "application/octet-stream", None, ""):
        check_part_type(ok)
    for bad in ("text/plain", "application/pdf", "video/mp4"):
        with pytest.raises(ApiError) as err:
            check_part_type(bad)
        assert err.value.status == 415


def test_faces_any_size_become_48x48_gray():
    face = decode_face(jpeg(gradient(130, 130)), Limits(), "faces[0]")
    assert face.shape == (48, 48) and face.dtype == np.uint8
    as_b64 = base64.b64encode(jpeg(gradient(64, 64))).decode()
    assert face_from_json(as_b64, Limits(), "f").shape == (48, 48)
    assert face_from_json("data:image/jpeg;base64," + as_b64, Limits(), "f").shape == (48, 48)
    arr = np.arange(48 * 48).reshape(48, 48) % 256
    np.testing.assert_array_equal(face_from_json(arr.tolist(), Limits(), "f"), arr)
    for bad in ([[1.5] * 48] * 48, [[True] * 48] * 48, [[0] * 48] * 3, 7, None):
        with pytest.raises(ApiError):
            face_from_json(bad, Limits(), "f")


def test_engine_batches_the_faces_predict_finds_through_the_recognizers_hook(tmp_path):
    """The Recognizer takes the batcher as its `classify_with`: nothing replaces its methods,
    and a photo's faces reach the model through the batcher (its calls counter)."""
    from test_serving import PHOTO, make_checkpoint

    from ferkit.serving.engine import Engine

    engine = Engine(make_checkpoint(tmp_path / "tiny.pt"), device="cpu", max_wait_ms=1.0)
    try:
        rec = engine.recognizer
        assert "classify" not in vars(rec) and rec.classify_with == engine._batched
        calls = engine.batcher.stats.as_dict()["calls"]
        faces = engine.predict(decode_image(PHOTO.read_bytes(), Limits()))
        assert len(faces) == 1
        assert engine.batcher.stats.as_dict()["calls"] == calls + 1
    finally:
        engine.close()
