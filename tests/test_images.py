"""The photo reader: formats and modes recognised by their bytes, the documented conversions to uint8 RGB /
BGR / GRAY, EXIF orientation, 16-bit scaling, refusals, and folder scanning with reasons."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from faceembed.data.images import (
    list_identity_folder,
    list_images,
    read_image,
    read_image_rgb,
    scan_images,
    sniff_image_kind,
)
from faceembed.errors import InputFormatError, MissingInputError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# (Pillow format, mode, save options): lossless encodings, read back pixel-exact after the documented conversion
LOSSLESS = [
    ("PNG", "L", {}), ("PNG", "LA", {}), ("PNG", "RGB", {}), ("PNG", "RGBA", {}), ("PNG", "P", {}),
    ("PNG", "1", {}), ("PNG", "I;16", {}), ("PNG", "P+transparency", {}),
    ("BMP", "L", {}), ("BMP", "RGB", {}), ("BMP", "1", {}), ("BMP", "P", {}),
    ("TIFF", "L", {}), ("TIFF", "RGB", {"compression": "tiff_lzw"}), ("TIFF", "RGBA", {}), ("TIFF", "CMYK", {}),
    ("TIFF", "I;16", {}), ("TIFF", "I;16B", {}), ("TIFF", "1", {}), ("TIFF", "P", {}), ("TIFF", "LA", {}),
    ("PPM", "L", {}), ("PPM", "RGB", {}), ("PPM", "1", {}), ("PPM", "I;16", {}),
    ("GIF", "P", {}), ("GIF", "L", {}),
    ("WEBP", "RGB", {"lossless": True}), ("WEBP", "RGBA", {"lossless": True}),
]
# (format, mode, options, max mean / max absolute error) on smooth images
LOSSY = [
    ("JPEG", "RGB", {"quality": 95, "subsampling": 0}, 3.0, 24), ("JPEG", "L", {"quality": 95}, 2.0, 12),
    ("JPEG", "CMYK", {"quality": 95}, 2.0, 12), ("WEBP", "RGB", {"quality": 100}, 4.5, 48),
    ("WEBP", "RGBA", {"quality": 100}, 3.0, 48), ("AVIF", "RGB", {"quality": 95, "subsampling": "4:4:4"}, 2.5, 20),
]


def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared/data not found: real-data test skipped")
    return SHARED


# ---- making images ---------------------------------------------------------------------------------------------

def _pixels(seed: int, h: int, w: int, mode: str, smooth: bool = False) -> Image.Image:
    """A random ``h x w`` Pillow image of ``mode`` (``P+transparency``: palette with a transparent index)."""
    rng = np.random.default_rng(seed)
    bands = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}
    if mode in ("I;16", "I;16B"):
        im = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
        return im if mode == "I;16" else im.convert("I;16B")
    if mode == "1":
        return Image.fromarray(rng.random((h, w)) < 0.5)
    if mode.startswith("P"):
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).quantize(16)
        if mode == "P+transparency":
            im.info["transparency"] = int(np.asarray(im)[0, 0])
        return im
    if smooth:
        grid = rng.integers(0, 256, (3, 3, bands[mode]), dtype=np.uint8).astype(np.float32)
        arr = cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1).round().astype(np.uint8)
    else:
        arr = rng.integers(0, 256, (h, w, bands[mode]), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if bands[mode] == 1 else arr, mode)


def _encode(im: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    if "transparency" in im.info:
        options.setdefault("transparency", im.info["transparency"])
    im.save(buf, fmt, **options)
    return buf.getvalue()


def _on_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    c, a = colour.astype(np.float64), alpha.astype(np.float64)[..., None]
    return np.round((c * a + 255 * (255 - a)) / 255).astype(np.uint8)


def expected_rgb(im: Image.Image) -> np.ndarray:
    """The documented conversion of a decoded Pillow image to uint8 RGB, written independently of the reader."""
    mode = im.mode
    if mode.startswith("I"):  # I;16, I;16B, and I from a 16-bit PGM: 0..65535
        grey = np.round(np.asarray(im).astype(np.float64) * 255 / 65535).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "CMYK":
        c = np.asarray(im).astype(np.float64)
        return np.round((255 - c[..., :3]) * (255 - c[..., 3:]) / 255).astype(np.uint8)
    if mode in ("P", "L", "RGB") and "transparency" in im.info or mode == "PA":
        im = im.convert("RGBA")
    elif mode == "P":
        im = im.convert("RGB")
    elif mode == "1":
        im = im.convert("L")
    arr = np.asarray(im)
    if im.mode == "L":
        return np.repeat(arr[..., None], 3, axis=2)
    if im.mode == "LA":
        return np.repeat(_on_white(arr[..., :1], arr[..., 1]), 3, axis=2)
    if im.mode == "RGBA":
        return _on_white(arr[..., :3], arr[..., 3])
    return arr


def _write(tmp: Path, name: str, data: bytes) -> Path:
    (tmp / name).write_bytes(data)
    return tmp / name


sizes = st.tuples(st.integers(1, 20), st.integers(1, 20))
seeds = st.integers(0, 2**32 - 1)


# ---- formats and modes -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fmt", "mode", "options"), LOSSLESS, ids=[f"{f}-{m}" for f, m, _ in LOSSLESS])
@FAST
@given(seed=seeds, size=sizes)
def test_lossless_formats_exact_after_conversion(tmp_path, fmt, mode, options, seed, size) -> None:
    data = _encode(_pixels(seed, *size, mode), fmt, **options)
    path = _write(tmp_path, "photo", data)
    want = expected_rgb(Image.open(io.BytesIO(data)))
    got = read_image(path)
    assert got.dtype == np.uint8 and got.shape == (*size, 3) and got.flags.c_contiguous and got.flags.writeable
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(read_image(path, "BGR"), want[..., ::-1])
    grey = read_image(path, "GRAY")
    assert grey.shape == size and grey.dtype == np.uint8
    np.testing.assert_array_equal(grey, cv2.cvtColor(want, cv2.COLOR_RGB2GRAY))


@pytest.mark.parametrize(("fmt", "mode", "options", "mean_err", "max_err"), LOSSY,
                         ids=[f"{f}-{m}" for f, m, *_ in LOSSY])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=seeds, size=st.tuples(st.integers(16, 48), st.integers(16, 48)))
def test_lossy_formats_within_tolerance(tmp_path, fmt, mode, options, mean_err, max_err, seed, size) -> None:
    source = _pixels(seed, *size, mode, smooth=True)
    got = read_image(_write(tmp_path, "photo.bin", _encode(source, fmt, **options)))
    assert got.dtype == np.uint8 and got.shape == (*size, 3)
    diff = np.abs(got.astype(int) - expected_rgb(source).astype(int))
    assert diff.mean() <= mean_err and diff.max() <= max_err, (diff.mean(), diff.max())


def test_grey_sources_read_as_grey_exactly(tmp_path) -> None:
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for fmt in ("PNG", "PPM", "TIFF", "BMP", "GIF"):
        path = _write(tmp_path, f"g_{fmt}", _encode(Image.fromarray(grey), fmt))
        np.testing.assert_array_equal(read_image(path, "GRAY"), grey)
        np.testing.assert_array_equal(read_image(path), np.repeat(grey[..., None], 3, axis=2))


def test_gif_first_frame(tmp_path) -> None:
    frames = [Image.new("RGB", (6, 4), c).quantize(4) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    got = read_image(_write(tmp_path, "anim.gif", buf.getvalue()))
    assert got.shape == (4, 6, 3) and (got == [255, 0, 0]).all()


def test_ascii_and_odd_maxval_pnm(tmp_path) -> None:
    """Plain (P2) PGM and a 10-bit PGM: samples scaled to the full 8-bit range."""
    got = read_image(_write(tmp_path, "a.pgm", b"P2\n# a comment\n4 1\n1023\n0 4 1023 512\n"), "GRAY")
    assert got.tolist() == [[0, 1, 255, 128]]
    assert read_image(_write(tmp_path, "b.pbm", b"P1\n3 1\n0 1 0\n"), "GRAY").tolist() == [[255, 0, 255]]


# ---- extension independence, EXIF, 16-bit ------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "PPM", "TIFF", "WEBP", "GIF"])
def test_same_bytes_any_name(tmp_path, fmt) -> None:
    data = _encode(_pixels(7, 12, 9, "P" if fmt == "GIF" else "RGB"), fmt)
    names = ["face.jpg", "face", "subject01.happy", "face.png", "FACE.TXT"]
    reads = [read_image(_write(tmp_path, n, data)) for n in names]
    for other in reads[1:]:
        np.testing.assert_array_equal(other, reads[0])
    images, others = scan_images(tmp_path)
    assert images == sorted(names) and others == []


def _quadrants() -> Image.Image:
    """A 6 x 10 image whose four quadrants differ."""
    arr = np.zeros((6, 10, 3), np.uint8)
    arr[:3, :5], arr[:3, 5:], arr[3:, :5], arr[3:, 5:] = (250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)
    return Image.fromarray(arr)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_like_exif_transpose(tmp_path, fmt, orientation) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    options = {"quality": 100} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    path = _write(tmp_path, "rotated", _encode(_quadrants(), fmt, exif=exif, **options))
    with Image.open(path) as im:
        assert im.getexif().get(0x0112) == orientation
        want = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    got = read_image(path)
    assert got.shape == ((10, 6, 3) if orientation >= 5 else (6, 10, 3))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "PPM"])
def test_16bit_grey_is_scaled_not_clipped(tmp_path, fmt) -> None:
    values = np.array([[0, 1, 128, 129, 257, 1000, 32767, 32768, 65279, 65534, 65535]], np.uint16)
    got = read_image(_write(tmp_path, "deep", _encode(Image.fromarray(values), fmt)), "GRAY")
    assert got.tolist() == [[0, 0, 0, 1, 1, 4, 127, 128, 254, 255, 255]]


@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_16bit_colour_is_scaled_per_channel(tmp_path, ext) -> None:
    rgb = np.array([[[1000, 32768, 65535], [0, 257, 65279]]], np.uint16)
    got = read_image(_write(tmp_path, "deep", cv2.imencode(ext, rgb[..., ::-1])[1].tobytes()))
    assert got.tolist() == [[[4, 128, 255], [0, 1, 254]]]
    rgba = np.dstack([rgb, np.full((1, 2), 32768, np.uint16)])  # half transparent: halfway to white
    got = read_image(_write(tmp_path, "deep_alpha", cv2.imencode(ext, rgba[..., [2, 1, 0, 3]])[1].tobytes()))
    assert got.tolist() == [[[129, 191, 255], [127, 128, 254]]]


def test_rgba_is_composited_on_white(tmp_path) -> None:
    rgba = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [200, 100, 0, 128]]], np.uint8)
    got = read_image(_write(tmp_path, "a.png", _encode(Image.fromarray(rgba, "RGBA"), "PNG")))
    assert got.tolist() == [[[255, 255, 255], [0, 0, 0], [227, 177, 127]]]


# ---- refusals ------------------------------------------------------------------------------------------------------

def test_missing_and_unreadable(tmp_path) -> None:
    with pytest.raises(MissingInputError, match="image not found"):
        read_image(tmp_path / "none.jpg")
    with pytest.raises(ValueError, match="color must be one of"):
        read_image(_write(tmp_path, "a.png", _encode(_pixels(0, 2, 2, "RGB"), "PNG")), "HSV")  # type: ignore[arg-type]
    heic = _write(tmp_path, "IMG_0001.HEIC", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    with pytest.raises(InputFormatError, match="HEIC photos are not supported"):
        read_image(heic)


def test_jpeg_with_trailing_data_is_not_truncated(tmp_path) -> None:
    """A phone's motion photo: a complete JPEG followed by a video. An FFD9 inside a comment is no end."""
    jpeg = _encode(_pixels(3, 30, 20, "RGB", smooth=True), "JPEG", comment=b"fake end \xff\xd9 here")
    plain = read_image(_write(tmp_path, "a.jpg", jpeg))
    video = b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).bytes(20000)
    np.testing.assert_array_equal(read_image(_write(tmp_path, "b.jpg", jpeg + video)), plain)
    with pytest.raises(InputFormatError, match="truncated JPEG"):
        read_image(_write(tmp_path, "c.jpg", jpeg[:-300]))
    png = _encode(_pixels(3, 30, 20, "RGB"), "PNG")
    np.testing.assert_array_equal(read_image(_write(tmp_path, "d.png", png + bytes(500))), read_image_rgb(
        _write(tmp_path, "e.png", png)))


