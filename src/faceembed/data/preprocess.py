"""The one preprocessing function: aligned ``uint8`` RGB crops -> the model's input tensor, as its card says.

:func:`preprocess` converts the colour (RGB -> BGR, RGB -> GRAY with the ITU-R BT.601 weights OpenCV's
``COLOR_RGB2GRAY`` uses, computed in float32 without OpenCV's rounding to uint8), applies
``x = (pixel - mean) / std`` per channel in the model's colour order, and lays the batch out NCHW or NHWC.
:func:`resize_to_card` is the crop for template ``"none"``: the image (or a box of it) resized to the card's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from faceembed.errors import ShapeMismatchError
from faceembed.models.card import ModelCard

#: ITU-R BT.601 luma weights for R, G, B (``cv2.COLOR_RGB2GRAY``).
GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _as_nhwc(images: np.ndarray, card: ModelCard) -> np.ndarray:
    """Check dtype and shape; return a 4-D ``(N, H, W, C)`` view with C in (1, 3)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ShapeMismatchError(f"images are {images.dtype}, expected uint8 pixels")
    if images.ndim == 3:
        images = images[..., None]
    want = f"(N, {card.height}, {card.width}, 3) RGB or (N, {card.height}, {card.width}[, 1]) gray"
    if images.ndim != 4 or images.shape[1:3] != (card.height, card.width) or images.shape[3] not in (1, 3):
        raise ShapeMismatchError(f"images have shape {list(np.asarray(images).shape)}, the model card needs {want}")
    return images


def _convert_color(x: np.ndarray, color: str) -> np.ndarray:
    """float32 ``(N, H, W, C)`` RGB or gray -> the card's colour order."""
    if color == "GRAY":
        if x.shape[3] == 1:
            return x
        r, g, b = (np.float32(w) for w in GRAY_WEIGHTS)
        return (x[..., 0:1] * r + x[..., 1:2] * g + x[..., 2:3] * b).astype(np.float32)
    if x.shape[3] == 1:
        return np.repeat(x, 3, axis=3)
    return x[..., ::-1] if color == "BGR" else x


def preprocess(images: np.ndarray, card: ModelCard) -> np.ndarray:
    """``uint8 (N, H, W, 3)`` RGB (or ``(N, H, W)`` / ``(N, H, W, 1)`` gray) crops of the card's size -> the
    float32 input tensor: colour converted, ``(x - mean) / std`` per channel, NCHW or NHWC, contiguous.

    Gray input fed to a colour model is repeated over the three channels. Raises ShapeMismatchError naming
    both shapes when the crops are not of the card's size.
    """
    x = _as_nhwc(images, card).astype(np.float32)
    x = _convert_color(x, card.color)
    mean = np.asarray(card.mean, dtype=np.float32)
    std = np.asarray(card.std, dtype=np.float32)
    x = (x - mean) / std
    if card.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32)


def resize_to_card(image: np.ndarray, card: ModelCard,
                   box: Sequence[float] | None = None) -> np.ndarray:
    """``image`` (uint8 ``H x W [x C]``), or its ``box`` ``(x1, y1, x2, y2)`` clipped to the image, resized to
    the card's ``(height, width)``: ``cv2.INTER_AREA`` when shrinking both sides, ``cv2.INTER_LINEAR``
    otherwise. The crop for template ``"none"``; the result keeps the input's channels.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ShapeMismatchError(f"image has shape {list(image.shape)}, expected H x W or H x W x C")
    if box is not None:
        image = _crop(image, box)
    h, w = image.shape[:2]
    shrink = card.height <= h and card.width <= w
    out = cv2.resize(image, (card.width, card.height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if image.ndim == 3 and out.ndim == 2:  # cv2 drops a single channel axis
        out = out[..., None]
    return out


def _crop(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    if len(box) != 4:
        raise ShapeMismatchError(f"box has {len(box)} numbers, expected (x1, y1, x2, y2)")
    h, w = image.shape[:2]
    x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x2, y2 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    if x2 <= x1 or y2 <= y1:
        raise ShapeMismatchError(f"box {list(box)} is empty inside the {w}x{h} image")
    return image[y1:y2, x1:x2]
