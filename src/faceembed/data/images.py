"""Reading photos by their bytes (any common format, any extension) and listing image folders.

One reader for every photo command: JPEG, PNG, BMP, PBM/PGM/PPM, TIFF, WebP, GIF (first frame) and AVIF are
recognised by their first bytes, never by the file name. Plain 8-bit JPEGs are decoded with OpenCV
(libjpeg-turbo, pixel-identical to Pillow and about 1.8x faster); everything else with Pillow. Every image
then goes through the same conversion to ``uint8``:

* 16-bit samples are scaled, ``round(v * 255 / 65535)`` (not clipped); 32-bit integer (``I``) is taken as
  16-bit; float (``F``) as 0..1 when its maximum is at most 1, else as 0..255;
* alpha (RGBA, LA, palette or colour-key transparency) is composited on **white**, then dropped;
* palette, 1-bit, CMYK and other modes are converted by Pillow (CMYK naively, without a colour profile);
* the EXIF orientation tag is applied, as ``PIL.ImageOps.exif_transpose`` does.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from faceembed.errors import InputFormatError, MissingInputError

Color = Literal["RGB", "BGR", "GRAY"]
COLORS: tuple[str, ...] = ("RGB", "BGR", "GRAY")
SNIFF_BYTES = 256  # enough for a PNM header with a comment line
_OTHERS = "(nor GIF, TIFF, WebP, AVIF or PBM/PGM/PPM)"
_EXPECTED = "JPEG, PNG or BMP data (or GIF, TIFF, WebP, AVIF, PBM/PGM/PPM)"
_BMP_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}
_PNM = re.compile(rb"P([1-6])(?:\s|#[^\n]*\n)+\d")
_ISO_BRANDS = {b"avif": "AVIF", b"avis": "AVIF", b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC",
               b"mif1": "HEIF", b"msf1": "HEIF"}
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# Oversized images are refused with an InputFormatError before decoding; Pillow's warning would only repeat it.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def sniff_image_kind(head: bytes) -> str | None:
    """The format named by an image's first bytes (``JPEG``, ``PNG``, ``GIF``, ``TIFF``, ``WebP``, ``BMP``,
    ``PBM``, ``PGM``, ``PPM``, ``AVIF``; ``HEIC``/``HEIF`` which are recognised but not readable), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "BMP"
    if pnm := _PNM.match(head):
        return ("PBM", "PGM", "PPM")[(int(pnm.group(1)) - 1) % 3]
    if head[4:8] == b"ftyp":
        return _ISO_BRANDS.get(head[8:12])
    return None


def _unreadable(kind: str | None, head: bytes) -> str | None:
    """Why bytes of ``kind`` cannot be read, or None when they can."""
    if kind is None:
        return f"no JPEG, PNG or BMP signature {_OTHERS} (starts with {head[:16]!r})"
    if kind in ("HEIC", "HEIF"):
        return f"{kind} photos are not supported, expected {_EXPECTED}: convert it to JPEG or PNG"
    return None


def _jpeg_reaches_eoi(data: bytes) -> bool:
    """Walk the JPEG's markers (segments by their length, entropy-coded data by its FF bytes) to EOI (FFD9)."""
    pos = 2
    while (pos := data.find(b"\xff", pos)) >= 0 and pos + 1 < len(data):
        marker = data[pos + 1]
        if marker == 0xD9:
            return True
        if marker in (0x00, 0x01, 0xFF) or 0xD0 <= marker <= 0xD8:  # stuffing, TEM, fill, RSTn, SOI: no length
            pos += 1 if marker == 0xFF else 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return False


def _truncation(data: bytes, kind: str) -> str | None:
    """Why a JPEG or PNG is cut short (OpenCV decodes a truncated JPEG silently, grey-filling the rest).

    Data after the end (a phone's motion-photo video, a camera trailer) is allowed.
    """
    if kind == "JPEG" and not data[-4096:].rstrip(b"\x00\r\n \xff").endswith(b"\xff\xd9") \
            and not _jpeg_reaches_eoi(data):
        return "truncated JPEG: no end-of-image marker (FFD9) at the end of the file"
    if kind == "PNG" and b"IEND" not in data[-64:] and data.rfind(_PNG_END) < 0:
        return "truncated PNG: no IEND chunk at the end of the file"
    return None


def _check_size(size: tuple[int, int], path: Path) -> None:
    """Refuse an image over Pillow's ``Image.MAX_IMAGE_PIXELS`` (read at call time) before decoding it."""
    limit = Image.MAX_IMAGE_PIXELS
    w, h = size
    if limit and w * h > limit:
        raise InputFormatError(f"not a readable image: {w}x{h} = {w * h} pixels is over the {limit}-pixel limit "
                               "(a decompression bomb?); expected a photo within PIL.Image.MAX_IMAGE_PIXELS", path)


