"""Cosine, MLS and Gaussian fusion against plain float64 loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faceembed.errors import NonFiniteError, ShapeMismatchError
from faceembed.evaluation.scores import cosine_scores, fuse_gaussians, l2_normalize, mls_scores


def test_l2_normalize() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalize(x.T, axis=0), [[0.6, 0.0], [0.8, 0.0]])


def test_cosine_loop() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 7)).astype(np.float32), rng.normal(size=(20, 7)).astype(np.float32)
    expect = [
        sum(float(x) * float(y) for x, y in zip(r, s, strict=True))
        / math.sqrt(sum(float(x) ** 2 for x in r)) / math.sqrt(sum(float(y) ** 2 for y in s))
        for r, s in zip(a, b, strict=True)
    ]
    got = cosine_scores(a, b)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expect, rtol=1e-12)


def test_mls_loop() -> None:
    rng = np.random.default_rng(1)
    n, d = 15, 6
    m1, m2 = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    s1, s2 = rng.uniform(0.01, 2, (n, d)), rng.uniform(0.01, 2, (n, d))
    expect = []
    for i in range(n):
        acc = 0.0
        for k in range(d):
            v = s1[i, k] + s2[i, k]
            acc += (m1[i, k] - m2[i, k]) ** 2 / v + math.log(v)
        expect.append(-0.5 * acc - d / 2 * math.log(2 * math.pi))
    np.testing.assert_allclose(mls_scores(m1, s1, m2, s2), expect, rtol=1e-12)
    # identical means: the score rises as the variance falls
    same = mls_scores(m1[:1], s1[:1] * 0.1, m1[:1], s1[:1] * 0.1)[0]
    assert same > mls_scores(m1[:1], s1[:1], m1[:1], s1[:1])[0]


def test_fusion_loops() -> None:
    rng = np.random.default_rng(2)
    k, d = 4, 5
    mu, s = rng.normal(size=(k, d)), rng.uniform(0.05, 3, (k, d))
    mu_e, s_paper, s_min = np.zeros(d), np.zeros(d), np.zeros(d)
    for j in range(d):
        prec = [1.0 / s[i, j] for i in range(k)]
        total = sum(prec)
        mu_e[j] = sum(prec[i] / total * mu[i, j] for i in range(k))
        s_paper[j] = 1.0 / total
        s_min[j] = min(s[i, j] for i in range(k))
    m, v = fuse_gaussians(mu, s, mode="paper")
    np.testing.assert_allclose(m, mu_e, rtol=1e-12)
    np.testing.assert_allclose(v, s_paper, rtol=1e-12)
    m2, v2 = fuse_gaussians(mu, s, mode="min")
    np.testing.assert_allclose(m2, mu_e, rtol=1e-12)
    np.testing.assert_array_equal(v2, s_min)
    # one image: fusion is the identity
    m1, v1 = fuse_gaussians(mu[:1], s[:1])
    np.testing.assert_allclose(m1, mu[0])
    np.testing.assert_allclose(v1, s[0])
    with pytest.raises(ValueError):
        fuse_gaussians(mu, s, mode="bogus")  # type: ignore[arg-type]


def test_errors() -> None:
    with pytest.raises(NonFiniteError):
        cosine_scores(np.array([[np.nan, 1.0]]), np.ones((1, 2)))
    with pytest.raises(ShapeMismatchError):
        cosine_scores(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(NonFiniteError):
        mls_scores(np.ones((1, 2)), np.zeros((1, 2)), np.ones((1, 2)), np.zeros((1, 2)))
    with pytest.raises(NonFiniteError):
        fuse_gaussians(np.ones((2, 2)), np.array([[1.0, np.inf], [1.0, 1.0]]))


def test_logistic_calibration_matches_a_direct_float64_fit() -> None:
    from faceembed.evaluation.scores import apply_calibration, fit_logistic_calibration

    rng = np.random.default_rng(0)
    scores = rng.normal(0, 30, 4000)
    same = rng.random(4000) < 1 / (1 + np.exp(-(0.2 * scores - 1.5)))
    a, b = fit_logistic_calibration(scores, same)
    # At the maximum-likelihood fit the gradient of the log-likelihood vanishes (direct float64 computation).
    p = 1 / (1 + np.exp(-(a * scores + b)))
    assert abs(np.sum(p - same)) < 1e-6 and abs(np.sum((p - same) * scores)) < 1e-4
    assert a == pytest.approx(0.2, rel=0.15) and b == pytest.approx(-1.5, abs=0.3)
    np.testing.assert_allclose(apply_calibration(scores, {"a": a, "b": b}), a * scores + b)
