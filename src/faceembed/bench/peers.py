"""Peer runtimes beyond PyTorch / ONNX Runtime / OpenVINO defaults: dlib's own runtime for the dlib ResNet, what
face_recognition users run (``dlib-bin``; a dev / CI dependency, the row is skipped with a reason without it)."""

from __future__ import annotations

import numpy as np

from faceembed.errors import BackendUnavailableError
from faceembed.inference.backends import check_batch


class DlibPeer:
    """``dlib.face_recognition_model_v1(...).compute_face_descriptor`` on a batch of 150x150 chips, as a
    benchmark backend. Inputs are the converted model's (RGB NHWC pixels / 256): they are turned back into the
    uint8 chips dlib takes, so both run the same faces."""

    name = "dlib"
    precision = "fp32"
    input_name = "input"
    output_names = ["embedding"]
    item_shape = (150, 150, 3)
    output_item_shapes = [(128,)]
    fixed_batch = None

    def __init__(self, threads: int | None = None):
        try:
            import dlib
        except ImportError:
            raise BackendUnavailableError("dlib is not installed (pip install dlib-bin): no dlib peer row") from None
        from faceembed.models.dlib_weights import dlib_model_path

        self._net = dlib.face_recognition_model_v1(str(dlib_model_path()))

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        chips = np.clip(np.rint(check_batch(batch, self.item_shape) * 256.0), 0, 255).astype(np.uint8)
        out = self._net.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
        return [np.asarray([np.asarray(v, np.float32) for v in out], np.float32).reshape(len(chips), 128)]