def _opencv(data: bytes, flags: int) -> np.ndarray | None:
    """Decode with OpenCV, EXIF orientation ignored (applied later); colour channels reordered to RGB(A)."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None or arr.size == 0:
        return None
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return arr


def _is_16bit_colour(im: Image.Image) -> bool:
    """A 16-bit-per-sample colour PNG or TIFF, which Pillow would reduce to its high bytes."""
    args = im.tile[0].args if im.tile else None
    rawmode = args[0] if isinstance(args, tuple) and args else args
    return im.mode in ("RGB", "RGBA", "LA") and isinstance(rawmode, str) and ";16" in rawmode


def _pillow_pixels(im: Image.Image) -> np.ndarray:
    """The first frame as an array: uint8 or uint16, HxW or HxWxC with C in 2 (LA), 3 (RGB), 4 (RGBA)."""
    mode = im.mode
    if "transparency" in im.info and mode in ("1", "L", "P", "RGB"):
        return np.array(im.convert("RGBA"))
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.array(im)
    if mode == "1":
        return np.array(im.convert("L"))
    if mode.startswith("I;16"):
        return np.array(im).astype(np.uint16)
    if mode == "I":
        return np.clip(np.array(im), 0, 65535).astype(np.uint16)
    if mode == "F":
        arr = np.nan_to_num(np.array(im, np.float32))
        scale = 255.0 if arr.size and arr.max() <= 1.0 else 1.0
        return np.clip(arr * scale, 0, 255).round().astype(np.uint8)
    return np.array(im.convert("RGBA" if "A" in im.getbands() else "RGB"))


def _decode(data: bytes, kind: str, path: Path) -> tuple[np.ndarray, int]:
    """(pixels, EXIF orientation) with the decoder that reads ``kind`` correctly; errors as InputFormatError."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            _check_size(im.size, path)
            pixels = None
            if kind == "JPEG" and im.mode in ("RGB", "L"):
                pixels = _opencv(data, cv2.IMREAD_COLOR if im.mode == "RGB" else cv2.IMREAD_GRAYSCALE)
                if pixels is None:
                    raise InputFormatError("not a readable image: corrupt JPEG data that OpenCV cannot decode", path)
            elif _is_16bit_colour(im):
                pixels = _opencv(data, cv2.IMREAD_UNCHANGED)
                pixels = pixels if pixels is not None and pixels.dtype == np.uint16 else None
            if pixels is None:
                pixels = _pillow_pixels(im)
            orientation = im.getexif().get(0x0112, 1)
    except (InputFormatError, MemoryError):
        raise
    except Image.DecompressionBombError as exc:
        raise InputFormatError(f"not a readable image: {exc} (expected a photo within PIL.Image.MAX_IMAGE_PIXELS)",
                               path) from None
    except Exception as exc:  # Pillow's failures on hostile bytes are open-ended: all are bad input here
        why = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:160]
        raise InputFormatError(f"not a readable image: corrupt {kind} data that Pillow cannot decode ({why})",
                               path) from None
    return pixels, orientation if isinstance(orientation, int) else 1


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """16-bit samples scaled to 8 bit with rounding, ``round(v * 255 / 65535)``."""
    if pixels.dtype == np.uint8:
        return pixels
    return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def flatten_alpha(pixels: np.ndarray) -> np.ndarray:
    """Composite LA / RGBA on white, ``round((c * a + 255 * (255 - a)) / 255)``; HxW or HxWx3 out."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        return pixels[..., 0]
    if pixels.ndim == 2 or pixels.shape[2] == 3:
        return pixels
    colour, alpha = pixels[..., :-1].astype(np.uint32), pixels[..., -1:].astype(np.uint32)
    out = ((colour * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return out[..., 0] if out.shape[2] == 1 else out


_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {  # the transposes of PIL.ImageOps.exif_transpose
    2: lambda a: a[:, ::-1],
    3: lambda a: np.rot90(a, 2),
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, 3),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _to_color(pixels: np.ndarray, color: str) -> np.ndarray:
    """HxW grey or HxWx3 RGB pixels as ``color``: HxWx3 RGB/BGR or HxW GRAY (ITU-R 601 luma), contiguous."""
    if pixels.ndim == 2:
        out = pixels if color == "GRAY" else np.repeat(pixels[..., None], 3, axis=2)
    elif color == "GRAY":
        out = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY)
    else:
        out = pixels if color == "RGB" else pixels[..., ::-1]
    return np.ascontiguousarray(out) if out.flags.writeable else out.copy()


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise MissingInputError("image not found", path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFormatError(f"not a readable image: cannot read the file ({exc.strerror})", path) from None
    if not data:
        raise InputFormatError(f"not a readable image: empty file, expected {_EXPECTED}", path)
    return data


def read_image(path: str | Path, color: Color = "RGB") -> np.ndarray:
    """Read any supported photo, recognised by its bytes, as ``uint8``: ``HxWx3`` RGB or BGR, or ``HxW`` GRAY.

    The conversions (16-bit scaling, alpha on white, EXIF orientation) are listed in the module docstring.

    Raises:
        MissingInputError: the file does not exist.
        InputFormatError: empty, truncated, corrupt, oversized or not a supported image (one line, names the file).
    """
    if color not in COLORS:
        raise ValueError(f"color must be one of {COLORS}, got {color!r}")
    path = Path(path)
    data = _read_bytes(path)
    kind = sniff_image_kind(data[:SNIFF_BYTES])
    why = _unreadable(kind, data) or _truncation(data, kind)
    if why:
        raise InputFormatError(f"not a readable image: {why}", path)
    pixels, orientation = _decode(data, kind, path)
    upright = _ORIENT.get(orientation, lambda a: a)(flatten_alpha(_to_uint8(pixels)))
    return _to_color(upright, color)


def read_image_rgb(path: str | Path) -> np.ndarray:
    """``read_image(path, "RGB")``: ``uint8 HxWx3`` RGB."""
    return read_image(path, "RGB")


def write_image_rgb(path: str | Path, image: np.ndarray) -> None:
    """Encode ``uint8 HxWx3`` RGB ``image`` to ``path`` (format from the suffix) with OpenCV, atomically."""
    from faceembed.files import write_with

    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)

    def _write(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), bgr):
            raise InputFormatError("OpenCV could not encode the image", path)

    write_with(path, _write)


def _walk(folder: Path) -> Iterator[str]:
    """``/``-separated relative paths of the files under ``folder``, hidden files and folders skipped,
    symbolic links followed (each real folder once)."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames.clear()
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, folder)
        for name in filenames:
            if not name.startswith("."):
                rel = name if rel_dir == "." else os.path.join(rel_dir, name)
                yield rel.replace(os.sep, "/")


