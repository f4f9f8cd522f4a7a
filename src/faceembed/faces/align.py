"""5-point face alignment as SphereFace and PFE do it: a similarity transform onto a fixed template.

The transform is a non-reflective similarity ``[a -b tx; b a ty]`` fitted by linear least squares.
``method="forward"`` (default) fits image -> template directly: the closed-form Umeyama solution without
reflection, as ``skimage``'s ``SimilarityTransform`` and ``cv2.estimateAffinePartial2D`` (on exact data).
``method="cp2tform"`` is MATLAB's ``cp2tform(src, dst, 'similarity')`` as SphereFace's PyTorch port
(``matlab_cp2tform.get_similarity_transform_for_cv2``) computes it: the least-squares fit *from the
template to the image*, inverted (cp2tform also tries a mirrored fit, which never wins on real faces, so it
is left out). The two differ only through landmark noise; on LFW with MobileFaceNet they give 99.18% and
99.10% (flip-concat, mean subtraction), the published figure being 99.20%. The warp is
``cv2.warpAffine`` with ``INTER_LINEAR`` and a constant 0 border, the call SphereFace's ``alignment()``
makes with OpenCV's defaults.
"""

from __future__ import annotations

import os
from typing import Literal

import cv2
import numpy as np

from faceembed.data.images import read_image_rgb
from faceembed.errors import InputFormatError

SimilarityMethod = Literal["forward", "cp2tform"]

#: SphereFace / PFE template in a 96-wide, 112-high crop: eyes, nose tip, mouth corners, as (x, y).
REFERENCE_112x96 = np.array(
    [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655], [62.7299, 92.2041]],
    dtype=np.float64,
)
#: The same template centred in a 112x112 crop (every x shifted by +8).
REFERENCE_112x112 = REFERENCE_112x96 + np.array([8.0, 0.0])

#: Mean of LFW's ``lfw_landmark.txt`` points as fractions of the 250x250 image: the fallback "face" for
#: images without landmarks.
MEAN_LFW_LANDMARKS_FRACTION = np.array(
    [[104.67, 112.49], [145.09, 111.73], [124.85, 136.51], [107.60, 157.14], [143.56, 156.73]]
) / 250.0


#: Where MTCNN's 5 landmarks sit in its face box, as (x, y) fractions of the box: the mean over 600 LFW View 1
#: training images (``python scripts/box_landmarks.py``; spread 0.03 in y, 0.08-0.14 in x). A photo that is
#: already a face crop (``--detector none``, ``--no-face whole``) is aligned as if these were its landmarks.
FACE_BOX_LANDMARKS = np.array([[0.2788, 0.3854], [0.7295, 0.3795], [0.5039, 0.5789], [0.3096, 0.7526],
                               [0.7117, 0.7478]])
#: A landmark value meaning "the whole image is the face" (see :data:`FACE_BOX_LANDMARKS`).
WHOLE_IMAGE = "whole"


def whole_image_landmarks(height: int, width: int) -> np.ndarray:
    """The landmarks assumed for an image that is a face crop: :data:`FACE_BOX_LANDMARKS` scaled to it."""
    return FACE_BOX_LANDMARKS * np.array([width, height], dtype=np.float64)


def reference_points(size: tuple[int, int] = (112, 96), template: str | None = None) -> np.ndarray:
    """The 5-point template for an output of ``size = (height, width)``.

    With ``template`` (a model card's: ``sphereface``, ``arcface``, ``dlib``, ``none``) the named template scaled
    to ``size`` (``none``: where MTCNN's landmarks sit in its face box, so the crop is the face box). Without,
    ``(112, 96)`` is the published template, square sizes use the 112x112 variant; other sizes with the
    112:96 or 1:1 aspect ratio are scaled from these.
    """
    if template is not None:
        from faceembed.data.templates import template_points

        if template == "none":
            return FACE_BOX_LANDMARKS * np.array([size[1], size[0]], dtype=np.float64)
        return template_points(template, int(size[0]), int(size[1]))
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if h * 96 == w * 112:
        return REFERENCE_112x96 * (h / 112.0)
    if h == w:
        return REFERENCE_112x112 * (h / 112.0)
    raise ValueError(f"no template for size {size}: use (112, 96), (112, 112) or a multiple")


