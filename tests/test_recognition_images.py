"""Image reading: every bad input is an InputError naming the file; odd formats are converted."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from recognition_support import grace_hopper_path, shared_checkpoint

from ferkit.errors import InputError
from ferkit.recognition import images
from ferkit.recognition.images import from_array, load_image, read_image


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (8-bit gray) with no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def _grace() -> Image.Image:
    return Image.open(grace_hopper_path()).convert("RGB")


# -- bad inputs -------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="nope.jpg: no such file"):
        read_image(tmp_path / "nope.jpg")


def test_directory(tmp_path):
    with pytest.raises(InputError, match="directory"):
        read_image(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.jpg: cannot decode image \(empty file\)"):
        read_image(path)


def test_non_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels\n" * 20)
    with pytest.raises(InputError, match=r"notes\.jpg: cannot decode image \(not a readable image"):
        read_image(path)


def test_truncated_jpeg_is_unreadable(tmp_path):
    data = grace_hopper_path().read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match=r"cut\.jpg: cannot decode image \(corrupt or truncated"):
        read_image(path)


def test_corrupt_png_is_unreadable(tmp_path):
    buf = io.BytesIO()
    _grace().save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[200:4000] = bytes(3800)  # wreck the compressed pixel data
    path = tmp_path / "broken.png"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"broken\.png"):
        read_image(path)


def test_zero_size_image(tmp_path):
    path = tmp_path / "zero.png"
    path.write_bytes(_png_header(0, 0))
    with pytest.raises(InputError, match=r"zero\.png"):
        read_image(path)
    with pytest.raises(InputError, match="zero size"):
        from_array(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(InputError, match="zero size"):
        load_image(np.zeros((10, 0), np.uint8))


def test_huge_image_refused_before_decoding(tmp_path):
    """A 40000x40000 PNG header (1.6 gigapixels, a few bytes on disk): clear refusal, no OOM."""
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(40000, 40000))
    with pytest.raises(InputError,
                       match=r"bomb\.png: image too large: 40000x40000 = 1,600,000,000 pixels"):
        read_image(path)


def test_huge_jpeg_is_read_downscaled(tmp_path, monkeypatch):
    """Above the working size a JPEG is decoded at reduced scale (draft) and boxes map back."""
    big = _grace().resize((2048, 2400))
    path = tmp_path / "big.jpg"
    big.save(path, quality=85)
    loaded = read_image(path, max_side=600)
    assert max(loaded.array.shape[:2]) <= 600
    assert loaded.original_size == (2048, 2400)
    assert loaded.scale == pytest.approx(2048 / loaded.width)
    # Over ferkit's pixel limit (lowered here), a PNG is refused with the limit in the message.
    monkeypatch.setattr(images, "MAX_PIXELS", 1_000_000)
    png = tmp_path / "big.png"
    big.save(png)
    with pytest.raises(InputError, match="limit of 1,000,000 pixels; downscale it first"):
        read_image(png)


def test_pil_bomb_limit_is_restored(tmp_path):
    path = tmp_path / "x.png"
    _grace().save(path)
    before = Image.MAX_IMAGE_PIXELS
    read_image(path)
    assert before == Image.MAX_IMAGE_PIXELS


def test_bad_array_shapes():
    with pytest.raises(InputError, match="expected"):
        from_array(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(InputError, match="expected"):
        from_array(np.zeros((2, 10, 10, 3), np.uint8))
    with pytest.raises(TypeError):
        load_image(12345)


# -- conversions ------------------------------------------------------------------------------

def test_grayscale_file(tmp_path):
    path = tmp_path / "gray.png"
    _grace().convert("L").save(path)
    arr = read_image(path).array
    assert arr.shape == (600, 512, 3) and arr.dtype == np.uint8
    assert (arr[..., 0] == arr[..., 1]).all()


def test_rgba_keeps_its_colour_channels(tmp_path):
    """Alpha is dropped, as for dataset faces and uploads (one rule, in ferkit.images)."""
    rgba = _grace().convert("RGBA")
    alpha = np.full((600, 512), 255, np.uint8)
    alpha[:, :50] = 0  # transparent strip
    rgba.putalpha(Image.fromarray(alpha))
    path = tmp_path / "rgba.png"
    rgba.save(path)
    arr = read_image(path).array
    assert arr.shape == (600, 512, 3)
    assert np.array_equal(arr, np.asarray(_grace()))
    # RGBA arrays too.
    assert np.array_equal(from_array(np.asarray(rgba)).array, np.asarray(_grace()))


def test_palette_with_transparency(tmp_path):
    pal = _grace().convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    path = tmp_path / "pal.gif"
    pal.save(path, transparency=0)
    arr = read_image(path).array
    assert arr.shape == (600, 512, 3) and arr.dtype == np.uint8


def test_16_bit(tmp_path):
    gray16 = (np.asarray(_grace().convert("L")).astype(np.uint16) * 257)
    path = tmp_path / "deep.png"
    Image.fromarray(gray16).save(path)
    assert Image.open(path).mode.startswith("I")
    arr = read_image(path).array
    assert arr.dtype == np.uint8 and arr.shape == (600, 512, 3)
    assert np.abs(arr[..., 0].astype(int) - np.asarray(_grace().convert("L"))).max() <= 1
    assert np.abs(from_array(gray16).array[..., 0].astype(int)
                  - np.asarray(_grace().convert("L"))).max() <= 1


def test_float_and_cmyk(tmp_path):
    rgb = np.asarray(_grace())
    assert np.abs(from_array(rgb / 255.0).array.astype(int) - rgb).max() <= 1
    path = tmp_path / "cmyk.jpg"
    _grace().convert("CMYK").save(path)
    arr = read_image(path).array
    assert arr.shape == (600, 512, 3)


def test_multiframe_gif_first_frame(tmp_path):
    frames = [_grace().convert("P"), Image.new("P", (512, 600))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    arr = read_image(path).array
    assert arr.std() > 10  # the photo, not the blank second frame


def _with_exif_orientation(img: Image.Image, orientation: int, path):
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif.tobytes(), quality=92)
    return path


def test_exif_rotation(tmp_path):
    upright = _grace()
    # Stored turned 90 degrees clockwise and tagged orientation 8 (turn it back counter-clockwise
    # to display), as phones do: a reader that ignores EXIF sees the face sideways.
    stored = upright.transpose(Image.Transpose.ROTATE_270)
    path = _with_exif_orientation(stored, 8, tmp_path / "phone.jpg")
    loaded = read_image(path)
    assert loaded.array.shape == (600, 512, 3)  # upright again
    assert loaded.original_size == (512, 600)
    diff = np.abs(loaded.array.astype(int) - np.asarray(upright).astype(int)).mean()
    assert diff < 8


def test_exif_rotation_reaches_the_recognizer(tmp_path, tmp_path_factory):
    from ferkit.recognition.recognizer import Recognizer

    rec = Recognizer(model=str(shared_checkpoint(tmp_path_factory)))
    stored = _grace().transpose(Image.Transpose.ROTATE_90)
    path = _with_exif_orientation(stored, 6, tmp_path / "phone6.jpg")
    faces = rec.predict(path)
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    assert 120 <= x <= 240 and 60 <= y <= 180  # where the face is in the upright portrait
    assert faces[0].landmarks[0][1] == pytest.approx(faces[0].landmarks[1][1], abs=12)  # eyes level
    # And from a PIL image carrying the same EXIF tag.
    faces_pil = rec.predict(Image.open(path))
    assert faces_pil[0].box == faces[0].box
