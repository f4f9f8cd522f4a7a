"""Risk-controlled verification: PFE uncertainty as a face-quality signal, and error-versus-reject curves.

Probabilistic Face Embeddings (Shi & Jain, "Probabilistic Face Embeddings", ICCV 2019) give each face a
Gaussian ``N(mu, diag(sigma^2))``. The paper's risk-controlled recognition experiment uses the variance as a
quality measure: the faces (here: pairs) with the highest uncertainty are rejected and the
accuracy on the rest is reported as a function of the fraction rejected. A good uncertainty makes the error
fall faster than rejecting at random.

Conventions: uncertainties are "higher = worse" and are what :func:`rejection_curve` drops first;
qualities (:func:`face_quality`) are "higher = better" and a face is kept when its quality is at least the
``--min-quality`` value ``Q``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from faceembed.errors import NonFiniteError, ShapeMismatchError
from faceembed.evaluation.verification import tar_at_far, ten_fold_accuracy
from faceembed.models.card import Quality

DEFAULT_FRACTIONS: tuple[float, ...] = (0.0, 0.01, 0.05, 0.1, 0.2)
CARD_REJECT_FRACTIONS: tuple[float, ...] = (0.05, 0.1, 0.2)


def face_uncertainty(sigma_sq: np.ndarray) -> np.ndarray:
    """Scalar uncertainty of each face: the harmonic mean of its sigma^2 over the D dimensions, (N, D) -> (N,).

    ``u = D / sum_d 1 / sigma_d^2``, the summary of a PFE variance vector used by Shi & Jain (ICCV 2019) for
    risk-controlled recognition. The harmonic mean is the variance of the equal-weight precision average, so
    it is dominated by the confident dimensions and not blown up by a few saturated ones.
    """
    v = np.asarray(sigma_sq, dtype=np.float64)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.shape[1] == 0:
        raise ShapeMismatchError(f"sigma_sq must be (N, D) with D >= 1, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise NonFiniteError("sigma_sq contains NaN or Inf")
    if (v <= 0).any():
        raise NonFiniteError("sigma_sq must be > 0")
    return v.shape[1] / (1.0 / v).sum(axis=1)


def pair_uncertainty(
    sigma_sq_a: np.ndarray, sigma_sq_b: np.ndarray, combine: Literal["max", "harmonic"] = "max"
) -> np.ndarray:
    """Uncertainty of each pair from its two faces' sigma^2 arrays (N, D) -> (N,); higher = less trustworthy.

    Each face is first summarised by :func:`face_uncertainty` (harmonic mean of sigma^2 over dimensions,
    Shi & Jain, ICCV 2019). Then the two faces are combined:

    * ``"max"`` (default): the larger of the two. A pair is only as trustworthy as its worse face: one blurred
      or occluded face is enough to make the comparison unreliable, however clean the other one is. This also
      agrees with the mutual likelihood score, whose per-dimension variance ``sigma_a^2 + sigma_b^2`` is
      within a factor 2 of the larger of the two.
    * ``"harmonic"``: ``2 u_a u_b / (u_a + u_b)``, dominated by the *better* face; a pair with one terrible
      face can look confident, which is why it is not the default. Provided for comparison.
    """
    a, b = np.asarray(sigma_sq_a), np.asarray(sigma_sq_b)
    if a.shape != b.shape:
        raise ShapeMismatchError(f"sigma_sq_a has shape {a.shape}, sigma_sq_b {b.shape}")
    ua, ub = face_uncertainty(a), face_uncertainty(b)
    if combine == "max":
        return np.maximum(ua, ub)
    if combine == "harmonic":
        return 2.0 * ua * ub / (ua + ub)
    raise ValueError(f"combine must be 'max' or 'harmonic', got {combine!r}")


def reference_uncertainty(sigma_sq_calibration: np.ndarray) -> float:
    """``u_ref`` for :func:`face_quality`: the median face uncertainty on a calibration set.

    Stored with the model (next to its sigma^2 head), so that quality 0.5 means "as uncertain as the median
    calibration face" whatever the scale of that model's variances.
    """
    return float(np.median(face_uncertainty(sigma_sq_calibration)))


def face_quality(sigma_sq: np.ndarray, u_ref: float) -> np.ndarray:
    """Per-face quality in (0, 1], higher = better: ``q = 1 / (1 + u / u_ref)`` = ``u_ref / (u_ref + u)``.

    ``u`` is the face's harmonic-mean sigma^2 (:func:`face_uncertainty`, Shi & Jain, ICCV 2019) and ``u_ref``
    the model's reference uncertainty (:func:`reference_uncertainty`, stored with the model): ``q`` is 1 for a
    face with no uncertainty, 0.5 at ``u = u_ref`` and decreases monotonically towards 0.

    ``--min-quality Q`` keeps the faces with ``q >= Q`` and rejects the others. Because ``q`` is a monotone
    map of ``u``, the fraction rejected is the fraction of faces with ``u > u_ref * (1 / Q - 1)``; it depends
    on the data, so a model should ship the ``Q`` values that reject 5 / 10 / 20 % of its calibration faces,
    computed with :func:`quality_for_reject_fraction`.
    """
    if not (np.isfinite(u_ref) and u_ref > 0):
        raise ValueError(f"u_ref must be a positive finite number, got {u_ref!r}")
    u = face_uncertainty(sigma_sq)
    return u_ref / (u_ref + u)


def quality_for_reject_fraction(qualities: np.ndarray, fraction: float) -> float:
    """The ``--min-quality`` threshold ``Q`` that rejects ``fraction`` of ``qualities`` (a reference set).

    ``Q`` is the ``k``-th smallest quality (0-based) with ``k = floor(fraction * n)``, so exactly ``k`` faces
    have ``q < Q`` and are rejected when the qualities are distinct (fewer when several faces share the
    value at the cut: ties are kept together). ``fraction`` 0 gives the minimum (nothing rejected); 1 gives
    the smallest float above the maximum (everything rejected).
    """
    q = np.sort(np.asarray(qualities, dtype=np.float64).reshape(-1))
    if q.size == 0:
        raise ShapeMismatchError("no qualities")
    if not np.isfinite(q).all():
        raise NonFiniteError("qualities contain NaN or Inf")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    k = _drop_count(fraction, q.size)
    return float(q[k]) if k < q.size else float(np.nextafter(q[-1], np.inf))


def quality_reference(sigma_sq_calibration: np.ndarray, protocol: str,
                      fractions: Sequence[float] = CARD_REJECT_FRACTIONS) -> Quality:
    """A model card's quality reference from calibration faces' sigma^2 (N, D): ``u_ref`` (the median face
    uncertainty, :func:`reference_uncertainty`) and, per fraction, the ``Q`` of
    :func:`quality_for_reject_fraction` on those faces' qualities (keys ``f"{fraction:g}"``: ``"0.05"``)."""
    u_ref = reference_uncertainty(sigma_sq_calibration)
    q = face_quality(sigma_sq_calibration, u_ref)
    table = {f"{f:g}": quality_for_reject_fraction(q, float(f)) for f in fractions}
    return Quality(u_ref, table, protocol)