VALID = [("JPEG", "RGB"), ("PNG", "RGBA"), ("GIF", "P"), ("TIFF", "RGB"), ("WEBP", "RGB"), ("BMP", "RGB"),
         ("PPM", "L"), ("JPEG", "CMYK")]


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about damaged TIFF tags before refusing them
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # a damaged header claiming a huge size
@pytest.mark.parametrize(("fmt", "mode"), VALID, ids=[f"{f}-{m}" for f, m in VALID])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.05, 0.999), flips=st.lists(st.tuples(st.floats(0, 0.999), st.integers(0, 255)), max_size=4))
def test_damaged_files_read_or_raise_one_line(tmp_path, fmt, mode, cut, flips) -> None:
    """A cut-short or corrupted photo either reads as uint8 pixels or raises one InputFormatError line."""
    data = bytearray(_encode(_pixels(11, 24, 20, mode), fmt))
    for where, value in flips:
        data[int(where * len(data))] = value
    path = _write(tmp_path, "damaged.jpg", bytes(data[: max(1, int(cut * len(data)))]))
    try:
        got = read_image(path)
    except InputFormatError as exc:
        assert "\n" not in str(exc) and "damaged.jpg" in str(exc) and "not a readable image" in str(exc)
    else:
        assert got.dtype == np.uint8 and got.ndim == 3 and got.shape[2] == 3


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` (valid CRC; the pixel data is a few bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\x00" * 64)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))
            + b"\x00\x00\x00\x00IEND\xaeB`\x82")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_one_clear_line(tmp_path, monkeypatch) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(InputFormatError, match=r"exceeds limit of \d+ pixels, could be decompression bomb"):
            read_image(_write(tmp_path, "bomb.png", _png_claiming(100_000, 100_000)))
        assert tracemalloc.get_traced_memory()[1] < 4 << 20
    finally:
        tracemalloc.stop()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    big = _write(tmp_path, "big.gif", _encode(_pixels(0, 40, 30, "P"), "GIF"))
    with pytest.raises(InputFormatError, match=r"30x40 = 1200 pixels is over the 1000-pixel limit") as info:
        read_image(big)
    assert "\n" not in str(info.value) and "big.gif" in str(info.value)


