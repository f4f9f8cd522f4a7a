"""Clustering quality against known identities: BCubed precision / recall / F (Bagga & Baldwin; Amigo et al.
2009), pairwise precision / recall / F, and the number of clusters. Both are computed from the contingency table
of (cluster, identity) counts, so they cost O(N) for any N."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np


def _f(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _contingency(clusters: Sequence[Hashable], truth: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell counts n_ij with each cell's cluster size |C_i| and identity size |L_j| (float64 arrays)."""
    if len(clusters) != len(truth):
        raise ValueError(f"{len(clusters)} cluster labels for {len(truth)} identities")
    cells = Counter(zip(clusters, truth, strict=True))
    c_size, t_size = Counter(clusters), Counter(truth)
    n = np.fromiter(cells.values(), np.float64, len(cells))
    ci = np.fromiter((c_size[c] for c, _ in cells), np.float64, len(cells))
    tj = np.fromiter((t_size[t] for _, t in cells), np.float64, len(cells))
    return n, ci, tj


def bcubed(clusters: Sequence[Hashable], truth: Sequence[Hashable]) -> tuple[float, float, float]:
    """BCubed (precision, recall, F): per item, the share of its cluster that has its identity (precision) and
    the share of its identity that is in its cluster (recall), averaged over items."""
    if not len(truth):
        return 0.0, 0.0, 0.0
    n, ci, tj = _contingency(clusters, truth)
    p = float(np.sum(n * n / ci) / len(truth))
    r = float(np.sum(n * n / tj) / len(truth))
    return p, r, _f(p, r)


def pairwise(clusters: Sequence[Hashable], truth: Sequence[Hashable]) -> tuple[float, float, float]:
    """Pairwise (precision, recall, F) over item pairs: precision = same-identity pairs among the pairs put in one
    cluster, recall = pairs put in one cluster among the same-identity pairs (1.0 when there is no such pair)."""
    if not len(truth):
        return 0.0, 0.0, 0.0
    n, _, _ = _contingency(clusters, truth)
    both = float(np.sum(n * (n - 1)) / 2)
    same_cluster = sum(k * (k - 1) / 2 for k in Counter(clusters).values())
    same_truth = sum(k * (k - 1) / 2 for k in Counter(truth).values())
    p = both / same_cluster if same_cluster else 1.0
    r = both / same_truth if same_truth else 1.0
    return p, r, _f(p, r)


def clustering_scores(clusters: Sequence[Hashable], truth: Sequence[Hashable]) -> dict[str, Any]:
    """All scores of one clustering: ``bcubed_precision/recall/f``, ``pairwise_precision/recall/f``,
    ``clusters`` (predicted), ``identities`` (true) and ``items``."""
    bp, br, bf = bcubed(clusters, truth)
    pp, pr, pf = pairwise(clusters, truth)
    return {"bcubed_precision": bp, "bcubed_recall": br, "bcubed_f": bf, "pairwise_precision": pp,
            "pairwise_recall": pr, "pairwise_f": pf, "clusters": len(set(clusters)), "identities": len(set(truth)),
            "items": len(truth)}


def singletons_for_unassigned(labels: Sequence[int]) -> np.ndarray:
    """Cluster labels where every negative label (noise, unassigned) becomes its own new cluster."""
    a = np.asarray(labels, np.int64).copy()
    neg = a < 0
    start = int(a.max()) + 1 if len(a) and (~neg).any() else 0
    a[neg] = np.arange(start, start + int(neg.sum()))
    return a
