"""aullava.faces.images: every kind of input file ends as a correct RGB array or as one InputError naming the file."""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from aullava.faces.images import InputError, iter_image_paths, load_image


def _assert_input_error(path: Path, *words: str) -> InputError:
    with pytest.raises(InputError) as info:
        load_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    for word in words:
        assert word in message.lower(), message
    return info.value


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width×height (1-bit grey) without pixel data: tests size limits without RAM."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


# --- bad inputs ----------------------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    _assert_input_error(tmp_path / "nope.jpg", "not found")


def test_directory(tmp_path):
    _assert_input_error(tmp_path, "directory")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    _assert_input_error(path, "not an image")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    _assert_input_error(path, "not an image")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_is_an_error_not_grey(tmp_path, fmt):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    err = _assert_input_error(path)
    assert "truncated" in err.reason or "cannot decode" in err.reason
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_too_many_pixels(tmp_path):
    # 108 MP passes PIL's own bomb check but not ours; 400 MP trips PIL's DecompressionBombError: both InputError.
    _assert_input_error(_png_header_only(tmp_path / "big.png", 12000, 9000), "too large")
    _assert_input_error(_png_header_only(tmp_path / "bomb.png", 20000, 20000), "too large")


def test_input_error_pickles():
    err = pickle.loads(pickle.dumps(InputError("a/b.jpg", "not an image\n(detail)")))
    assert isinstance(err, InputError) and isinstance(err, ValueError)
    assert str(err) == "a/b.jpg: not an image (detail)"
    assert (err.path, err.reason) == ("a/b.jpg", "not an image (detail)")


# --- colour modes --------------------------------------------------------------------------------------------------

def _load(tmp_path, im: Image.Image, name: str, **save) -> np.ndarray:
    path = tmp_path / name
    im.save(path, **save)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[:2] == (im.height, im.width)
    return out


def test_rgb_roundtrip(tmp_path):
    a = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_load(tmp_path, Image.fromarray(a), "rgb.png"), a)


def test_grayscale(tmp_path):
    g = np.arange(200, dtype=np.uint8).reshape(10, 20)
    out = _load(tmp_path, Image.fromarray(g, "L"), "grey.png")
    np.testing.assert_array_equal(out, np.repeat(g[..., None], 3, axis=2))


def test_bilevel(tmp_path):
    im = Image.new("1", (8, 4), 0)
    im.putpixel((3, 1), 1)
    out = _load(tmp_path, im, "bw.png")
    assert out[1, 3].tolist() == [255, 255, 255] and out[0, 0].tolist() == [0, 0, 0]


def test_rgba_composited_on_white(tmp_path):
    a = np.zeros((2, 3, 4), dtype=np.uint8)
    a[0, 0] = (10, 20, 30, 255)  # opaque: unchanged
    a[0, 1] = (0, 0, 0, 0)  # transparent black: white
    a[0, 2] = (200, 0, 0, 0)  # transparent garbage colour: white
    a[1, 0] = (0, 0, 0, 128)  # half-transparent black: mid grey
    out = _load(tmp_path, Image.fromarray(a, "RGBA"), "rgba.png")
    assert out[0, 0].tolist() == [10, 20, 30]
    assert out[0, 1].tolist() == [255, 255, 255] and out[0, 2].tolist() == [255, 255, 255]
    assert np.all(np.abs(out[1, 0].astype(int) - 127) <= 1)


def test_la_composited_on_white(tmp_path):
    a = np.array([[[50, 255], [50, 0]]], dtype=np.uint8)
    out = _load(tmp_path, Image.fromarray(a, "LA"), "la.png")
    assert out[0, 0].tolist() == [50, 50, 50] and out[0, 1].tolist() == [255, 255, 255]


def test_palette(tmp_path):
    im = Image.new("P", (4, 1))
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 - 3) * 3)
    im.putdata([0, 1, 2, 1])
    out = _load(tmp_path, im, "pal.png")
    assert out[0].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 255, 0]]


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([0, 0, 0, 9, 99, 199] + [0] * 254 * 3)
    im.putdata([0, 1])
    out = _load(tmp_path, im, "pal.gif", transparency=0)
    assert out[0].tolist() == [[255, 255, 255], [9, 99, 199]]


