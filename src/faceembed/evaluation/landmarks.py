"""Landmark accuracy: detected 5-point landmarks against a reference file, normalised by the eye distance."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from faceembed.errors import InputFormatError


def interocular(landmarks: np.ndarray) -> np.ndarray:
    """Distance between the two eye landmarks of ``[N, 5, 2]`` points."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.hypot(lm[:, 0, 0] - lm[:, 1, 0], lm[:, 0, 1] - lm[:, 1, 1])


def mean_normalised_distance(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per face: mean over the 5 points of ``|pred - ref|`` divided by the reference inter-ocular distance."""
    p = np.asarray(pred, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    d = np.hypot(*(p - r).transpose(2, 0, 1)).mean(axis=1)
    return d / np.maximum(interocular(r), 1e-9)


def compare_to_reference(landmarks: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                         relpaths: Sequence[str] | None = None) -> dict:
    """Detected vs reference landmarks on the images both have: mean / median / p95 of the per-face mean point
    distance divided by the reference inter-ocular distance, mean pixel distance, and the detection rate
    over ``relpaths`` (default: the reference's images)."""
    common = [r for r in landmarks if r in reference]
    if not common:
        raise InputFormatError("no image is in both the detections and the reference landmarks")
    pred = np.stack([landmarks[r] for r in common])
    ref = np.stack([reference[r] for r in common])
    d = mean_normalised_distance(pred, ref)
    px = np.hypot(*(pred.astype(np.float64) - ref).transpose(2, 0, 1)).mean(axis=1)
    universe = list(relpaths) if relpaths is not None else list(reference)
    return {"compared": len(common), "mean_normalised_distance": float(d.mean()),
            "median_normalised_distance": float(np.median(d)), "p95_normalised_distance": float(np.quantile(d, 0.95)),
            "faces_over_0.1": int((d > 0.1).sum()), "mean_pixel_distance": float(px.mean()),
            "detection_rate": sum(1 for r in universe if r in landmarks) / max(1, len(universe))}
