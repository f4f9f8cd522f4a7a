"""Photos as the collections take them: a file, a numpy array, or raw bytes (an upload). Bytes are decoded by
:func:`faceembed.data.images.read_image` like files (unreadable -> InputFormatError); a photo over Pillow's pixel
limit is refused before it is decoded, as :class:`PhotoTooLargeError`."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np

from faceembed.errors import InputFormatError

Photo = str | Path | np.ndarray | bytes | bytearray | memoryview


class PhotoTooLargeError(InputFormatError):
    """A photo with more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (a decompression bomb, or just too big)."""


def check_pixels(source: bytes | str | Path) -> None:
    """Refuse a photo over the pixel limit from its header alone; anything unreadable is left to the decoder."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            w, h = im.size
    except Image.DecompressionBombError:
        w = h = None
    except Exception:  # noqa: BLE001 - not an image Pillow can open: read_image says why
        return
    if w is None or (limit and w * h > limit):
        size = "" if w is None else f"{w}x{h} = {w * h} pixels "
        raise PhotoTooLargeError(f"photo too large: {size}over the {limit}-pixel limit (a decompression bomb?)",
                                 source if isinstance(source, str | Path) else None)


def photo_rgb(photo: Photo) -> np.ndarray:
    """The photo as uint8 ``HxWx3`` RGB."""
    from faceembed.data.images import read_image
    from faceembed.faces.analyzer import load_rgb

    if isinstance(photo, bytes | bytearray | memoryview):
        data = bytes(photo)
        if not data:
            raise InputFormatError("not a readable image: empty upload")
        check_pixels(data)
        fd, tmp = tempfile.mkstemp(prefix="faceembed-photo-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            try:
                return read_image(tmp, "RGB")
            except InputFormatError as exc:
                raise InputFormatError(exc.message) from None  # not the temporary file's name
        finally:
            os.unlink(tmp)
    if isinstance(photo, str | Path):
        check_pixels(photo)
    return load_rgb(photo)