def pair_detector_key(det_a: np.ndarray, det_b: np.ndarray) -> np.ndarray:
    """Rejection key from the face detector's confidences: ``-min(det_a, det_b)`` (drop low scores first)."""
    a, b = np.asarray(det_a, dtype=np.float64).reshape(-1), np.asarray(det_b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ShapeMismatchError(f"{a.size} detector scores for the first faces but {b.size} for the second")
    return -np.minimum(a, b)


def _drop_count(fraction: float, n: int) -> int:
    """``floor(fraction * n)``, tolerant of float error (0.29 * 100 -> 29)."""
    return min(n, int(np.floor(fraction * n + 1e-9)))


def kept_mask(folds: np.ndarray, key: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the pairs kept when, within each fold, the ``floor(fraction * n_fold)`` pairs with the
    largest ``key`` are dropped. Ties: among equal keys the pair that comes first is dropped first."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    keep = np.ones(key.size, dtype=bool)
    for k in np.unique(folds):
        idx = np.nonzero(folds == k)[0]
        order = idx[np.lexsort((idx, -key[idx]))]  # key descending, then position ascending
        keep[order[:_drop_count(fraction, idx.size)]] = False
    return keep


def _inputs(scores, labels, folds, key) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    f = np.asarray(folds).reshape(-1)
    k = np.asarray(key, dtype=np.float64).reshape(-1)
    if not s.size == y.size == f.size == k.size:
        raise ShapeMismatchError(f"{s.size} scores, {y.size} labels, {f.size} fold labels and {k.size} keys")
    if not np.isfinite(k).all():
        raise NonFiniteError("rejection key contains NaN or Inf")
    return s, y, f, k


def _row(fraction: float, s: np.ndarray, y: np.ndarray, f: np.ndarray, far: float) -> dict[str, float]:
    acc = ten_fold_accuracy(s, y, f)["mean"]
    both = bool(y.any() and (~y).any())
    return {
        "fraction": float(fraction),
        "kept": int(s.size),
        "accuracy": acc,
        "error": 1.0 - acc,
        "tar_at_far": tar_at_far(s, y, far) if both else float("nan"),
    }


def rejection_curve(
    scores: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    keep_order_key: np.ndarray,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    far: float = 1e-3,
) -> list[dict[str, float]]:
    """Error versus fraction rejected (Shi & Jain, ICCV 2019, risk-controlled recognition).

    For each ``fraction`` f: within each fold, drop the ``floor(f * n_fold)`` pairs with the largest
    ``keep_order_key`` (e.g. :func:`pair_uncertainty`; ties: the earlier pair is dropped first), then run the
    standard protocol of :func:`~faceembed.evaluation.verification.ten_fold_accuracy` on the remaining pairs
    (threshold fitted on the other folds' remaining pairs, accuracy on the test fold's, mean over folds) and
    :func:`~faceembed.evaluation.verification.tar_at_far` at ``far`` on all remaining pairs (NaN when they
    lack one class).

    Returns one row per fraction: ``{"fraction", "kept", "accuracy", "error", "tar_at_far"}``.
    """
    s, y, f, k = _inputs(scores, labels, folds, keep_order_key)
    rows = []
    for frac in fractions:
        keep = kept_mask(f, k, float(frac))
        rows.append(_row(frac, s[keep], y[keep], f[keep], far))
    return rows


def random_rejection_curve(
    scores: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    far: float = 1e-3,
    seed: int = 0,
    repeats: int = 10,
) -> list[dict[str, float]]:
    """The baseline: :func:`rejection_curve` with a random key, ``accuracy``, ``error`` and ``tar_at_far``
    averaged over ``repeats`` draws (``numpy.random.default_rng(seed)``); ``kept`` is the same every draw."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    rng = np.random.default_rng(seed)
    runs = [rejection_curve(s, labels, folds, rng.permutation(s.size), fractions, far) for _ in range(repeats)]
    out = []
    for i, row in enumerate(runs[0]):
        mean = {m: float(np.mean([r[i][m] for r in runs])) for m in ("accuracy", "error", "tar_at_far")}
        out.append({"fraction": row["fraction"], "kept": row["kept"], **mean})
    return out


def detector_rejection_curve(
    scores: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    det_a: np.ndarray,
    det_b: np.ndarray,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    far: float = 1e-3,
) -> list[dict[str, float]]:
    """:func:`rejection_curve` keyed on the detector confidences (:func:`pair_detector_key`)."""
    return rejection_curve(scores, labels, folds, pair_detector_key(det_a, det_b), fractions, far)