# ---- scanning folders ----------------------------------------------------------------------------------------------

def test_scan_images_reasons_hidden_and_nesting(tmp_path) -> None:
    jpeg = _encode(_pixels(0, 8, 8, "RGB"), "JPEG")
    files = {"A/one.jpg": jpeg, "A/two": _encode(_pixels(1, 8, 8, "L"), "PPM"), "B/sub/subject01.happy":
             _encode(_pixels(2, 8, 8, "P"), "GIF"), "A/page.jpg": b"<!DOCTYPE html>\n<html></html>",
             "B/empty.png": b"", "B/notes.txt": b"BMW 320i\n", "A/.hidden.jpg": jpeg, ".cache/x.jpg": jpeg,
             "B/IMG_1.HEIC": b"\x00\x00\x00\x18ftypheic" + bytes(32)}
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    os.symlink(tmp_path / "B", tmp_path / "B" / "sub" / "loop")  # a symbolic-link loop must not hang the scan
    images, others = scan_images(tmp_path)
    assert images == ["A/one.jpg", "A/two", "B/sub/subject01.happy"]
    reasons = dict(others)
    assert reasons["A/page.jpg"].startswith("not an image: starts with b'<!DOCTYPE")
    assert reasons["B/empty.png"] == "empty file"
    assert reasons["B/notes.txt"].startswith("not an image: starts with b'BMW")
    assert "HEIC photos are not supported" in reasons["B/IMG_1.HEIC"]
    assert set(reasons) == {"A/page.jpg", "B/empty.png", "B/notes.txt", "B/IMG_1.HEIC"}
    # files named like images are listed whatever their bytes, so that reading them reports what is wrong
    assert list_images(tmp_path) == ["A/one.jpg", "A/page.jpg", "A/two", "B/IMG_1.HEIC", "B/empty.png",
                                     "B/sub/subject01.happy"]
    assert [r for r, _ in list_identity_folder(tmp_path)] == list_images(tmp_path)
    with pytest.raises(MissingInputError):
        scan_images(tmp_path / "nope")


