"""Threshold selection, 10-fold accuracy, ROC/AUC/EER/TAR@FAR and verify_features."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from faceembed.data.lfw import Pair
from faceembed.errors import InputFormatError, NonFiniteError
from faceembed.evaluation.verification import (
    auc,
    best_threshold,
    eer,
    roc,
    tar_at_far,
    ten_fold_accuracy,
    verify_features,
)
from faceembed.report.roc import plot_roc


def _brute_threshold(s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    u = np.unique(s)
    cands = [u[0] - 1.0] + [(a + b) / 2 for a, b in zip(u[:-1], u[1:], strict=True)] + [u[-1] + 1.0]
    best = (-1.0, 0.0)
    for t in cands:
        acc = float(np.mean((s > t) == y))
        if acc > best[0]:
            best = (acc, t)
    return best[1], best[0]


@pytest.mark.parametrize("seed", range(30))
def test_best_threshold_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    s = rng.integers(0, 8, n).astype(float) if seed % 2 else rng.normal(size=n)  # ties on odd seeds
    y = rng.random(n) < 0.5
    thr, acc = best_threshold(s, y)
    bthr, bacc = _brute_threshold(s, y)
    assert acc == pytest.approx(bacc) and thr == pytest.approx(bthr)
    assert float(np.mean((s > thr) == y)) == pytest.approx(acc)


@pytest.mark.parametrize("seed", range(10))
def test_ten_fold_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    folds = np.repeat(np.arange(10), 12)
    y = rng.random(folds.size) < 0.5
    s = rng.normal(size=folds.size) + 1.2 * y
    res = ten_fold_accuracy(s, y, folds)
    expect = []
    for k in range(10):
        thr, _ = _brute_threshold(s[folds != k], y[folds != k])
        expect.append(float(np.mean((s[folds == k] > thr) == y[folds == k])))
    np.testing.assert_allclose(res["per_fold"], expect)
    assert res["mean"] == pytest.approx(np.mean(expect)) and res["std"] == pytest.approx(np.std(expect))
    assert res["cross_validated"] and len(res["thresholds"]) == 10


def test_roc_auc_eer_reference() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(300) < 0.4
    s = np.round(rng.normal(size=300) + y, 1)  # ties
    far, tar, thr = roc(s, y)
    pos, neg = s[y], s[~y]
    for f, t, th in zip(far, tar, thr, strict=True):
        assert f == pytest.approx(np.mean(neg >= th)) and t == pytest.approx(np.mean(pos >= th))
    assert far[0] == tar[0] == 0 and far[-1] == tar[-1] == 1
    mw = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
    assert auc(s, y) == pytest.approx(mw, abs=1e-12)
    # EER lies between the FAR and FNR at the crossing
    e = eer(s, y)
    fnr = 1 - tar
    i = int(np.argmax(far >= fnr))
    assert min(far[i - 1], fnr[i]) - 1e-12 <= e <= max(far[i], fnr[i - 1]) + 1e-12
    for target in (0.01, 0.1, 0.5):
        ok = [np.mean(pos >= t) for t in np.r_[np.inf, np.unique(s)] if np.mean(neg >= t) <= target]
        assert tar_at_far(s, y, target) == pytest.approx(max(ok))


def test_perfect_and_symmetric_cases() -> None:
    y = np.array([1, 1, 0, 0], bool)
    assert auc([0.9, 0.8, 0.1, 0.2], y) == 1.0 and eer([0.9, 0.8, 0.1, 0.2], y) == 0.0
    assert eer([0.9, 0.1, 0.8, 0.2], y) == pytest.approx(0.5)
    assert tar_at_far([0.9, 0.8, 0.1, 0.2], y, 0.0) == 1.0


def _pairs_and_features(n_folds: int = 10, per: int = 300, d: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    pairs, feats = [], {}
    for f in range(n_folds):
        for i in range(per):
            n = f"P{f}_{i}"
            pairs.append(Pair(f, n, 1, n, 2, True))
        for i in range(per):
            pairs.append(Pair(f, f"P{f}_{i}", 1, f"Q{f}_{i}", 1, False))
    for f in range(n_folds):
        for i in range(per):
            base = rng.normal(size=d)
            feats[f"P{f}_{i}/P{f}_{i}_0001.jpg"] = base + 0.8 * rng.normal(size=d) + 3.0
            feats[f"P{f}_{i}/P{f}_{i}_0002.jpg"] = base + 0.8 * rng.normal(size=d) + 3.0
            feats[f"Q{f}_{i}/Q{f}_{i}_0001.jpg"] = rng.normal(size=d) + 3.0
    return pairs, feats


def test_verify_features_cosine_and_mean_subtraction() -> None:
    pairs, feats = _pairs_and_features(per=30)
    a = np.stack([feats[p.relpath1] for p in pairs])
    b = np.stack([feats[p.relpath2] for p in pairs])
    res = verify_features(pairs, feats)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(res.scores, cos)
    folds = np.array([p.fold for p in pairs])
    ms = verify_features(pairs, feats, mean_subtract=True)
    for k in (0, 7):
        train = folds != k
        mu = np.concatenate([a[train], b[train]]).mean(0)
        aa, bb = a[folds == k] - mu, b[folds == k] - mu
        expect = (aa * bb).sum(1) / np.linalg.norm(aa, axis=1) / np.linalg.norm(bb, axis=1)
        np.testing.assert_allclose(ms.scores[folds == k], expect)
    # the +3 offset hurts plain cosine; subtracting the mean restores it
    assert ms.accuracy > res.accuracy and ms.auc > res.auc
    flips = {k: v * 1.0 for k, v in feats.items()}
    cat = verify_features(pairs, feats, flip_features=flips, flip_mode="concat")
    np.testing.assert_allclose(cat.scores, res.scores)  # a duplicated feature leaves the cosine unchanged
    d = cat.to_dict()
    assert d["pairs"] == len(pairs) and set(d["tar_at_far"]) == {"0.01", "0.001"}


def test_verify_features_mls() -> None:
    pairs, feats = _pairs_and_features(n_folds=2, per=10, d=4)
    sig = {k: np.full(4, 0.5) for k in feats}
    res = verify_features(pairs, feats, sigma_sq=sig, metric="mls")
    a = np.stack([feats[p.relpath1] for p in pairs])
    b = np.stack([feats[p.relpath2] for p in pairs])
    expect = -0.5 * (((a - b) ** 2) / 1.0 + np.log(1.0)).sum(1) - 2 * np.log(2 * np.pi)
    np.testing.assert_allclose(res.scores, expect)
    with pytest.raises(ValueError):
        verify_features(pairs, feats, metric="mls")


def test_verify_features_errors() -> None:
    pairs, feats = _pairs_and_features(n_folds=2, per=5, d=4)
    missing = dict(feats)
    del missing[pairs[3].relpath2]
    with pytest.raises(InputFormatError, match=pairs[3].relpath2):
        verify_features(pairs, missing)
    bad = dict(feats)
    bad[pairs[0].relpath1] = np.array([np.nan, 0, 0, 0])
    with pytest.raises(NonFiniteError):
        verify_features(pairs, bad)


def test_verify_scales_linearly_with_the_pairs() -> None:
    """A ratio within one run (no absolute time): 6,000 pairs cost about 10x 600 pairs, far from the 100x a
    quadratic step (e.g. a threshold search scanning every score for every candidate) would cost."""

    def best_of_3(per: int) -> float:
        pairs, feats = _pairs_and_features(per=per, d=256)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            verify_features(pairs, feats, flip_features=feats, flip_mode="concat", mean_subtract=True)
            times.append(time.perf_counter() - t)
        return min(times)

    assert best_of_3(300) / best_of_3(30) < 40


def test_plot_roc(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.5
    s = rng.normal(size=500) + 2 * y
    far, tar, _ = roc(s, y)
    out = tmp_path / "roc.png"
    plot_roc({"model": (far, tar)}, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["roc.png"]