def _lstsq_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares ``[a -b tx; b a ty]`` (3x3 homogeneous) mapping ``src`` onto ``dst`` (closed form)."""
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - ms, dst - md
    denom = float((s * s).sum())
    if denom <= 1e-12:
        raise InputFormatError("landmarks are degenerate (all points coincide)")
    a = float((s * d).sum()) / denom
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / denom
    tx = md[0] - (a * ms[0] - b * ms[1])
    ty = md[1] - (b * ms[0] + a * ms[1])
    return np.array([[a, -b, tx], [b, a, ty], [0.0, 0.0, 1.0]])


def similarity_transform(
    src: np.ndarray, dst: np.ndarray, method: SimilarityMethod = "forward"
) -> np.ndarray:
    """2x3 non-reflective similarity (for ``cv2.warpAffine``) taking points ``src`` (N,2) onto ``dst`` (N,2).

    ``"forward"`` (default) fits ``src -> dst`` by least squares; ``method="cp2tform"`` (SphereFace's
    port of MATLAB) fits ``dst -> src`` by least squares and inverts it. Both are exact on noise-free data.
    """
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 2 or s.shape != d.shape or s.shape[0] < 2:
        raise ValueError(f"src and dst must both be (N>=2, 2), got {s.shape} and {d.shape}")
    if not (np.isfinite(s).all() and np.isfinite(d).all()):
        raise InputFormatError("landmarks are not finite")
    if method == "forward":
        m = _lstsq_similarity(s, d)
    elif method == "cp2tform":
        m = _lstsq_similarity(d, s)
    else:
        raise ValueError(f"method must be 'cp2tform' or 'forward', got {method!r}")
    if abs(np.linalg.det(m[:2, :2])) <= 1e-12:
        raise InputFormatError("landmarks are degenerate (all points coincide)")
    if method == "cp2tform":
        m = np.linalg.inv(m)
    return m[:2].copy()


def align_face(
    image: np.ndarray,
    landmarks: np.ndarray | str,
    size: tuple[int, int] = (112, 96),
    method: SimilarityMethod = "forward",
    template: str | None = None,
) -> np.ndarray:
    """Warp ``image`` (uint8 HxWx3) so its 5 ``landmarks`` (5,2 as x,y; :data:`WHOLE_IMAGE`: the image is a face
    crop) land on the template of ``size`` (see :func:`reference_points` for ``template`` and
    :func:`similarity_transform` for ``method``). Returns ``uint8 (size[0], size[1], 3)``.
    """
    if isinstance(landmarks, str):
        landmarks = whole_image_landmarks(*image.shape[:2])
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    m = similarity_transform(pts, reference_points(size, template), method)
    return cv2.warpAffine(
        image, m, (int(size[1]), int(size[0])), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


def center_crop_fallback(image: np.ndarray, size: tuple[int, int] = (112, 96), template: str | None = None
                         ) -> np.ndarray:
    """Crop for an image without landmarks: scale and shift (no rotation) mapping the *average* LFW face
    (mean landmark positions, relative to the image size) onto the template, i.e. a fixed centred crop.

    Good for LFW-like loosely centred photos; for anything else, detect landmarks first.
    """
    h, w = image.shape[:2]
    src = MEAN_LFW_LANDMARKS_FRACTION * np.array([w, h], dtype=np.float64)
    dst = reference_points(size, template)
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    scale = float(((src - ms) * (dst - md)).sum() / ((src - ms) ** 2).sum())
    t = md - scale * ms
    m = np.array([[scale, 0.0, t[0]], [0.0, scale, t[1]]])
    return cv2.warpAffine(
        image, m, (int(size[1]), int(size[0])), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


def align_path(
    image_root: str, rel: str, lm: np.ndarray | str | None, size: tuple[int, int], method: SimilarityMethod,
    template: str | None = None,
) -> tuple[np.ndarray, bool]:
    """Read and align one image; returns ``(aligned, used_fallback)``."""
    img = read_image_rgb(os.path.join(image_root, rel))
    if lm is None:
        return center_crop_fallback(img, size, template), True
    return align_face(img, lm, size, method, template), False
