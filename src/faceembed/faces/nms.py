"""Box arithmetic of MTCNN: image pyramid scales, P-Net proposals, box regression, squaring, NMS.

Boxes are float arrays ``[N, 4]`` of ``(x1, y1, x2, y2)`` in pixels. Conventions follow the ``mtcnn`` package
whose weights are used: a box's width for regression and landmarks is ``x2 - x1 + 1``; P-Net cells are 12x12
at stride 2, their regression applied immediately; NMS is greedy (the paper's), by "union" (IoU) or "min"
(intersection over the smaller area).
"""

from __future__ import annotations

import numpy as np

PNET_CELL = 12
PNET_STRIDE = 2
#: The detector's default relative floor on the smallest face searched, as a share of the photo's shorter side
#: (:func:`smallest_face`; see :mod:`faceembed.faces.detect`): 1/16, e.g. 75 px in a 1600x1200 photo.
MIN_FACE_FRACTION = 1 / 16


def smallest_face(height: int, width: int, min_face_size: float, min_face_fraction: float = 0.0) -> float:
    """The smallest face searched in a ``height`` x ``width`` photo, px: ``min_face_size``, or
    ``min_face_fraction`` of the shorter side where that is larger (0: no relative floor)."""
    if not 0 <= min_face_fraction < 1:
        raise ValueError(f"need 0 <= min_face_fraction < 1, got {min_face_fraction}")
    return max(float(min_face_size), min_face_fraction * min(height, width))


def pyramid_scales(height: int, width: int, min_face_size: float = 20.0, factor: float = 0.709,
                   min_size: int = PNET_CELL, min_face_fraction: float = 0.0) -> list[float]:
    """Scales at which P-Net (12x12 cells) sees faces of :func:`smallest_face` px and larger (``min_face_size``,
    or ``min_face_fraction`` of the shorter side where larger): the first scale maps that size onto 12 px, each
    next one is ``factor`` times smaller, down to where the image's shorter side would fall below ``min_size``
    px. With a fraction the first level's shorter side is at most ``min_size / min_face_fraction`` px (192 at
    1/16), so the number of levels is bounded whatever the photo's size."""
    if min_face_size <= 0 or not 0 < factor < 1:
        raise ValueError(f"need min_face_size > 0 and 0 < factor < 1, got {min_face_size}, {factor}")
    scale = min_size / smallest_face(height, width, min_face_size, min_face_fraction)
    side = min(height, width) * scale
    out = []
    while side >= min_size:
        out.append(scale)
        scale *= factor
        side *= factor
    return out


def pnet_boxes(box_reg: np.ndarray, face_prob: np.ndarray, scale: float, threshold: float) -> np.ndarray:
    """Candidate boxes of one P-Net output map (``box_reg [4, h, w]``, ``face_prob [h, w]``) at ``scale``.

    Returns ``[K, 5]``: ``x1, y1, x2, y2`` in the original image (regression applied), score; sorted by
    score, highest first.
    """
    ys, xs = np.nonzero(face_prob > threshold)
    if ys.size == 0:
        return np.zeros((0, 5), dtype=np.float32)
    reg = box_reg[:, ys, xs].T.astype(np.float64)  # [K, 4] dx1 dy1 dx2 dy2
    x1 = xs * PNET_STRIDE + reg[:, 0] * PNET_CELL
    y1 = ys * PNET_STRIDE + reg[:, 1] * PNET_CELL
    x2 = xs * PNET_STRIDE + PNET_CELL + reg[:, 2] * PNET_CELL
    y2 = ys * PNET_STRIDE + PNET_CELL + reg[:, 3] * PNET_CELL
    boxes = np.stack([x1, y1, x2, y2], axis=1) / scale
    scores = face_prob[ys, xs].astype(np.float64)
    order = np.argsort(-scores, kind="stable")
    return np.concatenate([boxes, scores[:, None]], axis=1)[order].astype(np.float32)


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Areas of ``(x1, y1, x2, y2)`` boxes (0 for empty ones)."""
    b = np.asarray(boxes, dtype=np.float64)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def overlap(box: np.ndarray, boxes: np.ndarray, method: str = "union") -> np.ndarray:
    """Overlap of one box with each of ``boxes``: IoU (``"union"``) or intersection / smaller area (``"min"``)."""
    b = np.asarray(boxes, dtype=np.float64)
    ix = np.clip(np.minimum(box[2], b[:, 2]) - np.maximum(box[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], b[:, 3]) - np.maximum(box[1], b[:, 1]), 0, None)
    inter = ix * iy
    a = box_areas(box[None, :4])[0]
    areas = box_areas(b)
    if method == "union":
        denom = a + areas - inter
    elif method == "min":
        denom = np.minimum(a, areas)
    else:
        raise ValueError(f"method must be 'union' or 'min', got {method!r}")
    return np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first.

    A box is dropped when its overlap (:func:`overlap`) with an already kept, higher-scoring box is above
    ``threshold``. The same arithmetic as :func:`overlap`, with the coordinates and areas taken out once.
    """
    if method not in ("union", "min"):
        raise ValueError(f"method must be 'union' or 'min', got {method!r}")
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64).reshape(-1), kind="stable")
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if rest.size == 0:
            break
        ix = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        iy = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = ix * iy
        denom = areas[i] + areas[rest] - inter if method == "union" else np.minimum(areas[i], areas[rest])
        ov = np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)
        order = rest[ov <= threshold]
    return np.asarray(keep, dtype=np.int64)


def square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square of its longer side around the same centre (copies; extra columns kept)."""
    out = np.array(boxes, dtype=np.float32, copy=True)
    w = out[:, 2] - out[:, 0]
    h = out[:, 3] - out[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = out[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = out[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply R-Net / O-Net box regression ``(dx1, dy1, dx2, dy2)`` in units of ``x2 - x1 + 1``, ``y2 - y1 + 1``."""
    out = np.array(boxes, dtype=np.float32, copy=True)
    w = out[:, 2] - out[:, 0] + 1
    h = out[:, 3] - out[:, 1] + 1
    out[:, :4] += np.asarray(reg, dtype=np.float32) * np.stack([w, h, w, h], axis=1)
    return out


def landmarks_to_image(rel: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """O-Net's landmarks ``[N, 10]`` (x1..x5, y1..y5 as fractions of the box) -> ``[N, 5, 2]`` image (x, y)."""
    r = np.asarray(rel, dtype=np.float32)
    w = boxes[:, 2:3] - boxes[:, 0:1] + 1
    h = boxes[:, 3:4] - boxes[:, 1:2] + 1
    xs = w * r[:, 0:5] + boxes[:, 0:1] - 1
    ys = h * r[:, 5:10] + boxes[:, 1:2] - 1
    return np.stack([xs, ys], axis=2)


def pick_face(boxes: np.ndarray, height: int, width: int, keep: str = "largest") -> int:
    """Index of the face to keep when several are found: ``"largest"`` box area, or ``"center"``: the box
    whose centre is nearest the image centre."""
    if len(boxes) == 0:
        raise ValueError("no boxes")
    if keep == "largest":
        return int(np.argmax(box_areas(boxes)))
    if keep == "center":
        cx = (boxes[:, 0] + boxes[:, 2]) / 2 - width / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2 - height / 2
        return int(np.argmin(cx * cx + cy * cy))
    raise ValueError(f"keep must be 'largest' or 'center', got {keep!r}")


__all__ = ["MIN_FACE_FRACTION", "smallest_face", "pyramid_scales", "pnet_boxes", "nms", "square", "regress",
           "landmarks_to_image", "pick_face", "overlap", "box_areas"]