def test_cmyk(tmp_path):
    a = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255]]], dtype=np.uint8)
    out = _load(tmp_path, Image.fromarray(a, "CMYK"), "cmyk.tif")
    assert out[0].tolist() == [[255, 255, 255], [0, 255, 255], [0, 0, 0]]


def test_cmyk_jpeg(tmp_path):
    out = _load(tmp_path, Image.new("CMYK", (32, 16), (0, 255, 255, 0)), "cmyk.jpg", quality=95)  # pure red ink mix
    assert np.abs(out.astype(int) - [255, 0, 0]).max() <= 8


def test_16_bit_grey_png(tmp_path):
    a = np.array([[0, 257 * 100, 65535, 1000]], dtype=np.uint16)
    im = Image.fromarray(a)
    assert im.mode.startswith("I;16")
    out = _load(tmp_path, im, "deep.png")
    assert out[0, :, 0].tolist() == [0, 100, 255, 4]  # scaled 0..65535 → 0..255, not clipped to white


def test_32_bit_int_tiff(tmp_path):
    a = np.array([[0, 257 * 50, 65535, -5]], dtype=np.int32)
    out = _load(tmp_path, Image.fromarray(a, "I"), "deep.tif")
    assert out[0, :, 1].tolist() == [0, 50, 255, 0]


def test_exif_orientation_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "phone.jpg"
    im.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.shape == (40, 20, 3)  # displayed upright: portrait
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 50  # stored left (red) is now on top
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 50


# --- size ----------------------------------------------------------------------------------------------------------

def test_huge_jpeg_is_downscaled(tmp_path):
    im = Image.new("RGB", (8000, 8000), (220, 30, 30))
    im.paste((30, 30, 220), (4000, 0, 8000, 8000))  # left red, right blue
    path = tmp_path / "huge.jpg"
    im.save(path, quality=80)
    del im
    out = load_image(path)
    assert out.shape == (2048, 2048, 3)
    assert np.abs(out[1000, 500].astype(int) - [220, 30, 30]).max() < 12
    assert np.abs(out[1000, 1500].astype(int) - [30, 30, 220]).max() < 12
    assert load_image(path, max_side=500).shape == (500, 500, 3)


def test_non_square_png_keeps_aspect(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("L", (3000, 1000), 77).save(path)
    out = load_image(path)
    assert out.shape == (683, 2048, 3) and out[300, 1000].tolist() == [77, 77, 77]
    assert load_image(path, max_side=None).shape == (1000, 3000, 3)


def test_small_image_not_upscaled(tmp_path):
    assert _load(tmp_path, Image.new("RGB", (3, 2), (1, 2, 3)), "tiny.bmp").shape == (2, 3, 3)


# --- path expansion ------------------------------------------------------------------------------------------------

def test_iter_image_paths(tmp_path):
    root = tmp_path / "set"
    (root / "b" / "deep").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for rel in ["z.jpg", "a.PNG", "b/deep/c.JpEg", "b/x.webp", "notes.txt", "._a.jpg", ".hidden/h.jpg", "b/raw.bin"]:
        (root / rel).write_bytes(b"x")
    odd = tmp_path / "explicit.bin"
    odd.write_bytes(b"x")
    missing = tmp_path / "missing.jpg"

    paths = iter_image_paths([root, odd, missing, root / "z.jpg"])
    assert paths == [root / "a.PNG", root / "b" / "deep" / "c.JpEg", root / "b" / "x.webp", root / "z.jpg",
                     odd, missing]  # duplicate z.jpg dropped; explicit odd/missing files kept for their own errors
    with pytest.raises(InputError, match="missing.jpg: file not found"):
        load_image(paths[-1])
    with pytest.raises(InputError, match="explicit.bin: not an image"):
        load_image(paths[-2])


def test_iter_image_paths_accepts_strings_and_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    assert iter_image_paths([str(tmp_path / "empty")]) == []
    assert iter_image_paths([]) == []
