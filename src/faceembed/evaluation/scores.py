"""Pair scores (cosine, PFE's mutual likelihood score) and PFE's fusion of several Gaussian embeddings.

All functions take array-likes, compute in float64 and are vectorised over rows.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from faceembed.errors import NonFiniteError, ShapeMismatchError


def _f64(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if not np.isfinite(a).all():
        raise NonFiniteError(f"{name} contains NaN or Inf")
    return a


def _same_shape(*arrays: tuple[str, np.ndarray]) -> None:
    shape = arrays[0][1].shape
    for name, a in arrays[1:]:
        if a.shape != shape:
            raise ShapeMismatchError(f"{name} has shape {a.shape}, expected {shape} like {arrays[0][0]}")


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12, dtype: type = np.float64) -> np.ndarray:
    """``x / max(||x||, eps)`` along ``axis``, computed in float64 and returned as ``dtype``; NaN or Inf raises."""
    a = _f64(x, "features")
    return (a / np.maximum(np.linalg.norm(a, axis=axis, keepdims=True), eps)).astype(dtype, copy=False)


def cosine_scores(f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of ``f1`` and ``f2`` (N, D) -> (N,)."""
    a, b = _f64(f1, "f1"), _f64(f2, "f2")
    _same_shape(("f1", a), ("f2", b))
    return np.einsum("ij,ij->i", l2_normalize(a), l2_normalize(b))


def mls_scores(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Mutual likelihood score (PFE) per row, with ``s`` the variances sigma^2 (N, D):

    ``-1/2 * sum_d [ (mu1 - mu2)^2 / (s1 + s2) + log(s1 + s2) ] - D/2 * log(2 pi)``.
    """
    m1, v1, m2, v2 = _f64(mu1, "mu1"), _f64(s1, "sigma_sq1"), _f64(mu2, "mu2"), _f64(s2, "sigma_sq2")
    _same_shape(("mu1", m1), ("sigma_sq1", v1), ("mu2", m2), ("sigma_sq2", v2))
    if m1.ndim != 2:
        raise ShapeMismatchError(f"expected (N, D) arrays, got shape {m1.shape}")
    var = v1 + v2
    if (var <= 0).any():
        raise NonFiniteError("sigma_sq1 + sigma_sq2 must be > 0")
    d = m1.shape[1]
    return -0.5 * ((m1 - m2) ** 2 / var + np.log(var)).sum(axis=1) - 0.5 * d * np.log(2 * np.pi)


def fuse_gaussians(
    mu: np.ndarray, sigma_sq: np.ndarray, mode: Literal["paper", "min"] = "paper"
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse K Gaussian embeddings of one subject, ``mu`` and ``sigma_sq`` (K, D) -> two (D,) arrays.

    ``"paper"`` (PFE paper, product of Gaussians): ``1/s = sum_i 1/s_i`` and ``mu = s * sum_i mu_i / s_i``.
    ``"min"`` (PFE's released code): ``mu`` weighted per dimension by ``1/s_i`` normalised over the images
    (the same mean as the paper), ``sigma_sq`` = elementwise minimum of the ``s_i``.
    """
    m, v = _f64(mu, "mu"), _f64(sigma_sq, "sigma_sq")
    _same_shape(("mu", m), ("sigma_sq", v))
    if m.ndim != 2 or m.shape[0] < 1:
        raise ShapeMismatchError(f"expected (K>=1, D) arrays, got shape {m.shape}")
    if (v <= 0).any():
        raise NonFiniteError("sigma_sq must be > 0")
    precision = 1.0 / v
    weights = precision / precision.sum(axis=0, keepdims=True)
    mu_f = (weights * m).sum(axis=0)
    if mode == "paper":
        return mu_f, 1.0 / precision.sum(axis=0)
    if mode == "min":
        return mu_f, v.min(axis=0)
    raise ValueError(f"mode must be 'paper' or 'min', got {mode!r}")


def fit_logistic_calibration(scores: np.ndarray, same: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Platt scaling: ``(a, b)`` such that ``a * score + b`` is the log-odds of "same person", by Newton's
    method on the logistic log-likelihood (float64). Unlike a best-threshold fit it uses every pair, not only
    the few near the boundary, so it is far less noisy on a small validation set."""
    s = _f64(scores, "scores").ravel()
    y = np.asarray(same, dtype=np.float64).ravel()
    if len(s) != len(y) or y.min() == y.max():
        raise ShapeMismatchError("calibration needs one label per score and both classes")
    mean, std = s.mean(), s.std() or 1.0
    x = np.stack([(s - mean) / std, np.ones_like(s)], axis=1)
    w = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, x.T @ (p - y))
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0] / std), float(w[1] - w[0] * mean / std)


def apply_calibration(scores: np.ndarray, calibration: dict) -> np.ndarray:
    """``a * scores + b`` for a logistic calibration ``{"a", "b"}`` (:func:`fit_logistic_calibration`)."""
    return calibration["a"] * np.asarray(scores, np.float64) + calibration["b"]
