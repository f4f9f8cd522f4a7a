"""Alignment templates: where the 5 landmarks (left eye, right eye, nose tip, left mouth corner, right mouth
corner, as ``(x, y)``; the order of faceembed's landmark files and 5-point alignment) land in a model's
input crop.

``TEMPLATES`` maps a model card's ``template`` name to ``(points 5x2 float64, (height, width))`` of its
reference crop; ``"none"`` (no alignment: the detected box is resized) has no entry.
:func:`template_points` scales a template to another crop size.
"""

from __future__ import annotations

import numpy as np

from faceembed.errors import InputFormatError

#: SphereFace / PFE template in a 96-wide, 112-high crop (``REFERENCE_112x96`` of the aligner).
SPHEREFACE_112x96 = np.array(
    [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655], [62.7299, 92.2041]],
    dtype=np.float64,
)
#: ArcFace / insightface ``arcface_dst`` in a 112x112 crop: the SphereFace template with every x shifted by +8.
ARCFACE_112x112 = SPHEREFACE_112x96 + np.array([8.0, 0.0])
#: dlib's face chip (150x150, padding 0.25, as ``dlib.get_face_chip`` makes it from its 68-point shape) for
#: 5 MTCNN-style points: where ``lfw_landmark.txt``'s points land in dlib's chips, the mean over 3,425 LFW View 1
#: training images (``pairsDevTrain.txt`` people only; ``python scripts/dlib_template.py``). On 1,543 View 1
#: test images our chip differs from dlib's by 10.2 grey levels on average and its 68 points by 2.4 px.
DLIB_150x150 = np.array(
    [[46.75332531444557, 44.562474323437776], [99.67575468783721, 44.36907292894971],
     [72.62151292380709, 76.03569199604614], [49.373865770123786, 102.48882917132329],
     [96.74499796544201, 102.59402147162852]], dtype=np.float64,
)

TEMPLATES: dict[str, tuple[np.ndarray, tuple[int, int]]] = {
    "sphereface": (SPHEREFACE_112x96, (112, 96)),
    "arcface": (ARCFACE_112x112, (112, 112)),
    "dlib": (DLIB_150x150, (150, 150)),
}
#: Every template name a model card may use: the registry's and ``"none"`` (detected box resized, no warp).
TEMPLATE_NAMES: tuple[str, ...] = (*TEMPLATES, "none")


def template_points(name: str, height: int, width: int) -> np.ndarray | None:
    """The 5x2 float64 template ``name`` for a ``height`` x ``width`` crop; ``None`` for ``"none"``.

    The reference points are scaled uniformly by ``height / reference height`` and centred horizontally
    (``x' = (x - ref_w / 2) * s + width / 2``), so the reference size gives the reference points, multiples of
    it give scaled ones, and the SphereFace template asked for at 112x112 is the ArcFace one.
    """
    if name == "none":
        return None
    if name not in TEMPLATES:
        raise InputFormatError(f"unknown alignment template {name!r}; allowed: {', '.join(TEMPLATE_NAMES)}")
    if isinstance(height, bool) or isinstance(width, bool) or int(height) != height or int(width) != width \
            or height <= 0 or width <= 0:
        raise InputFormatError(f"crop size must be positive integers, got {height}x{width}")
    points, (ref_h, ref_w) = TEMPLATES[name]
    if (height, width) == (ref_h, ref_w):
        return points.astype(np.float64).copy()  # exactly the published numbers, no rounding on the way
    s = float(height) / ref_h
    out = points.astype(np.float64).copy()
    out[:, 0] = (out[:, 0] - ref_w / 2.0) * s + float(width) / 2.0
    out[:, 1] = out[:, 1] * s
    return out
