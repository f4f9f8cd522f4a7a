"""Face verification metrics: LFW 10-fold accuracy, ROC, AUC, EER, TAR@FAR, and features -> pair scores.

Decision rule everywhere: a pair is predicted "same person" when its score is strictly above the threshold
(:func:`ten_fold_accuracy`) or at least the threshold (:func:`roc`, the usual ROC convention).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from faceembed.data.lfw import Pair
from faceembed.errors import InputFormatError, NonFiniteError, ShapeMismatchError
from faceembed.evaluation.scores import mls_scores

FAR_TARGETS: tuple[float, ...] = (1e-2, 1e-3)


def _check(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(same).reshape(-1).astype(bool)
    if s.shape != y.shape:
        raise ShapeMismatchError(f"{s.size} scores but {y.size} labels")
    if s.size == 0:
        raise ShapeMismatchError("no scores")
    if not np.isfinite(s).all():
        raise NonFiniteError("scores contain NaN or Inf")
    return s, y


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """Threshold maximising accuracy of ``score > threshold`` on this set, and that accuracy.

    Candidates: midpoints between consecutive distinct scores, plus one below the minimum and one above
    the maximum; the lowest best candidate wins ties. O(n log n): one sort and cumulative sums.
    """
    s, y = _check(scores, same)
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    n = s.size
    pos_below = np.concatenate(([0], np.cumsum(y)))
    neg_below = np.arange(n + 1) - pos_below
    correct = neg_below + (pos_below[-1] - pos_below)  # threshold between s[i-1] and s[i], i = 0..n
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = s[1:] > s[:-1]
    i = int(np.argmax(np.where(valid, correct, -1)))
    if i == 0:
        thr = s[0] - 1.0
    elif i == n:
        thr = s[-1] + 1.0
    else:
        thr = 0.5 * (s[i - 1] + s[i])
    return float(thr), float(correct[i]) / n


def ten_fold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict[str, Any]:
    """Cross-validated accuracy: for each fold, the threshold is chosen on all the other folds.

    Returns ``{"mean", "std" (population), "per_fold", "thresholds", "folds", "cross_validated"}``. With a
    single fold (View 1 files) the threshold is fitted on the same pairs (``cross_validated`` False:
    optimistic).
    """
    s, y = _check(scores, same)
    f = np.asarray(folds).reshape(-1)
    if f.shape != s.shape:
        raise ShapeMismatchError(f"{s.size} scores but {f.size} fold labels")
    labels = np.unique(f)
    accs, thrs = [], []
    for k in labels:
        test = f == k
        train = ~test if labels.size > 1 else test
        thr, _ = best_threshold(s[train], y[train])
        accs.append(float(((s[test] > thr) == y[test]).mean()))
        thrs.append(thr)
    return {
        "mean": float(np.mean(accs)),
        "std": float(np.std(accs)),
        "per_fold": accs,
        "thresholds": thrs,
        "folds": [int(k) for k in labels],
        "cross_validated": bool(labels.size > 1),
    }


def roc(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve: ``(far, tar, thresholds)``, one point per distinct score (predict same if score >= t),
    starting at (0, 0) with threshold +inf. Needs both classes."""
    s, y = _check(scores, same)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ShapeMismatchError("ROC needs both same and different pairs")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.concatenate((np.nonzero(s[1:] != s[:-1])[0], [s.size - 1]))  # last index of each value
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    far = np.concatenate(([0.0], fp / n_neg))
    tar = np.concatenate(([0.0], tp / n_pos))
    return far, tar, np.concatenate(([np.inf], s[last]))


def auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids; equals the Mann-Whitney statistic with ties counted 1/2)."""
    far, tar, _ = roc(scores, same)
    return float(np.trapezoid(tar, far))


def eer(scores: np.ndarray, same: np.ndarray) -> float:
    """Equal error rate: where FAR = 1 - TAR, linearly interpolated along the ROC curve."""
    far, tar, _ = roc(scores, same)
    d = far - (1.0 - tar)  # increasing from -1 to +1
    i = int(np.argmax(d >= 0))
    if i == 0 or d[i] == 0:
        return float(far[i])
    t = -d[i - 1] / (d[i] - d[i - 1])
    return float(far[i - 1] + t * (far[i] - far[i - 1]))


def tar_at_far(scores: np.ndarray, same: np.ndarray, far_target: float) -> float:
    """Highest TAR among ROC points whose FAR is at most ``far_target``."""
    far, tar, _ = roc(scores, same)
    return float(tar[far <= far_target + 1e-12].max())


@dataclass
class VerificationResult:
    """Accuracy (10-fold), ROC summaries, and the raw pair scores."""

    metric: str
    accuracy: float
    accuracy_std: float
    fold_accuracies: list[float]
    thresholds: list[float]
    auc: float
    eer: float
    tar_at_far: dict[str, float]
    cross_validated: bool
    scores: np.ndarray = field(repr=False)
    same: np.ndarray = field(repr=False)
    folds: np.ndarray = field(repr=False)

    def to_dict(self, include_scores: bool = False) -> dict[str, Any]:
        """JSON-ready dict (scores only when asked)."""
        out: dict[str, Any] = {
            "metric": self.metric, "pairs": int(self.scores.size), "accuracy": self.accuracy,
            "accuracy_std": self.accuracy_std, "fold_accuracies": self.fold_accuracies,
            "thresholds": self.thresholds, "auc": self.auc, "eer": self.eer, "tar_at_far": self.tar_at_far,
            "cross_validated": self.cross_validated,
        }
        if include_scores:
            out["scores"] = self.scores.tolist()
            out["same"] = self.same.astype(int).tolist()
            out["folds"] = self.folds.tolist()
        return out


def _index_pairs(pairs: Sequence[Pair]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Unique image paths named by ``pairs`` (first-seen order) and each pair's two rows into that list."""
    index: dict[str, int] = {}
    i1 = np.fromiter((index.setdefault(p.relpath1, len(index)) for p in pairs), np.int64, len(pairs))
    i2 = np.fromiter((index.setdefault(p.relpath2, len(index)) for p in pairs), np.int64, len(pairs))
    return list(index), i1, i2


def _matrix(rels: list[str], pairs: Sequence[Pair], table: Mapping[str, np.ndarray], what: str) -> np.ndarray:
    """Stack ``table[rel]`` for every ``rel`` as float64 rows; a missing or non-finite vector raises."""
    missing = [r for r in rels if r not in table]
    if missing:
        where = next(n for n, p in enumerate(pairs) if missing[0] in (p.relpath1, p.relpath2))
        raise InputFormatError(
            f"no {what} for image {missing[0]} (pair {where + 1}, fold {pairs[where].fold})"
            + (f" and {len(missing) - 1} other image(s)" if len(missing) > 1 else "")
        )
    rows = [np.asarray(table[r]) for r in rels]
    dims = {r.size for r in rows}
    if len(dims) != 1:
        raise ShapeMismatchError(f"{what} vectors have different lengths: {sorted(dims)}")
    m = np.stack([r.reshape(-1) for r in rows]).astype(np.float64)
    if not np.isfinite(m).all():
        bad = [rels[j] for j in np.nonzero(~np.isfinite(m).all(axis=1))[0]]
        raise NonFiniteError(f"{what} of {len(bad)} image(s) contain NaN or Inf, e.g. {bad[0]}")
    return m


