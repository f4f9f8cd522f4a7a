"""A grid of images in one PNG, to eyeball an aligned data set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from faceembed.errors import FaceembedError
from faceembed.files import write_with


def make_contact_sheet(images: Sequence[np.ndarray], path: str | Path, cols: int = 8, gap: int = 2) -> None:
    """Tile ``images`` (uint8 HxWx3 RGB; resized to the first one's size when they differ) row by row,
    ``cols`` per row with a ``gap``-pixel black border, and write the sheet atomically as an image
    (format from ``path``'s suffix, PNG advised)."""
    if not images:
        raise ValueError("no images for the contact sheet")
    if cols < 1:
        raise ValueError("cols must be >= 1")
    h, w = images[0].shape[:2]
    cols = min(cols, len(images))
    rows = -(-len(images) // cols)
    sheet = np.zeros((rows * (h + gap) + gap, cols * (w + gap) + gap, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        tile = np.asarray(img)
        if tile.ndim == 2:
            tile = np.repeat(tile[:, :, None], 3, axis=2)
        if tile.shape[:2] != (h, w):
            tile = cv2.resize(tile, (w, h), interpolation=cv2.INTER_AREA)
        r, c = divmod(i, cols)
        y, x = gap + r * (h + gap), gap + c * (w + gap)
        sheet[y:y + h, x:x + w] = tile[:, :, :3]
    bgr = np.ascontiguousarray(sheet[..., ::-1])

    def _write(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), bgr):
            raise FaceembedError("OpenCV could not encode the contact sheet", path)

    write_with(path, _write)
