"""Task accuracy of every benchmarked configuration, beside fp32: what a faster precision costs.

* ``mnist`` (a trained checkpoint): top-1 on all 10,000 test digits; limit: within 0.002 of fp32.
* ``mobilefacenet`` (the published weights): LFW View 2 10-fold cosine accuracy on single-image features of
  the 7,701 pair images; limit: within 0.003 of fp32 for int8, 0.001 for bf16.
* ``pfe`` with a head trained by ``demo lfw``: the same cosine accuracy on ``mu`` plus the relative error of
  ``sigma_sq`` against fp32 (median and p99).

Models with random weights (sphere20/64) have no task accuracy; their rows rely on the cosine check only.
Each distinct numeric configuration (backend, precision, file) is evaluated once; peer defaults compute the
same numbers as faceembed's configuration with the same backend and precision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from faceembed.inference.backends import run_batched

LIMITS = {"int8": {"mnist": 0.002, "lfw": 0.003}, "bf16": {"mnist": 0.001, "lfw": 0.001},
          "fp16": {"mnist": 0.001, "lfw": 0.001}, "fp32": {"mnist": 0.0005, "lfw": 0.0005}}


class TaskData:
    """The real evaluation inputs of one model, loaded once."""

    def __init__(self, model: str, data: Path | None, trained: bool, card=None):
        """``card``: a model file's card (``bench --models PATH``): LFW faces aligned and preprocessed per it."""
        self.kind = None
        if not trained:
            return
        if card is not None:
            self._lfw_for_card(card, data)
        elif model == "mnist":
            from faceembed.batch.tobin import mnist_tensors

            self.x, self.labels, _ = mnist_tensors("test")
            self.kind = "mnist"
        elif model in ("mobilefacenet", "pfe") and data and (Path(data) / "lfw" / "pairs.txt").is_file():
            from faceembed.batch.tobin import face_tensors
            from faceembed.data.lfw import pair_images, read_landmarks, read_pairs
            from faceembed.faces.align_files import align_images_in_memory

            lfw = Path(data) / "lfw"
            self.pairs = read_pairs(lfw / "pairs.txt")
            self.names = pair_images(self.pairs)
            faces = align_images_in_memory(lfw / "images", read_landmarks(lfw / "lfw_landmark.txt"), self.names)
            self.x = face_tensors(faces)
            self.kind = "lfw"

    def _lfw_for_card(self, card, data: Path | None) -> None:
        if card.template == "none" or not data or not (Path(data) / "lfw" / "pairs.txt").is_file():
            return
        from faceembed.data.lfw import pair_images, read_landmarks, read_pairs
        from faceembed.data.preprocess import preprocess
        from faceembed.faces.align_files import align_images_in_memory

        lfw = Path(data) / "lfw"
        self.pairs = read_pairs(lfw / "pairs.txt")
        self.names = pair_images(self.pairs)
        faces = align_images_in_memory(lfw / "images", read_landmarks(lfw / "lfw_landmark.txt"), self.names,
                                       size=(card.height, card.width), template=card.template)
        self.x = preprocess(faces, card)
        self.kind = "lfw"

    def evaluate(self, backend) -> dict[str, Any] | None:
        """Accuracy (and sigma_sq for PFE) of ``backend`` on this task, or None without a task."""
        if self.kind is None:
            return None
        outputs = run_batched(backend, self.x)
        if self.kind == "mnist":
            return {"task": "MNIST top-1, 10,000 test digits",
                    "accuracy": float((outputs[0].argmax(1) == self.labels).mean()), "outputs": outputs}
        from faceembed.evaluation.verification import verify_features

        feats = dict(zip(self.names, outputs[0], strict=True))
        res = verify_features(self.pairs, feats, metric="cosine", flip_mode=None)
        return {"task": "LFW 10-fold cosine, single features", "accuracy": res.accuracy, "outputs": outputs}


def compare_to_fp32(result: dict[str, Any], reference: dict[str, Any], precision: str) -> dict[str, Any]:
    """Accuracy beside fp32's, the allowed loss for ``precision``, and sigma_sq error when there is one."""
    limit = LIMITS.get(precision, LIMITS["fp32"])["mnist" if "MNIST" in result["task"] else "lfw"]
    out = {"task": result["task"], "accuracy": result["accuracy"], "fp32_accuracy": reference["accuracy"],
           "delta": result["accuracy"] - reference["accuracy"], "limit": limit,
           "task_ok": result["accuracy"] >= reference["accuracy"] - limit}
    if len(result["outputs"]) > 1 and len(reference["outputs"]) > 1:  # PFE: sigma_sq
        a, b = result["outputs"][1].astype(np.float64), reference["outputs"][1].astype(np.float64)
        rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-12)
        out["sigma_sq_rel_error"] = {"median": float(np.median(rel)), "p99": float(np.percentile(rel, 99))}
    return out