@pytest.mark.parametrize(("head", "kind"), [
    (b"\xff\xd8\xff\xe0", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"), (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WebP"), (b"BM" + bytes(12) + b"\x28\x00\x00\x00", "BMP"),
    (b"P5\n# GIMP\n92 112\n255\n", "PGM"), (b"P6 3 2 255 ", "PPM"), (b"P4\n8 1\n", "PBM"),
    (b"\x00\x00\x00\x1cftypavif", "AVIF"), (b"BMW 320i", None), (b"P5 is a key", None), (b"<!DOCTYPE", None),
])
def test_sniff_image_kind(head, kind) -> None:
    assert sniff_image_kind(head) == kind


# ---- real LFW photos ------------------------------------------------------------------------------------------------

@pytest.mark.realdata
def test_lfw_jpeg_decoding_matches_pillow() -> None:
    """The OpenCV JPEG decoder used for plain JPEGs gives Pillow's pixels exactly on LFW."""
    images = shared_data() / "lfw" / "images"
    for rel in list_images(images / "Colin_Powell")[:40]:
        with Image.open(images / "Colin_Powell" / rel) as im:
            np.testing.assert_array_equal(read_image(images / "Colin_Powell" / rel), np.asarray(im.convert("RGB")))


@pytest.mark.realdata
def test_photo_tree_from_lfw_every_file_read_or_reasoned(tmp_path) -> None:
    from photo_trees import KINDS, make_photo_tree

    lfw = shared_data() / "lfw" / "images"
    info = make_photo_tree(tmp_path, lfw, ["Colin_Powell", "Tony_Blair"], 8)
    assert set(info["images"].values()) == set(KINDS)
    images, others = scan_images(tmp_path)
    assert sorted(images) == sorted(info["images"]) and dict(others).keys() == info["skipped"].keys()
    assert not any(".DS_Store" in p for p in [*images, *dict(others)])
    for rel, kind in info["images"].items():
        got = read_image(tmp_path / rel)
        with Image.open(lfw / info["source"][rel]) as im:
            source = np.asarray(im.convert("RGB"))
        assert got.shape == source.shape and got.dtype == np.uint8, rel
        diff = np.abs(got.astype(int) - source.astype(int))
        if kind in ("jpeg", "noext", "png", "bmp", "ppm", "tiff"):
            assert diff.max() == 0, rel
        elif kind in ("pgm", "tiff16"):
            with Image.open(lfw / info["source"][rel]) as im:
                np.testing.assert_array_equal(got[..., 0], np.asarray(im.convert("L")), rel)
        elif kind == "rgba_png":
            assert diff[100:150, 100:150].max() == 0 and (got[0, 0] == 255).all(), rel
        else:  # re-encoded JPEG (EXIF-rotated back upright), lossy WebP, 256-colour GIF
            assert diff.mean() < 6, (rel, kind, diff.mean())
    reasons = dict(others)
    assert reasons["Colin_Powell/Colin_Powell_download.jpg"].startswith("not an image: starts with b'<!DOCTYPE")
    assert reasons["Tony_Blair/empty.png"] == "empty file"
    named = sorted(images + ["Colin_Powell/Colin_Powell_download.jpg", "Tony_Blair/empty.png"])
    assert [p for p, _ in list_identity_folder(tmp_path)] == named  # named like images: listed, reading says why


@pytest.mark.realdata
def test_tight_crops_from_lfw(tmp_path) -> None:
    from photo_trees import make_tight_crops

    lfw = shared_data() / "lfw"
    info = make_tight_crops(tmp_path, lfw / "images", lfw / "lfw_landmark.txt", ["Colin_Powell", "Zico"], 3)
    assert len(info["images"]) == 6 and list_images(tmp_path) == sorted(info["images"])
    for rel, points in info["landmarks"].items():
        assert sniff_image_kind((tmp_path / rel).read_bytes()[:32]) == "PGM"
        assert read_image(tmp_path / rel, "GRAY").shape == (112, 92)
        assert (points[:, 0] > 10).all() and (points[:, 0] < 82).all(), rel
        assert (points[:, 1] > 25).all() and (points[:, 1] < 100).all(), rel
