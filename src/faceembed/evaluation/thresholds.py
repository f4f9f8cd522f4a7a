"""Similarity thresholds at a false-accept rate: the answer to "what threshold do I use?" measured on a named
data set instead of a fixed constant (face_recognition's 0.6, deepface's table)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from faceembed.errors import InputFormatError
from faceembed.evaluation.verification import best_threshold

FARS = (1e-2, 1e-3, 1e-4)


def all_pair_scores(embeddings: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of every genuine and every impostor pair (i < j) of unit ``embeddings`` ``[N, D]``."""
    e = np.asarray(embeddings, np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    lab = np.asarray(labels)
    genuine, impostor = [], []
    for start in range(0, len(e), 1024):  # row blocks: memory stays O(1024 N)
        block = e[start:start + 1024] @ e.T
        rows = np.arange(start, min(start + 1024, len(e)))[:, None]
        upper = np.arange(len(e))[None, :] > rows
        same = lab[rows] == lab[None, :]
        genuine.append(block[upper & same])
        impostor.append(block[upper & ~same].astype(np.float32))
    return np.concatenate(genuine), np.concatenate(impostor)


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """The lowest threshold ``t`` with at most ``far`` of the impostor scores ``>= t`` (decisions are
    ``score >= t``)."""
    s = np.sort(np.asarray(impostor, np.float64))
    allowed = math.floor(far * len(s))  # impostor scores that may reach the threshold
    if allowed >= len(s):
        return float(s[0])
    above = s[len(s) - allowed - 1]  # the highest score that must stay below the threshold
    return float(np.nextafter(above, np.inf))


def measure_thresholds(genuine: np.ndarray, impostor: np.ndarray, fars: Sequence[float] = FARS,
                       scores: np.ndarray | None = None, same: np.ndarray | None = None) -> dict[str, Any]:
    """Thresholds at each FAR with the TAR and FAR they reach on these pairs; ``resolved`` is False where
    there are fewer than 10 impostor pairs at that rate (the threshold is then the edge of the data, not a
    measurement). With ``scores`` / ``same`` (e.g. LFW's 6,000 pairs) also the accuracy-optimal threshold."""
    if len(impostor) == 0 or len(genuine) == 0:
        raise InputFormatError("thresholds need both genuine and impostor pairs")
    g, i = np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)
    rows = {}
    for far in fars:
        t = threshold_at_far(i, far)
        rows[f"{far:g}"] = {"threshold": t, "tar": float((g >= t).mean()), "far": float((i >= t).mean()),
                            "resolved": far * len(i) >= 10}
    out: dict[str, Any] = {"genuine_pairs": int(len(g)), "impostor_pairs": int(len(i)), "at_far": rows}
    if scores is not None and same is not None:
        t, acc = best_threshold(scores, same)
        out["best_accuracy"] = {"threshold": float(t), "accuracy": float(acc)}
    return out
