"""Task accuracy of every benchmarked configuration, beside fp32: what a faster precision costs.

* ``mnist`` (a trained checkpoint): top-1 on all 10,000 test digits; limit: within 0.002 of fp32.
* ``mobilefacenet`` (the published weights): LFW View 2 10-fold cosine accuracy on single-image features of
  the 7,701 pair images; limit: within 0.003 of fp32 for int8, 0.001 for bf16.
* ``pfe`` with a head trained by ``demo lfw``: the same cosine accuracy on ``mu`` plus the relative error of
  ``sigma_sq`` against fp32 (median and p99).

Models with random weights (sphere20/64) have no task accuracy; their rows rely on the cosine check only.
Each distinct numeric configuration (backend, precision, file) is evaluated once; peer defaults compute the
same numbers as faceembed's configuration with the same backend and precision.

The *task gate* (:func:`accuracy_gates`): on LFW, a reduced-precision configuration (int8, bf16) is also
measured in task terms, its 10-fold accuracy over the 6,000 pairs and its TAR at FAR 1e-3 (the threshold at
that FAR over every impostor pair among the 7,701 pair images, 29.6M of them, as ``faceembed calibrate``
measures a card's thresholds; 8,101 genuine pairs), both beside fp32's on the same inputs. A configuration the
per-face min-cosine gate rejects is still accurate when both are unchanged: accuracy within 0.001 and TAR within
0.005 of fp32's (:data:`TASK_GATE`; either way, up or down). The all-pairs scores cost about 2.5 s per
configuration on 2 cores beside the ~20 s its 7,701 faces take to embed. The int8 files are calibrated on 256
LFW faces, so a few of the 7,701 were calibration images (calibration only sets activation ranges).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from faceembed.inference.backends import run_batched

LIMITS = {"int8": {"mnist": 0.002, "lfw": 0.003}, "bf16": {"mnist": 0.001, "lfw": 0.001},
          "fp16": {"mnist": 0.001, "lfw": 0.001}, "fp32": {"mnist": 0.0005, "lfw": 0.0005}}
#: The task gate's tolerances (issue #27): LFW 10-fold accuracy and TAR at :data:`TASK_GATE_FAR`, either way.
TASK_GATE = {"accuracy": 0.001, "tar_at_far": 0.005}
TASK_GATE_FAR = 1e-3
_ROUNDING = 1e-9  # accuracies are multiples of 1/6000: a delta of exactly 0.001 must not fail by float noise


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
            self.people = [Path(n).parent.name for n in self.names]  # LFW: images/Person/Person_0001.jpg

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
        self.people = [Path(n).parent.name for n in self.names]

    def evaluate(self, backend) -> dict[str, Any] | None:
        """Accuracy (and sigma_sq for PFE) of ``backend`` on this task, or None without a task; on LFW also the
        TAR at :data:`TASK_GATE_FAR` over all pairs of the pair images (:func:`tar_at_far_all_pairs`)."""
        if self.kind is None:
            return None
        outputs = run_batched(backend, self.x)
        if self.kind == "mnist":
            return {"task": "MNIST top-1, 10,000 test digits",
                    "accuracy": float((outputs[0].argmax(1) == self.labels).mean()), "outputs": outputs}
        from faceembed.evaluation.verification import verify_features

        feats = dict(zip(self.names, outputs[0], strict=True))
        res = verify_features(self.pairs, feats, metric="cosine", flip_mode=None)
        return {"task": "LFW 10-fold cosine, single features", "accuracy": res.accuracy, "outputs": outputs,
                "tar_at_far": tar_at_far_all_pairs(outputs[0], self.people, TASK_GATE_FAR)}


def tar_at_far_all_pairs(embeddings: np.ndarray, people: list[str], far: float) -> dict[str, Any]:
    """TAR at ``far`` over every pair of ``embeddings`` (cosine; genuine: the same person), with the threshold
    at that FAR over all impostor pairs (:func:`faceembed.evaluation.thresholds.measure_thresholds`)."""
    from faceembed.evaluation.thresholds import all_pair_scores, measure_thresholds

    genuine, impostor = all_pair_scores(np.asarray(embeddings).reshape(len(embeddings), -1), people)
    m = measure_thresholds(genuine, impostor, (far,))
    at = m["at_far"][f"{far:g}"]
    return {"far_target": far, "tar": at["tar"], "far": at["far"], "threshold": at["threshold"],
            "genuine_pairs": m["genuine_pairs"], "impostor_pairs": m["impostor_pairs"]}


def compare_to_fp32(result: dict[str, Any], reference: dict[str, Any], precision: str) -> dict[str, Any]:
    """Accuracy beside fp32's, the allowed loss for ``precision``, and sigma_sq error when there is one."""
    limit = LIMITS.get(precision, LIMITS["fp32"])["mnist" if "MNIST" in result["task"] else "lfw"]
    out = {"task": result["task"], "accuracy": result["accuracy"], "fp32_accuracy": reference["accuracy"],
           "delta": result["accuracy"] - reference["accuracy"], "limit": limit,
           "task_ok": result["accuracy"] >= reference["accuracy"] - limit}
    if "tar_at_far" in result and "tar_at_far" in reference:
        far = result["tar_at_far"]["far_target"]
        out.update({"tar_far": far, "tar_at_far": result["tar_at_far"]["tar"],
                    "fp32_tar_at_far": reference["tar_at_far"]["tar"],
                    "tar_delta": result["tar_at_far"]["tar"] - reference["tar_at_far"]["tar"]})
    if len(result["outputs"]) > 1 and len(reference["outputs"]) > 1:  # PFE: sigma_sq
        a, b = result["outputs"][1].astype(np.float64), reference["outputs"][1].astype(np.float64)
        rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-12)
        out["sigma_sq_rel_error"] = {"median": float(np.median(rel)), "p99": float(np.percentile(rel, 99))}
    return out


def accuracy_gates(min_cosine_ok: bool, task: dict[str, Any] | None, precision: str) -> dict[str, Any]:
    """Whether a configuration counts as accurate, and by which gate.

    * ``min_cosine_gate``: ``min_cosine_ok`` (every checked row's cosine to fp32 >= 0.999, and top-1 agreement
      for classifiers), "pass" | "fail". It accepts the configuration together with the task's loss limit
      (:data:`LIMITS`, ``task["task_ok"]``) where a task is measured.
    * ``task_gate``: for a reduced precision (not fp32) with LFW figures (``task`` from :func:`compare_to_fp32`
      with ``tar_delta``): "pass" when accuracy and TAR at FAR are both unchanged within :data:`TASK_GATE`,
      else "fail"; "n/a" without them.

    Returns both, ``accuracy_ok`` (either route accepts) and ``accurate_by``: "min_cosine", "task",
    "min_cosine+task" or None."""
    task_gate = "n/a"
    if task is not None and "tar_delta" in task and precision != "fp32":
        unchanged = (abs(task["delta"]) <= TASK_GATE["accuracy"] + _ROUNDING
                     and abs(task["tar_delta"]) <= TASK_GATE["tar_at_far"] + _ROUNDING)
        task_gate = "pass" if unchanged else "fail"
    by_cosine = bool(min_cosine_ok) and (task is None or bool(task["task_ok"]))
    routes = [name for name, ok in (("min_cosine", by_cosine), ("task", task_gate == "pass")) if ok]
    return {"min_cosine_gate": "pass" if min_cosine_ok else "fail", "task_gate": task_gate,
            "accuracy_ok": bool(routes), "accurate_by": "+".join(routes) or None}
