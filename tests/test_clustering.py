"""Clustering metrics (against brute-force float64 loops, and their properties) and the clustering algorithms
on small synthetic embeddings (against scipy's linkage on the whole distance matrix)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faceembed.errors import FaceembedError
from faceembed.evaluation.clustering import bcubed, clustering_scores, pairwise, singletons_for_unassigned
from faceembed.faces.cluster_algos import ALGORITHMS, cluster_embeddings, linkage_clusters, renumber


def brute_bcubed(c, t):
    n = len(t)
    p = sum(sum(1 for j in range(n) if c[j] == c[i] and t[j] == t[i]) / sum(1 for j in range(n) if c[j] == c[i])
            for i in range(n)) / n
    r = sum(sum(1 for j in range(n) if c[j] == c[i] and t[j] == t[i]) / sum(1 for j in range(n) if t[j] == t[i])
            for i in range(n)) / n
    return p, r, 2 * p * r / (p + r)


def brute_pairwise(c, t):
    pairs = list(itertools.combinations(range(len(t)), 2))
    sc = [(i, j) for i, j in pairs if c[i] == c[j]]
    st_ = [(i, j) for i, j in pairs if t[i] == t[j]]
    both = [(i, j) for i, j in sc if t[i] == t[j]]
    p = len(both) / len(sc) if sc else 1.0
    r = len(both) / len(st_) if st_ else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


labels = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(labels)
def test_metrics_match_brute_force(items):
    c, t = [a for a, _ in items], [b for _, b in items]
    assert np.allclose(bcubed(c, t), brute_bcubed(c, t), atol=1e-12)
    assert np.allclose(pairwise(c, t), brute_pairwise(c, t), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(labels)
def test_metric_properties(items):
    c, t = [a for a, _ in items], [b for _, b in items]
    p, r, f = bcubed(c, t)
    assert 0 < p <= 1 and 0 < r <= 1 and min(p, r) - 1e-12 <= f <= max(p, r) + 1e-12
    assert bcubed(t, t) == (1.0, 1.0, 1.0)
    assert np.allclose(bcubed(t, c), (r, p, f))  # swapping roles swaps precision and recall
    perm = {k: 100 - k for k in set(c)}  # renaming clusters changes nothing
    assert np.allclose(bcubed([perm[k] for k in c], t), (p, r, f))
    assert bcubed(list(range(len(t))), t)[0] == 1.0  # all singletons: perfect precision
    assert bcubed([0] * len(t), t)[1] == 1.0  # one cluster: perfect recall


def test_known_values_and_scores():
    c, t = [0, 0, 0, 1, 1], ["a", "a", "b", "b", "b"]
    p, r, _ = bcubed(c, t)
    assert p == pytest.approx((2 / 3 * 2 + 1 / 3 + 1 + 1) / 5)
    assert r == pytest.approx((1 + 1 + 1 / 3 + 2 / 3 * 2) / 5)
    s = clustering_scores(c, t)
    assert s["clusters"] == 2 and s["identities"] == 2 and s["items"] == 5
    assert s["pairwise_precision"] == pytest.approx(2 / 4)  # 3 + 1 pairs put together; (a, a) and (b, b) right
    with pytest.raises(ValueError):
        bcubed([0], [0, 1])


def test_singletons_for_unassigned():
    assert singletons_for_unassigned([-1, 0, -1, 1]).tolist() == [2, 0, 3, 1]
    assert singletons_for_unassigned([-1, -1]).tolist() == [0, 1]


def test_renumber_largest_first():
    assert renumber(np.array([7, 3, 3, 9, 9, 9])).tolist() == [2, 1, 1, 0, 0, 0]


def blobs(people=12, per=5, dim=32, spread=0.15, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(people, dim))
    noise = rng.normal(scale=spread, size=(people * per, dim))
    x = (np.repeat(centers, per, axis=0) + noise) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), np.repeat(np.arange(people), per)


@pytest.mark.parametrize("method", ["average", "complete", "single"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linkage_by_components_equals_full_scipy(method, seed):
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    x, _ = blobs(seed=seed, spread=0.6)
    for thr in (0.3, 0.5, 0.7):
        ours = linkage_clusters(x, thr, method)
        full = fcluster(linkage(pdist(x.astype(np.float64), "cosine"), method), 1 - thr + 1e-12, "distance")
        assert bcubed(ours, full) == pytest.approx((1.0, 1.0, 1.0))


@pytest.mark.parametrize("method", ALGORITHMS)
def test_every_algorithm_finds_clear_people(method):
    x, truth = blobs()
    lab = cluster_embeddings(x, 0.5, method)
    assert lab.dtype == np.int64 and len(lab) == len(x)
    assert bcubed(lab, truth)[2] > 0.95


def test_cluster_embeddings_edges():
    assert cluster_embeddings(np.zeros((0, 4)), 0.5).tolist() == []
    assert cluster_embeddings(np.ones((1, 4)), 0.5).tolist() == [0]
    with pytest.raises(FaceembedError, match="--algorithm"):
        cluster_embeddings(np.ones((2, 4)), 0.5, "kmeans")
