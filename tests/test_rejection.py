"""Risk-controlled rejection (PFE uncertainty as quality): the protocol against a plain re-computation,
an informative-uncertainty case, properties of the quality map, and the plot."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faceembed.errors import NonFiniteError, ShapeMismatchError
from faceembed.evaluation.rejection import (
    detector_rejection_curve,
    face_quality,
    face_uncertainty,
    pair_detector_key,
    pair_uncertainty,
    quality_for_reject_fraction,
    random_rejection_curve,
    reference_uncertainty,
    rejection_curve,
)
from faceembed.evaluation.verification import ten_fold_accuracy
from faceembed.report.rejection import plot_rejection

# --- an independent, plain float64 re-computation of the protocol -------------------------------------


def _plain_drop(n: int, fraction: float) -> int:
    return int(Fraction(str(fraction)) * n)  # exact floor for the decimal fraction


def _plain_keep(folds: np.ndarray, key: np.ndarray, fraction: float) -> list[int]:
    kept = []
    for k in sorted(set(folds.tolist())):
        members = [i for i in range(len(folds)) if folds[i] == k]
        worst_first = sorted(members, key=lambda i: (-float(key[i]), i))
        kept += worst_first[_plain_drop(len(members), fraction):]
    return sorted(kept)


def _plain_threshold(s: list[float], y: list[bool]) -> float:
    u = sorted(set(s))
    cands = [u[0] - 1.0] + [(a + b) / 2 for a, b in zip(u[:-1], u[1:], strict=True)] + [u[-1] + 1.0]
    best_t, best_correct = cands[0], -1
    for t in cands:
        correct = sum((si > t) == yi for si, yi in zip(s, y, strict=True))
        if correct > best_correct:  # strictly better: the lowest best candidate wins
            best_t, best_correct = t, correct
    return best_t


def _plain_accuracy(s: np.ndarray, y: np.ndarray, f: np.ndarray) -> float:
    accs, labels = [], sorted(set(f.tolist()))
    for k in labels:
        train = [i for i in range(len(s)) if f[i] != k or len(labels) == 1]  # one fold: fit on itself
        test = [i for i in range(len(s)) if f[i] == k]
        t = _plain_threshold([float(s[i]) for i in train], [bool(y[i]) for i in train])
        accs.append(sum((s[i] > t) == y[i] for i in test) / len(test))
    return sum(accs) / len(accs)


def _plain_tar(s: np.ndarray, y: np.ndarray, far: float) -> float:
    pos, neg = int(y.sum()), int((~y).sum())
    best = 0.0
    for t in sorted(set(s.tolist())):
        fa = sum(1 for i in range(len(s)) if s[i] >= t and not y[i]) / neg
        ta = sum(1 for i in range(len(s)) if s[i] >= t and y[i]) / pos
        if fa <= far + 1e-12:
            best = max(best, ta)
    return best


def _synthetic(seed: int, per_fold: int = 20, ties: bool = False):
    rng = np.random.default_rng(seed)
    folds = np.repeat(np.arange(10), per_fold)
    y = rng.random(folds.size) < 0.5
    if ties:
        s = rng.integers(0, 6, folds.size).astype(np.float64) + 1.5 * y
        key = rng.integers(0, 4, folds.size).astype(np.float64)
    else:
        s = rng.normal(size=folds.size) + 1.2 * y
        key = rng.random(folds.size)
    return s, y, folds, key


FRACTIONS = (0.0, 0.05, 0.1, 0.13, 0.2, 0.5)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_rejection_curve_matches_plain_computation(seed: int, ties: bool) -> None:
    s, y, folds, key = _synthetic(seed, ties=ties)
    far = 0.05
    rows = rejection_curve(s, y, folds, key, FRACTIONS, far=far)
    assert [r["fraction"] for r in rows] == list(FRACTIONS)
    for row, frac in zip(rows, FRACTIONS, strict=True):
        keep = np.array(_plain_keep(folds, key, frac))
        acc = _plain_accuracy(s[keep], y[keep], folds[keep])
        assert row["kept"] == keep.size
        assert row["accuracy"] == pytest.approx(acc, abs=1e-12)
        assert row["error"] == pytest.approx(1.0 - acc, abs=1e-12)
        assert row["tar_at_far"] == pytest.approx(_plain_tar(s[keep], y[keep], far), abs=1e-12)


def test_ties_in_the_key_drop_the_earlier_pair_first() -> None:
    folds = np.zeros(10, dtype=int)
    key = np.array([0, 5, 5, 1, 5, 0, 0, 0, 0, 0], dtype=float)
    s = np.arange(10, dtype=float)
    y = s >= 5
    (row,) = rejection_curve(s, y, folds, key, fractions=(0.2,))
    assert row["kept"] == 8  # pairs 1 and 2 dropped, 4 kept
    keep = np.array([0, 3, 4, 5, 6, 7, 8, 9])
    assert row["accuracy"] == pytest.approx(_plain_accuracy(s[keep], y[keep], folds[keep]))


def test_informative_uncertainty_beats_random_rejection() -> None:
    rng = np.random.default_rng(7)
    n, d = 600, 16
    folds = np.repeat(np.arange(10), n // 10)
    y = rng.random(n) < 0.5
    noisy = rng.random(n) < 0.15
    s = np.where(y, 1.0, -1.0) + rng.normal(scale=0.4, size=n)
    s[noisy] = rng.normal(scale=1.5, size=int(noisy.sum()))  # noisy pairs: score carries no information
    sig_a = rng.lognormal(np.log(0.05), 0.2, (n, d))
    sig_b = rng.lognormal(np.log(0.05), 0.2, (n, d))
    sig_b[noisy] = rng.lognormal(np.log(1.0), 0.2, (int(noisy.sum()), d))  # one bad face per noisy pair
    unc = pair_uncertainty(sig_a, sig_b)
    fr = (0.0, 0.05, 0.1, 0.2)
    by_unc = rejection_curve(s, y, folds, unc, fr)
    by_chance = random_rejection_curve(s, y, folds, fr, seed=0, repeats=10)
    assert by_unc[0]["error"] == pytest.approx(by_chance[0]["error"])
    errors = [r["error"] for r in by_unc]
    assert all(a >= b for a, b in zip(errors[:-1], errors[1:], strict=True))
    assert by_unc[-1]["error"] < 0.5 * by_chance[-1]["error"]
    assert by_chance[-1]["error"] > 0.6 * by_chance[0]["error"]  # random rejection barely helps


def test_random_and_detector_curves() -> None:
    s, y, folds, _ = _synthetic(3)
    a = random_rejection_curve(s, y, folds, (0.0, 0.1), seed=5, repeats=3)
    b = random_rejection_curve(s, y, folds, (0.0, 0.1), seed=5, repeats=3)
    assert a == b and [r["kept"] for r in a] == [200, 180]
    det_a, det_b = np.random.default_rng(1).random((2, s.size))
    key = pair_detector_key(det_a, det_b)
    np.testing.assert_array_equal(key, -np.minimum(det_a, det_b))
    assert detector_rejection_curve(s, y, folds, det_a, det_b, (0.0, 0.2)) == rejection_curve(
        s, y, folds, key, (0.0, 0.2)
    )


def test_bad_inputs_raise_typed_errors() -> None:
    s, y, folds, key = _synthetic(0)
    with pytest.raises(ShapeMismatchError):
        rejection_curve(s, y, folds, key[:-1])
    with pytest.raises(NonFiniteError):
        rejection_curve(s, y, folds, np.where(np.arange(s.size) == 3, np.nan, key))
    with pytest.raises(ValueError):
        rejection_curve(s, y, folds, key, fractions=(1.0,))
    with pytest.raises(NonFiniteError):
        face_uncertainty(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        pair_uncertainty(np.ones((2, 3)), np.ones((2, 3)), combine="mean")  # type: ignore[arg-type]


# --- uncertainty and quality ---------------------------------------------------------------------------


def test_pair_uncertainty_definitions() -> None:
    a = np.array([[1.0, 4.0], [0.5, 0.5]])
    b = np.array([[2.0, 2.0], [0.1, 0.3]])
    ua = np.array([2 / (1 / 1 + 1 / 4), 0.5])  # harmonic means, written out
    ub = np.array([2.0, 2 / (1 / 0.1 + 1 / 0.3)])
    np.testing.assert_allclose(face_uncertainty(a), ua)
    np.testing.assert_allclose(pair_uncertainty(a, b), np.maximum(ua, ub))
    np.testing.assert_allclose(pair_uncertainty(a, b, combine="harmonic"), 2 * ua * ub / (ua + ub))


def test_face_quality_reference_point() -> None:
    sig = np.random.default_rng(0).lognormal(0.0, 1.0, (101, 8))
    u_ref = reference_uncertainty(sig)
    q = face_quality(sig, u_ref)
    assert np.median(q) == pytest.approx(0.5)
    assert face_quality(np.full((1, 8), 3.0), 3.0)[0] == pytest.approx(0.5)


sigmas = st.lists(st.floats(1e-4, 1e4), min_size=3, max_size=40)


@settings(max_examples=60, deadline=None)
@given(sigmas, st.floats(1e-3, 1e3))
def test_quality_is_monotone_decreasing_in_uncertainty(values: list[float], u_ref: float) -> None:
    sig = np.repeat(np.array(values)[:, None], 4, axis=1)  # harmonic mean of a constant row = the value
    u = face_uncertainty(sig)
    q = face_quality(sig, u_ref)
    assert ((q > 0) & (q <= 1)).all()
    order = np.argsort(u, kind="stable")
    assert (np.diff(q[order]) <= 0).all()


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, exclude_min=True), min_size=1, max_size=60), st.floats(0.0, 1.0))
def test_quality_for_reject_fraction_rejects_that_fraction(values: list[float], fraction: float) -> None:
    q = np.array(values)
    cut = quality_for_reject_fraction(q, fraction)
    # floor(fraction * n), tolerant of float error as documented (1 - 2**-53 of one face rounds to that face)
    k = min(q.size, int(Fraction(str(fraction)) * q.size + Fraction(1, 10**9)))
    rejected = int((q < cut).sum())
    if np.unique(q).size == q.size:
        assert rejected == k
    assert rejected <= k
    if k < q.size:
        assert int((q <= cut).sum()) >= k + 1
    else:
        assert rejected == q.size


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 6), st.integers(1, 15), st.booleans())
def test_fraction_zero_is_plain_ten_fold(seed: int, n_folds: int, per_fold: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    folds = np.repeat(np.arange(n_folds), per_fold)
    y = rng.random(folds.size) < 0.5
    s = rng.integers(0, 3, folds.size).astype(float) if ties else rng.normal(size=folds.size)
    (row,) = rejection_curve(s, y, folds, rng.random(folds.size), fractions=(0.0,))
    assert row["accuracy"] == ten_fold_accuracy(s, y, folds)["mean"]
    assert row["kept"] == folds.size


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.integers(1, 30), min_size=1, max_size=6),
       st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.2, 0.29, 0.5, 0.9]))
def test_kept_counts(seed: int, sizes: list[int], fraction: float) -> None:
    rng = np.random.default_rng(seed)
    folds = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))  # folds interleaved, unequal sizes
    y = rng.random(folds.size) < 0.5
    s = rng.normal(size=folds.size)
    (row,) = rejection_curve(s, y, folds, rng.integers(0, 3, folds.size), fractions=(fraction,))
    assert row["kept"] == sum(n - _plain_drop(n, fraction) for n in sizes)


# --- plot ------------------------------------------------------------------------------------------------


def test_plot_rejection_writes_png(tmp_path: Path) -> None:
    s, y, folds, key = _synthetic(2)
    curves = {
        "uncertainty (PFE)": rejection_curve(s, y, folds, key),
        "random": random_rejection_curve(s, y, folds, repeats=2),
        "detector score": rejection_curve(s, y, folds, -key),
    }
    out = tmp_path / "sub" / "rejection.png"
    plot_rejection(curves, out, "LFW: error versus reject")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["rejection.png"]  # no temporary file left
