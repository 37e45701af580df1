"""The one image layer: datasets, `ferkit predict` and `ferkit serve` decode alike."""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from recognition_support import grace_hopper_path

from ferkit.data.images import decode_face
from ferkit.errors import DataError, InputError
from ferkit.images import (
    IMAGE_EXTENSIONS,
    DecodedImage,
    ImageDecodeError,
    PixelLimits,
    decode_image,
    is_image_name,
    to_face,
    to_gray,
)
from ferkit.recognition.batch import InputItem, collect_inputs, output_path
from ferkit.recognition.images import read_image
from ferkit.serving.limits import ApiError, Limits
from ferkit.serving.limits import decode_face as serve_decode_face
from ferkit.serving.limits import decode_image as serve_decode_image


def _portrait() -> Image.Image:
    return Image.open(grace_hopper_path()).convert("RGB")  # 512 x 600, upright


def _phone_jpeg(orientation: int = 6) -> bytes:
    """The portrait stored sideways with the EXIF tag that turns it upright, as phones do."""
    stored = _portrait().transpose(Image.Transpose.ROTATE_90)  # 600 x 512 on disk
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def test_one_extension_set_jpe_everywhere(tmp_path):
    assert ".jpe" in IMAGE_EXTENSIONS and is_image_name("face.JPE")
    shutil.copy(grace_hopper_path(), tmp_path / "x.jpe")
    items = collect_inputs([tmp_path])
    assert [(it.path.name, it.kind) for it in items] == [("x.jpe", "image")]
    assert read_image(tmp_path / "x.jpe").original_size == (512, 600)


def test_exif_rotated_photo_is_decoded_the_same_by_all_three_consumers(tmp_path):
    data = _phone_jpeg(6)
    path = tmp_path / "phone.jpg"
    path.write_bytes(data)
    upright = to_gray(np.asarray(_portrait())).astype(int)

    served = serve_decode_image(data, Limits(work_pixels=10_000_000))
    predicted = read_image(path)
    for decoded in (served, predicted):
        assert decoded.original_size == (512, 600) and decoded.scale == 1.0
        assert decoded.array.shape == (600, 512, 3)
        assert np.abs(to_gray(decoded.array).astype(int) - upright).mean() < 3
    assert np.array_equal(served.array, predicted.array)  # one decode, same pixels

    # Dataset faces and /v1/classify crops: the same grey face.
    face = decode_face(data)
    assert np.array_equal(face, serve_decode_face(data, Limits(), "faces[0]"))
    assert np.abs(face.astype(int) - to_face(upright.astype(np.uint8))).mean() < 3


def test_grey_fast_path_and_pillow_path_agree(monkeypatch):
    """A small upright JPEG goes through OpenCV, a rotated one through Pillow: same pixels."""
    import ferkit.images

    calls: list[int] = []
    opencv = ferkit.images._decode_opencv_gray
    monkeypatch.setattr(ferkit.images, "_decode_opencv_gray",
                        lambda data: calls.append(1) or opencv(data))
    small = _portrait().resize((96, 112))
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=95)
    fast = decode_image(buf.getvalue(), gray=True).array
    assert calls == [1]
    exif = Image.Exif()
    exif[0x0112] = 3
    buf3 = io.BytesIO()
    small.transpose(Image.Transpose.ROTATE_180).save(buf3, format="JPEG", quality=95,
                                                      exif=exif.tobytes())
    slow = decode_image(buf3.getvalue(), gray=True).array
    assert calls == [1]  # rotated: Pillow
    assert fast.shape == slow.shape == (112, 96)
    assert np.abs(fast.astype(int) - slow.astype(int)).mean() < 2


def test_scale_is_original_pixels_per_array_pixel_everywhere():
    big = _portrait().resize((2048, 2400))
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=85)
    decoded = decode_image(buf.getvalue(), PixelLimits(max_side=600))
    assert isinstance(decoded, DecodedImage)
    assert decoded.scale == pytest.approx(2048 / decoded.width) and decoded.scale > 1
    served = serve_decode_image(buf.getvalue(), Limits(work_pixels=300_000))
    assert served.scale == pytest.approx(2048 / served.width) and served.scale > 1


def test_pixel_limit_error_names_the_file_in_every_consumer(tmp_path):
    bomb = _png_header(30000, 20000)
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    with pytest.raises(ImageDecodeError, match="image too large: 30000x20000") as info:
        decode_image(bomb)
    assert info.value.kind == "too_large"
    with pytest.raises(InputError, match=rf"^{path}: image too large: 30000x20000"):
        read_image(path)
    with pytest.raises(ApiError) as api:
        serve_decode_image(bomb, Limits(), "image")
    assert api.value.status == 413 and api.value.detail.startswith("image: image too large")

    from ferkit.data import load_dataset

    folder = tmp_path / "faces" / "train" / "happy"
    folder.mkdir(parents=True)
    (folder / "bomb.png").write_bytes(bomb)
    with pytest.raises(DataError, match=r"train/happy/bomb\.png: image too large: 30000x20000"):
        load_dataset(tmp_path / "faces", use_cache=False)


def test_every_kind_of_bad_file_is_named(tmp_path):
    cases = {"empty.jpg": b"", "text.png": b"not pixels " * 10,
             "cut.jpg": grace_hopper_path().read_bytes()[:2000]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match=rf"{name}: cannot decode image"):
            read_image(tmp_path / name)
    with pytest.raises(InputError, match="missing.jpg: no such file"):
        read_image(tmp_path / "missing.jpg")


def test_annotated_output_names_mirror_folders_and_never_collide(tmp_path):
    used: set[Path] = set()
    root = tmp_path / "photos"
    a = InputItem(root / "sub" / "a.jpe", "image", root=root)
    b = InputItem(root / "sub" / "a.jpe", "image", root=root)
    assert output_path(tmp_path / "o", a, used) == tmp_path / "o/photos/sub/a.annotated.png"
    assert output_path(tmp_path / "o", b, used) == tmp_path / "o/photos/sub/a.annotated-2.png"
    single = InputItem(tmp_path / "x.JPG", "image")
    assert output_path(tmp_path / "o", single, used) == tmp_path / "o/x.annotated.jpg"


def test_jpeg_draft_side_is_libjpeg_s_smallest_reduced_scale_that_covers_the_size(tmp_path):
    from ferkit.images import PixelLimits, jpeg_draft_side

    big = tmp_path / "big.jpg"
    Image.new("RGB", (4031, 3023)).save(big)  # odd sizes: libjpeg rounds its scales up
    assert jpeg_draft_side(big, 640) == 1007  # 1/4; 1/8 (503) is too small
    assert jpeg_draft_side(big, 500) == 503  # 1/8
    assert jpeg_draft_side(big, 1100) == 2015  # 1/2
    assert jpeg_draft_side(big, 2100) is None  # only the full size covers it
    with Image.open(big) as im:  # the size the decoder asks Pillow's draft for
        im.draft("RGB", PixelLimits(max_side=1007).target(*im.size))
        assert im.size == (1008, 756)  # decoded at 1/4, not 1/2
    png = tmp_path / "big.png"
    Image.new("RGB", (4032, 3024)).save(png)
    assert jpeg_draft_side(png, 640) is None  # only JPEGs decode reduced
    assert jpeg_draft_side(tmp_path / "missing.jpg", 640) is None  # the full read reports it
