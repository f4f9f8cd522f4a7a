"""Clustering unit face embeddings into people, at a cosine-similarity threshold (the model card's at a
false-accept rate). Labels are int64, one per face, 0..K-1; every algorithm's noise becomes singletons.

- ``average`` / ``complete`` / ``single``: agglomerative linkage on cosine distance, cut at ``1 - threshold``
  (scipy.cluster.hierarchy.linkage + fcluster). Exact and scalable: a merge at average or complete linkage
  needs at least one pair of faces at or above the threshold, so the clusters never cross the connected
  components of the threshold graph and each component is clustered on its own (its own small distance matrix).
- ``chinese-whispers``: dlib.chinese_whispers_clustering (dlib-bin) on Euclidean distance between unit vectors,
  ``sqrt(2 - 2 * threshold)`` (the route face_recognition's users take, where 0.5 is the usual setting).
- ``dbscan``: scikit-learn's DBSCAN on cosine distance, ``eps = 1 - threshold``.
- ``hdbscan``: scikit-learn's HDBSCAN (no threshold; ``min_cluster_size`` 2), noise as singletons.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from faceembed.errors import FaceembedError, ShapeMismatchError

ALGORITHMS = ("average", "complete", "single", "chinese-whispers", "dbscan", "hdbscan")
LINKAGES = ("average", "complete", "single")


def check_algorithm(method: str) -> None:
    """One clear error for an unknown ``--algorithm``."""
    if method not in ALGORITHMS:
        raise FaceembedError(f"--algorithm must be one of {', '.join(ALGORITHMS)}, not {method!r}")


def unit_rows(emb: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); a 2-D array is required."""
    e = np.asarray(emb, np.float32)
    if e.ndim != 2:
        raise ShapeMismatchError(f"embeddings must be [N, D], got shape {list(e.shape)}")
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def similar_pairs(emb: np.ndarray, threshold: float, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``i < j`` of unit rows with cosine >= ``threshold``, exact (blocked matrix products)."""
    rows, cols = [], []
    for s in range(0, len(emb), block):
        sim = emb[s:s + block] @ emb.T
        i, j = np.nonzero(sim >= threshold)
        i = i + s
        keep = i < j
        rows.append(i[keep])
        cols.append(j[keep])
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)


def components(n: int, pairs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes of the graph with edges ``pairs``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    i, j = pairs
    g = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    return connected_components(g, directed=False)[1].astype(np.int64)


def renumber(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..K-1 by cluster size, largest first (ties: first face first)."""
    labels = np.asarray(labels, np.int64)
    if not len(labels):
        return labels
    uniq, first, inv, counts = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    order = np.lexsort((first, -counts))
    new = np.empty(len(uniq), np.int64)
    new[order] = np.arange(len(uniq))
    return new[inv.ravel()]


def linkage_clusters(emb: np.ndarray, threshold: float, method: str = "average",
                     pairs: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Agglomerative ``method`` linkage cut at cosine ``threshold`` (see the module docstring); ``pairs``: the
    threshold graph when already known (e.g. from an ANN index)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    emb = unit_rows(emb)
    n = len(emb)
    comp = components(n, pairs if pairs is not None else similar_pairs(emb, threshold))
    labels, nxt = np.arange(n, dtype=np.int64), n
    order = np.argsort(comp, kind="stable")
    bounds = np.flatnonzero(np.diff(comp[order])) + 1
    for members in np.split(order, bounds):
        if len(members) < 2:
            continue
        if len(members) == 2 or method == "single":
            labels[members] = members[0]  # a component is one single-linkage cluster; a pair is >= threshold
            continue
        dist = np.clip(pdist(emb[members].astype(np.float64), "cosine"), 0.0, 2.0)
        z = linkage(dist, method=method)
        sub = fcluster(z, t=1.0 - threshold + 1e-12, criterion="distance")
        labels[members] = nxt + sub  # fcluster numbers from 1; labels above n never collide with singletons
        nxt += int(sub.max()) + 1
    return renumber(labels)


def chinese_whispers(emb: np.ndarray, euclidean: float) -> np.ndarray:
    """dlib's Chinese Whispers on unit embeddings, faces joined below Euclidean distance ``euclidean``."""
    import dlib

    vectors = [dlib.vector(row.astype(np.float64).tolist()) for row in unit_rows(emb)]
    return renumber(np.asarray(dlib.chinese_whispers_clustering(vectors, float(euclidean)), np.int64))


def dbscan(emb: np.ndarray, threshold: float, min_samples: int = 2) -> np.ndarray:
    """scikit-learn DBSCAN, cosine distance ``eps = 1 - threshold``; noise faces become singletons."""
    from sklearn.cluster import DBSCAN

    from faceembed.evaluation.clustering import singletons_for_unassigned

    lab = DBSCAN(eps=max(1e-9, 1.0 - threshold), min_samples=min_samples, metric="cosine",
                 algorithm="brute").fit_predict(unit_rows(emb))
    return renumber(singletons_for_unassigned(lab))


def hdbscan(emb: np.ndarray, min_cluster_size: int = 2) -> np.ndarray:
    """scikit-learn HDBSCAN on unit vectors (Euclidean, monotone in cosine); noise faces become singletons."""
    from sklearn.cluster import HDBSCAN

    from faceembed.evaluation.clustering import singletons_for_unassigned

    lab = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=1, copy=True).fit_predict(unit_rows(emb))
    return renumber(singletons_for_unassigned(lab))


def cluster_embeddings(emb: np.ndarray, threshold: float, method: str = "average", **options: Any) -> np.ndarray:
    """People labels (int64, 0 = the largest) of ``emb`` [N, D] by ``method`` (one of :data:`ALGORITHMS`) at
    cosine similarity ``threshold``; ``options`` go to the algorithm (``min_samples``, ``min_cluster_size``)."""
    check_algorithm(method)
    emb = unit_rows(emb)
    if len(emb) == 0:
        return np.zeros(0, np.int64)
    if method in LINKAGES:
        return linkage_clusters(emb, threshold, method)
    if method == "chinese-whispers":
        return chinese_whispers(emb, float(np.sqrt(max(0.0, 2.0 - 2.0 * threshold))))
    if method == "dbscan":
        return dbscan(emb, threshold, **options)
    return hdbscan(emb, **options)
