"""Reading images (OpenCV decoder, RGB out) and listing image folders."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from faceembed.errors import InputFormatError, MissingInputError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")


_SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"BM": "BMP"}


def _image_kind(data: bytes) -> str | None:
    return next((kind for sig, kind in _SIGNATURES.items() if data.startswith(sig)), None)


def _truncation(data: bytes, kind: str | None) -> str | None:
    """Why a JPEG or PNG is cut short (OpenCV decodes a truncated JPEG silently, grey-filling the rest)."""
    if kind == "JPEG" and not data[-4096:].rstrip(b"\x00\r\n \xff").endswith(b"\xff\xd9"):
        return "truncated JPEG: no end-of-image marker (FFD9) at the end of the file"
    if kind == "PNG" and b"IEND" not in data[-64:]:
        return "truncated PNG: no IEND chunk at the end of the file"
    return None


def read_image_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file with OpenCV (``IMREAD_COLOR``) and return it as ``uint8 HxWx3`` RGB.

    Raises:
        MissingInputError: the file does not exist.
        InputFormatError: the file is empty, truncated, corrupt or not an image OpenCV can read.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError("image not found", path)
    data = path.read_bytes()
    if not data:
        raise InputFormatError("not a readable image: empty file, expected JPEG, PNG or BMP data", path)
    kind = _image_kind(data)
    why = _truncation(data, kind)
    if why:
        raise InputFormatError(f"not a readable image: {why}", path)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.size == 0:
        if kind is None:
            raise InputFormatError(
                f"not a readable image: no JPEG, PNG or BMP signature (starts with {data[:8]!r})", path
            )
        raise InputFormatError(f"not a readable image: corrupt {kind} data that OpenCV cannot decode", path)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_image_rgb(path: str | Path, image: np.ndarray) -> None:
    """Encode ``uint8 HxWx3`` RGB ``image`` to ``path`` (format from the suffix) with OpenCV, atomically."""
    from faceembed.files import write_with

    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)

    def _write(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), bgr):
            raise InputFormatError("OpenCV could not encode the image", path)

    write_with(path, _write)


def list_images(folder: str | Path) -> list[str]:
    """Sorted ``/``-separated relative paths of every jpg/jpeg/png/bmp file under ``folder``, recursively."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError("image folder not found", folder)
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, folder)
        for name in filenames:
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                out.append(rel.replace(os.sep, "/"))
    return sorted(out)


def list_identity_folder(root: str | Path) -> list[tuple[str, str]]:
    """``(relpath, person_name)`` for a one-folder-per-person tree (``root/Person/img.jpg``), sorted.

    The person is the first path component; images directly in ``root`` are rejected.
    """
    out: list[tuple[str, str]] = []
    for rel in list_images(root):
        if "/" not in rel:
            raise InputFormatError(
                f"image {rel!r} is not inside a per-person folder", Path(root) / rel
            )
        out.append((rel, rel.split("/", 1)[0]))
    return out
