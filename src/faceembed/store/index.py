"""Search a collection in memory: every face's embedding loaded from the store, kept current by the
collection's change counter (a cheap read), searched by cosine; a subject scores its best face."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from faceembed.errors import ShapeMismatchError
from faceembed.store.types import FaceMatrix

# faces: from here on FAISS IndexFlatIP (exact) instead of NumPy. At 100,000 faces of dim 128 FAISS was no faster
# for one probe and 4x slower for 100 (scripts/store_bench.py), so NumPy is kept well past that.
FAISS_FROM = 1_000_000
PROBE_CHUNK_FLOATS = 1 << 24  # NumPy: probes in chunks whose similarity matrix stays under 64 MB


@dataclass
class _Loaded:
    """One loaded state: faces sorted by subject, with where each subject's run starts."""

    version: int
    names: list[str]
    starts: np.ndarray
    codes: np.ndarray  # the subject index of each (sorted) face
    embeddings: np.ndarray
    faiss: object | None = None


def _load(m: FaceMatrix, method: str) -> _Loaded:
    order = np.argsort(np.asarray(m.subjects, dtype=object), kind="stable") if m.subjects else np.zeros(0, int)
    subjects = [m.subjects[i] for i in order]
    names = sorted(set(subjects))
    code_of = {s: i for i, s in enumerate(names)}
    codes = np.array([code_of[s] for s in subjects], np.int64)
    starts = np.searchsorted(codes, np.arange(len(names))) if len(codes) else np.zeros(0, np.int64)
    emb = np.ascontiguousarray(m.embeddings[order], np.float32)
    index = None
    if method == "faiss" or (method == "auto" and len(emb) >= FAISS_FROM):
        import faiss

        index = faiss.IndexFlatIP(emb.shape[1])
        index.add(emb)
    return _Loaded(m.version, names, starts, codes, emb, index)


class CollectionIndex:
    """A collection's faces in memory. ``method``: auto (NumPy below :data:`FAISS_FROM` faces, FAISS from there),
    numpy or faiss; both are exact. Thread-safe: a refresh swaps the loaded state whole."""

    def __init__(self, store, collection: str, method: str = "auto"):
        if method not in ("auto", "numpy", "faiss"):
            raise ValueError(f"method must be auto, numpy or faiss, not {method!r}")
        self.store, self.collection, self.method = store, collection, method
        self.dim = store.collection(collection).dim
        self._lock = threading.Lock()
        self._state = _load(store.matrix(collection), method)

    @property
    def version(self) -> int:
        """The change counter of the loaded state."""
        return self._state.version

    def __len__(self) -> int:
        return len(self._state.embeddings)

    def refresh(self) -> bool:
        """Reload when the collection changed since the last load (one small read when it did not)."""
        if self.store.version(self.collection) == self._state.version:
            return False
        with self._lock:
            if self.store.version(self.collection) == self._state.version:
                return False
            self._state = _load(self.store.matrix(self.collection), self.method)
        return True

    def search(self, embeddings: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """Per probe (unit ``[M, D]``) the ``k`` best ``(subject, cosine)``, best first; a subject's score is its
        best face's cosine. An empty collection gives ``[]`` per probe."""
        q = np.atleast_2d(np.asarray(embeddings, np.float32))
        if q.shape[1] != self.dim:
            raise ShapeMismatchError(f"probes of size {q.shape[1]} for a collection of dimension {self.dim}")
        st = self._state
        if not len(st.embeddings) or k < 1:
            return [[] for _ in q]
        k = min(k, len(st.names))
        if st.faiss is not None:
            return _faiss_best(st, q, k)
        step = max(1, PROBE_CHUNK_FLOATS // len(st.embeddings))
        return [hit for i in range(0, len(q), step) for hit in _numpy_best(st, q[i:i + step], k)]


def _numpy_best(st: _Loaded, probes: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    """The ``k`` best subjects of each probe: one matmul, then each subject's best face (its run's maximum)."""
    best = np.maximum.reduceat(probes @ st.embeddings.T, st.starts, axis=1)  # [M, subjects]
    top = np.argpartition(-best, k - 1, axis=1)[:, :k]
    out = []
    for i, cand in enumerate(top):
        cand = cand[np.lexsort((cand, -best[i, cand]))]
        out.append([(st.names[j], float(best[i, j])) for j in cand])
    return out


def _faiss_best(st: _Loaded, probes: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    """The ``k`` best subjects of each probe from FAISS's best faces (all probes in one call), asking again for
    more faces for the probes whose best faces hold fewer than ``k`` subjects (exact: a subject's best face is
    its first in the ranking)."""
    n = len(st.embeddings)
    want = min(n, max(64, 8 * k))
    out: list[list[tuple[str, float]]] = [[] for _ in probes]
    pending = list(range(len(probes)))
    while pending:
        scores, idx = st.faiss.search(np.ascontiguousarray(probes[pending]), want)
        still = []
        for row, p in enumerate(pending):
            seen: dict[int, float] = {}
            for s, i in zip(scores[row], idx[row], strict=True):
                if i >= 0 and int(st.codes[i]) not in seen:
                    seen[int(st.codes[i])] = float(s)
            if len(seen) >= k or want >= n:
                out[p] = [(st.names[c], v) for c, v in sorted(seen.items(), key=lambda t: (-t[1], t[0]))[:k]]
            else:
                still.append(p)
        pending, want = still, min(n, want * 4)
    return out