def _not_an_image(path: Path) -> str | None:
    """Why the file at ``path`` is not a readable image, from its first bytes only; None if it looks like one."""
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as exc:
        return f"cannot read the file ({exc.strerror})"
    if not head:
        return "empty file"
    kind = sniff_image_kind(head)
    if kind is None:
        return f"not an image: starts with {head[:16]!r}"
    return _unreadable(kind, head)


def scan_images(folder: str | Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Walk ``folder`` recursively (sorted; hidden files and folders skipped) and sniff each file's first bytes.

    Returns ``(images, others)``: the sorted ``/``-separated relative paths of the files that look like a
    supported image whatever their name, and ``(relative path, reason)`` for every other file, e.g.
    ``("a/face.jpg", "not an image: starts with b'<!DOCTYPE html>\\n'")`` or ``("b/x.png", "empty file")``.
    Nothing is decoded: a file that starts right but is corrupt is listed here and refused by ``read_image``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError("image folder not found", folder)
    found = [(rel, _not_an_image(folder / rel)) for rel in sorted(_walk(folder))]
    return [rel for rel, why in found if why is None], [(rel, why) for rel, why in found if why is not None]


#: Names that claim to be an image: such a file is listed even when its bytes are not one, so that the command
#: reading it reports why (one line, or a stop with ``--on-error stop``) instead of passing over it in silence.
IMAGE_NAMES = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".pgm", ".ppm", ".pbm", ".pnm", ".tif", ".tiff", ".webp",
               ".gif", ".avif", ".heic", ".heif")


def list_images(folder: str | Path) -> list[str]:
    """Sorted relative paths of every file under ``folder`` whose bytes are an image (whatever its name), and of
    every file named like an image (``.jpg``, ``.png``, ...) whatever its bytes: reading it says what is wrong.
    Other files (notes, landmark lists) are left out; :func:`scan_images` lists them with a reason."""
    images, others = scan_images(folder)
    claimed = [rel for rel, _ in others if rel.lower().endswith(IMAGE_NAMES)]
    return sorted(images + claimed)


def list_identity_folder(root: str | Path) -> list[tuple[str, str]]:
    """``(relpath, person_name)`` for a one-folder-per-person tree (``root/Person/img.jpg``), sorted.

    The person is the first path component; images directly in ``root`` are rejected.
    """
    out: list[tuple[str, str]] = []
    for rel in list_images(root):
        if "/" not in rel:
            raise InputFormatError(f"image {rel!r} is not inside a per-person folder", Path(root) / rel)
        out.append((rel, rel.split("/", 1)[0]))
    return out
