"""Incremental clustering: new faces join the existing people they match by the same linkage rule as a full
run, the rest are clustered among themselves into new people, and no existing person is re-clustered.

The rule for a face f and a person P: average linkage scores mean cos(f, P's faces), complete linkage the
minimum, single linkage the maximum; f joins the best-scoring person whose score is at or above the threshold
and that f is not forbidden to join ("not X" corrections). A face whose score is below the threshold for every
person cannot join one later in a full average- or complete-linkage run either by way of the other new faces:
a cluster of such faces scores below the threshold against P too (a mean or minimum of values below it)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from faceembed.faces.cluster_algos import LINKAGES, cluster_embeddings, unit_rows


def person_scores(new: np.ndarray, old: np.ndarray, old_people: np.ndarray, n_people: int,
                  method: str = "average", block: int = 4096) -> np.ndarray:
    """[M, n_people] linkage score of each new face against each person (people numbered 0..n_people-1 in
    ``old_people``); a person with no face scores -inf."""
    if method not in LINKAGES:
        raise ValueError(f"incremental assignment needs a linkage method ({', '.join(LINKAGES)}), not {method!r}")
    out = np.full((len(new), n_people), -np.inf, np.float64)
    if not len(old) or not len(new):
        return out
    order = np.argsort(old_people, kind="stable")
    people_sorted = old_people[order]
    starts = np.flatnonzero(np.r_[True, np.diff(people_sorted) != 0])
    present = people_sorted[starts]
    counts = np.diff(np.r_[starts, len(order)])
    old_sorted = old[order]
    for s in range(0, len(new), block):
        sim = (new[s:s + block] @ old_sorted.T).astype(np.float64)
        if method == "average":
            val = np.add.reduceat(sim, starts, axis=1) / counts
        elif method == "complete":
            val = np.minimum.reduceat(sim, starts, axis=1)
        else:
            val = np.maximum.reduceat(sim, starts, axis=1)
        out[s:s + block, present] = val
    return out


def assign_faces(old_emb: np.ndarray, old_people: Sequence[Hashable], new_emb: np.ndarray, threshold: float,
                 method: str = "average", forbidden: dict[int, set[Hashable]] | None = None,
                 ) -> tuple[list[Hashable | None], np.ndarray]:
    """For each new face: the existing person it joins (None when none), and for the faces that join nobody a
    new-people label (0..K-1, largest first; -1 for the faces that joined someone). ``forbidden``: new face
    index -> people it must not join."""
    new_emb, old_emb = unit_rows(new_emb), unit_rows(old_emb) if len(old_emb) else np.zeros((0, new_emb.shape[1]))
    names = sorted(set(old_people), key=str)
    number = {p: k for k, p in enumerate(names)}
    old_ids = np.asarray([number[p] for p in old_people], np.int64)
    scores = person_scores(new_emb, old_emb.astype(np.float32), old_ids, len(names), method)
    for i, people in (forbidden or {}).items():
        for p in people:
            if p in number:
                scores[i, number[p]] = -np.inf
    joined: list[Hashable | None] = [None] * len(new_emb)
    if len(names):
        best = scores.argmax(axis=1)
        for i, k in enumerate(best):
            if scores[i, k] >= threshold:
                joined[i] = names[k]
    left = np.asarray([i for i, p in enumerate(joined) if p is None], np.int64)
    fresh = np.full(len(new_emb), -1, np.int64)
    if len(left):
        fresh[left] = cluster_embeddings(new_emb[left], threshold, method)
    return joined, fresh


def update_people(old_emb: np.ndarray, old_people: Sequence[Hashable], fixed: np.ndarray, new_emb: np.ndarray,
                  threshold: float, method: str = "average") -> tuple[list[Hashable | None], np.ndarray, np.ndarray]:
    """An incremental run that gives the full run's answer: new faces first join the ``fixed`` (confirmed)
    people they match; then only the connected components of the threshold graph (over the other old faces
    and the remaining new ones) that a new face touches are clustered again, old faces with them. Clusters
    never cross components (see :mod:`faceembed.faces.cluster_algos`), so untouched components keep their
    people as they are.

    Returns (per new face: the fixed person it joined or None; ``rows``: indices into old + remaining-new
    faces ``np.r_[loose_old, M + remaining_new]`` that were re-clustered; their new-cluster ``labels``)."""
    from faceembed.faces.cluster_algos import components, similar_pairs

    new_emb = unit_rows(new_emb)
    fixed = np.asarray(fixed, bool)
    old_people = list(old_people)
    fixed_rows = np.flatnonzero(fixed)
    joined, _ = assign_faces(old_emb[fixed_rows], [old_people[i] for i in fixed_rows], new_emb, threshold,
                             method) if len(fixed_rows) else ([None] * len(new_emb), None)
    loose_old = np.flatnonzero(~fixed)
    rest = np.asarray([i for i, p in enumerate(joined) if p is None], np.int64)
    ids = np.r_[loose_old, len(old_emb) + rest].astype(np.int64)
    x = np.concatenate([unit_rows(old_emb[loose_old]) if len(loose_old) else new_emb[:0], new_emb[rest]])
    if not len(rest):
        return joined, ids[:0], np.zeros(0, np.int64)
    comp = components(len(x), similar_pairs(x, threshold))
    touched = np.isin(comp, comp[len(loose_old):])
    labels = cluster_embeddings(x[touched], threshold, method)
    return joined, ids[touched], labels
