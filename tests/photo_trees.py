"""Photo trees as users have them, built from real LFW JPEGs, for tests of the photo commands.

``make_photo_tree`` writes a one-folder-per-person tree whose files cycle through the formats and quirks the
image reader must handle (PNG, BMP, PGM, PPM, TIFF, 16-bit TIFF, WebP, GIF, RGBA PNG, EXIF-rotated JPEG,
extension-less files, Yale-style ``subject01.happy`` names) plus files that must be skipped (an HTML page
named ``.jpg``, an empty file, a hidden ``.DS_Store``). ``make_tight_crops`` writes ORL-style tight greyscale
face crops for runs without a face detector.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from faceembed.data.lfw import read_landmarks

KINDS: tuple[str, ...] = ("jpeg", "png", "bmp", "pgm", "ppm", "tiff", "tiff16", "webp", "gif", "rgba_png",
                          "exif_jpeg", "noext", "happy")
EXIF_ORIENTATIONS = (6, 8, 3)  # exif_transpose rotates these back by 270, 90 and 180 degrees
_UNDO = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}
HTML = b"<!DOCTYPE html>\n<html><head><title>Photo</title></head><body>Sign in to see this photo</body></html>\n"
TIGHT_SIZE = (112, 92)  # height, width of an AT&T/ORL face


def _encode(im: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def _vignette(rgb: Image.Image) -> Image.Image:
    """RGBA: the photo opaque inside a centred ellipse, fading to fully transparent corners."""
    w, h = rgb.size
    yy, xx = np.mgrid[0:h, 0:w]
    r = ((xx - w / 2) / (0.45 * w)) ** 2 + ((yy - h / 2) / (0.48 * h)) ** 2
    alpha = np.clip((1.3 - r) / 0.3, 0, 1) * 255
    return Image.fromarray(np.dstack([np.asarray(rgb), alpha.astype(np.uint8)]), "RGBA")


def _photo(kind: str, src: Path, index: int) -> tuple[str, bytes, int]:
    """(file name, bytes, EXIF orientation) of LFW image ``src`` as ``kind``."""
    raw = src.read_bytes()
    rgb = Image.open(io.BytesIO(raw)).convert("RGB")
    stem = src.stem
    if kind == "jpeg":
        return src.name, raw, 1
    if kind == "noext":
        return stem, raw, 1
    if kind == "exif_jpeg":
        tag = EXIF_ORIENTATIONS[index % len(EXIF_ORIENTATIONS)]
        exif = Image.Exif()
        exif[0x0112] = tag
        return f"{stem}_rotated.jpg", _encode(rgb.transpose(_UNDO[tag]), "JPEG", quality=95, exif=exif), tag
    grey16 = Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)
    table = {
        "png": (".png", rgb, "PNG", {}),
        "bmp": (".bmp", rgb, "BMP", {}),
        "pgm": (".pgm", rgb.convert("L"), "PPM", {}),
        "ppm": (".ppm", rgb, "PPM", {}),
        "tiff": (".tif", rgb, "TIFF", {"compression": "tiff_lzw"}),
        "tiff16": (".tiff", grey16, "TIFF", {}),
        "webp": (".webp", rgb, "WEBP", {"quality": 90}),
        "gif": (".gif", rgb.quantize(256), "GIF", {}),
        "rgba_png": (".png", _vignette(rgb), "PNG", {}),
        "happy": ("", rgb.quantize(256), "GIF", {}),
    }
    suffix, im, fmt, options = table[kind]
    name = f"subject{index + 1:02d}.happy" if kind == "happy" else f"{stem}_{kind}{suffix}"
    return name, _encode(im, fmt, **options), 1


def _sources(lfw_images: Path, person: str, per_person: int) -> list[Path]:
    files = sorted((lfw_images / person).glob("*.jpg"))[:per_person]
    if not files:
        raise FileNotFoundError(f"no LFW images for {person!r} under {lfw_images}")
    return files


def make_photo_tree(root: Path, lfw_images: Path, people: list[str], per_person: int) -> dict:
    """Write ``root/<person>/...``: each person's first ``per_person`` LFW JPEGs, the k-th written overall as
    ``KINDS[k % len(KINDS)]`` (so any 13 images cover every kind), plus an HTML page named ``.jpg`` (first
    person), an empty ``.png`` (last person) and a hidden ``root/.DS_Store``.

    Returns a dict:
        ``images``: {relpath: kind} of what must be read as a photo;
        ``source``: {relpath: LFW relpath ``Person/Person_0001.jpg``} for each of them;
        ``person``: {relpath: person};
        ``orientation``: {relpath: EXIF orientation tag} (1 unless ``exif_jpeg``);
        ``skipped``: {relpath: "html" | "empty"}, files that scan_images must list with a reason;
        ``hidden``: [relpath], files that scan_images must not mention at all.
    """
    out: dict = {"images": {}, "source": {}, "person": {}, "orientation": {}, "skipped": {}, "hidden": []}
    k = 0
    for person in people:
        (root / person).mkdir(parents=True, exist_ok=True)
        for i, src in enumerate(_sources(lfw_images, person, per_person)):
            kind = KINDS[k % len(KINDS)]
            name, data, tag = _photo(kind, src, i)
            (root / person / name).write_bytes(data)
            rel = f"{person}/{name}"
            out["images"][rel] = kind
            out["source"][rel] = f"{person}/{src.name}"
            out["person"][rel] = person
            out["orientation"][rel] = tag
            k += 1
    extras = {f"{people[0]}/{people[0]}_download.jpg": ("html", HTML), f"{people[-1]}/empty.png": ("empty", b"")}
    for rel, (kind, data) in extras.items():
        (root / rel).write_bytes(data)
        out["skipped"][rel] = kind
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    out["hidden"].append(".DS_Store")
    return out


def _crop_transform(points: np.ndarray) -> np.ndarray:
    """2x3 affine (scale + shift) mapping a tight box around the 5 landmarks onto a ``TIGHT_SIZE`` image.

    The box is 3.0 eye-to-mouth distances tall with the eyes 38% down, centred on the landmarks' mean x.
    """
    h, w = TIGHT_SIZE
    eyes, mouth = points[:2].mean(axis=0), points[3:5].mean(axis=0)
    box_h = 3.0 * float(np.linalg.norm(mouth - eyes))
    scale = h / box_h
    left = float(points[:, 0].mean()) - box_h * w / h / 2
    top = float(eyes[1]) - 0.38 * box_h
    return np.array([[scale, 0, -left * scale], [0, scale, -top * scale]], np.float64)


def make_tight_crops(root: Path, lfw_images: Path, landmarks_file: Path, people: list[str],
                     per_person: int) -> dict:
    """Write ``root/<person>/<stem>.pgm``: 92x112 greyscale (P5) face crops that the face fills, cut around
    the ``lfw_landmark.txt`` points of each person's first ``per_person`` LFW images that have landmarks.

    Returns ``{"images": {relpath: LFW relpath}, "landmarks": {relpath: float32 (5, 2) x, y in the crop},
    "size": (112, 92)}`` (height, width).
    """
    marks = read_landmarks(landmarks_file)
    h, w = TIGHT_SIZE
    out: dict = {"images": {}, "landmarks": {}, "size": TIGHT_SIZE}
    for person in people:
        (root / person).mkdir(parents=True, exist_ok=True)
        for src in _sources(lfw_images, person, per_person):
            lfw_rel = f"{person}/{src.name}"
            if lfw_rel not in marks:
                continue
            points = np.asarray(marks[lfw_rel], np.float64)
            m = _crop_transform(points)
            grey = cv2.cvtColor(np.asarray(Image.open(src).convert("RGB")), cv2.COLOR_RGB2GRAY)
            crop = cv2.warpAffine(grey, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            rel = f"{person}/{src.stem}.pgm"
            (root / rel).write_bytes(_encode(Image.fromarray(crop, "L"), "PPM"))
            out["images"][rel] = lfw_rel
            out["landmarks"][rel] = (points @ m[:, :2].T + m[:, 2]).astype(np.float32)
    return out


def write_two_people(root: Path, landmarks_file: str) -> None:
    """``root/images/{Ann,Bob}/NAME_000{1,2}.jpg``: four random 250x250 JPEGs, and their (fixed) landmarks in
    ``root/landmarks_file`` (interleaved format)."""
    from faceembed.data.lfw import write_landmarks

    rng = np.random.default_rng(0)
    marks = {}
    for person in ("Ann", "Bob"):
        (root / "images" / person).mkdir(parents=True)
        for i in (1, 2):
            rel = f"{person}/{person}_{i:04d}.jpg"
            cv2.imwrite(str(root / "images" / rel), (rng.random((250, 250, 3)) * 255).astype(np.uint8))
            marks[rel] = np.array([[100, 110], [150, 110], [125, 140], [105, 170], [145, 170]], np.float32)
    write_landmarks(root / landmarks_file, marks, "interleaved")