def _cosine_pairs(feats: np.ndarray, i1: np.ndarray, i2: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
    """Cosine of rows ``i1`` and ``i2`` of ``feats``, optionally after subtracting, for the pairs of each
    fold, the mean of both features of every pair of the other folds.

    Works on dot products of the unique images (``(a-m).(b-m) = a.b - m.a - m.b + m.m``) so that only one
    pass over the gathered pairs is needed.
    """
    n, u = i1.size, feats.shape[0]
    ab = np.empty(n)
    for s in range(0, n, 2048):  # chunked gather: stays in cache, no large temporaries
        ab[s:s + 2048] = np.einsum("ij,ij->i", feats[i1[s:s + 2048]], feats[i2[s:s + 2048]])
    sq = np.einsum("ij,ij->i", feats, feats)
    if folds is None:
        num, n1, n2 = ab, sq[i1], sq[i2]
    else:
        labels, inv = np.unique(folds, return_inverse=True)
        k = labels.size
        occurrences = np.bincount(np.concatenate([inv * u + i1, inv * u + i2]), minlength=k * u)
        occ = occurrences.reshape(k, u).astype(np.float64)  # occ[f, j]: uses of image j by fold f's pairs
        if k > 1:
            occ = occ.sum(axis=0, keepdims=True) - occ  # the other folds
        # einsum's own loops, not BLAS: multithreaded BLAS stalls on tiny products when cores are busy
        means = np.einsum("fj,jd->fd", occ, feats) / occ.sum(axis=1, keepdims=True)
        g = np.einsum("jd,fd->jf", feats, means)  # every image against every fold's mean
        mm = np.einsum("ij,ij->i", means, means)[inv]
        g1, g2 = g[i1, inv], g[i2, inv]
        num = ab - g1 - g2 + mm
        n1, n2 = sq[i1] - 2 * g1 + mm, sq[i2] - 2 * g2 + mm
    return num / np.sqrt(np.maximum(n1, 1e-24) * np.maximum(n2, 1e-24))


def verify_features(
    pairs: Sequence[Pair],
    features: Mapping[str, np.ndarray],
    sigma_sq: Mapping[str, np.ndarray] | None = None,
    metric: Literal["cosine", "mls"] = "cosine",
    flip_features: Mapping[str, np.ndarray] | None = None,
    flip_mode: Literal["concat", "mean"] | None = "concat",
    mean_subtract: bool = False,
) -> VerificationResult:
    """Score every pair from per-image features (``relpath -> vector``) and evaluate.

    * ``metric="cosine"``: cosine similarity (PFE's negative squared distance of normalised features ranks
      the same). With ``flip_features`` and ``flip_mode`` "concat" or "mean", each image's feature is
      joined with its mirror's (``flip_mode=None`` ignores the flips).
    * ``mean_subtract``: for each test fold, the mean of the features of all images of the *other* folds'
      pairs (each pair contributing both of its features) is subtracted before the cosine, as the
      SphereFace / MobileFaceNet LFW scripts do. Features are not normalised before that.
    * ``metric="mls"``: mutual likelihood score, needs ``sigma_sq``.

    Raises:
        InputFormatError: a pair names an image with no feature.
        NonFiniteError: a feature contains NaN or Inf.
    """
    if not pairs:
        raise InputFormatError("no pairs to verify")
    same = np.fromiter((p.same for p in pairs), dtype=bool, count=len(pairs))
    folds = np.fromiter((p.fold for p in pairs), dtype=np.int64, count=len(pairs))
    rels, i1, i2 = _index_pairs(pairs)
    feats = _matrix(rels, pairs, features, "feature")
    if metric == "mls":
        if sigma_sq is None:
            raise ValueError("metric='mls' needs sigma_sq")
        if mean_subtract or flip_features is not None:
            raise ValueError("mean subtraction and flips apply to the cosine metric only")
        var = _matrix(rels, pairs, sigma_sq, "sigma_sq")
        if var.shape != feats.shape:
            raise ShapeMismatchError(f"sigma_sq has shape {var.shape[1:]}, features {feats.shape[1:]}")
        scores = mls_scores(feats[i1], var[i1], feats[i2], var[i2])
    elif metric == "cosine":
        if flip_features is not None and flip_mode is not None:
            flips = _matrix(rels, pairs, flip_features, "flip feature")
            if flips.shape != feats.shape:
                raise ShapeMismatchError("flip features must have the same size as the features")
            if flip_mode == "concat":
                feats = np.concatenate([feats, flips], axis=1)
            elif flip_mode == "mean":
                feats = 0.5 * (feats + flips)
            else:
                raise ValueError(f"flip_mode must be 'concat', 'mean' or None, got {flip_mode!r}")
        scores = _cosine_pairs(feats, i1, i2, folds if mean_subtract else None)
    else:
        raise ValueError(f"metric must be 'cosine' or 'mls', got {metric!r}")
    acc = ten_fold_accuracy(scores, same, folds)
    both = bool(same.any() and (~same).any())
    return VerificationResult(
        metric=metric,
        accuracy=acc["mean"],
        accuracy_std=acc["std"],
        fold_accuracies=acc["per_fold"],
        thresholds=acc["thresholds"],
        auc=auc(scores, same) if both else float("nan"),
        eer=eer(scores, same) if both else float("nan"),
        tar_at_far={f"{t:g}": tar_at_far(scores, same, t) for t in FAR_TARGETS} if both else {},
        cross_validated=acc["cross_validated"],
        scores=scores,
        same=same,
        folds=folds,
    )
