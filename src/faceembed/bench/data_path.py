"""The data path around the model, timed for ``faceembed bench``: LFW alignment + preprocessing of every
image with all cores (JPEG decode, 5-point similarity warp, float32 NHWC tensor), and 10-fold verification
of the 6,000 View 2 pairs (cosine, and cosine with flip + mean subtraction).

Verification time does not depend on the feature values, so it is timed on fixed pseudo-random unit
features of the model's size (128-d); accuracy figures come from ``demo lfw``, not from here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def time_alignment(lfw_root: Path, workers: int | None = None) -> dict[str, Any]:
    """Align and preprocess every LFW image in memory; images per second with ``workers`` processes."""
    from faceembed.batch.tobin import face_tensors
    from faceembed.data.lfw import list_lfw_images, read_landmarks
    from faceembed.faces.align_files import align_images_in_memory

    workers = workers or os.cpu_count() or 1
    names = list_lfw_images(lfw_root / "images")
    marks = read_landmarks(lfw_root / "lfw_landmark.txt")
    t0 = time.perf_counter()
    faces = align_images_in_memory(lfw_root / "images", marks, names, workers=workers, progress=False)
    t1 = time.perf_counter()
    x = face_tensors(faces)
    t2 = time.perf_counter()
    return {"images": len(x), "workers": workers, "align_s": t1 - t0, "preprocess_s": t2 - t1,
            "seconds": t2 - t0, "images_per_s": len(x) / (t2 - t0)}


def time_verification(lfw_root: Path, dim: int = 128, repeats: int = 3) -> dict[str, Any]:
    """Best-of-``repeats`` seconds to verify all View 2 pairs, 10-fold, plain and with flip + mean-sub."""
    from faceembed.data.lfw import pair_images, read_pairs
    from faceembed.evaluation.verification import verify_features

    pairs = read_pairs(lfw_root / "pairs.txt")
    names = pair_images(pairs)
    rng = np.random.default_rng(0)

    def unit(n: int) -> np.ndarray:
        v = rng.standard_normal((n, dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    feats, flips = dict(zip(names, unit(len(names)), strict=True)), dict(zip(names, unit(len(names)), strict=True))

    def best_of(**kwargs) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            verify_features(pairs, feats, metric="cosine", **kwargs)
            times.append(time.perf_counter() - t0)
        return min(times)

    return {"pairs": len(pairs), "folds": len({p.fold for p in pairs}), "seconds": best_of(flip_mode=None),
            "seconds_flip_meansub": best_of(flip_features=flips, flip_mode="concat", mean_subtract=True)}


def time_data_path(data: Path | None, workers: int | None = None) -> dict[str, Any] | None:
    """Both timings when LFW is under ``data``; None otherwise."""
    if data is None or not (Path(data) / "lfw" / "pairs.txt").is_file():
        return None
    lfw = Path(data) / "lfw"
    return {"align_preprocess": time_alignment(lfw, workers), "verify": time_verification(lfw)}
