"""Face identification (1:N): person templates (galleries), top-k search, closed- and open-set evaluation.

* Template of a person = mean of the L2-normalised embeddings of their images, re-normalised; with PFE
  outputs (``sigma_sq``) the Gaussians are fused as the PFE paper does (:func:`fuse_gaussians`) and the fused
  mean re-normalised. Probes are compared with templates by cosine similarity.
* Search is exact: a NumPy matrix product in probe chunks, or FAISS ``IndexFlatIP`` (same inner products,
  for large galleries; ``method="auto"`` switches at :data:`FAISS_MIN_GALLERY` templates).
* Gallery file (``.npz``, see docs/formats.md): ``format``, ``version``, ``names``, ``templates``, ``counts``,
  optional ``sigma_sq``, ``meta`` (JSON text).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.errors import InputFormatError, MissingInputError, NonFiniteError, ShapeMismatchError
from faceembed.evaluation.scores import fuse_gaussians, l2_normalize, mls_scores
from faceembed.files import write_with

GALLERY_FORMAT = "faceembed-gallery"
GALLERY_VERSION = 1
FAISS_MIN_GALLERY = 100_000
UNKNOWN = "unknown"
METRICS = ("cosine", "mls")


def l2n(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (float32)."""
    return l2_normalize(x, dtype=np.float32)


@dataclass
class Gallery:
    """Enrolled people: ``names[i]`` has the unit-norm template ``templates[i]`` made of ``counts[i]`` images."""

    names: list[str]
    templates: np.ndarray
    counts: np.ndarray
    sigma_sq: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    faces: np.ndarray | None = None  # optional: every enrolled unit embedding, ``face_labels[i]``'s
    face_labels: list[str] | None = None
    face_sigma_sq: np.ndarray | None = None  # optional, PFE: every enrolled face's sigma^2 (rows of ``faces``)

    def __len__(self) -> int:
        return len(self.names)


def build_gallery(embeddings: np.ndarray, labels: Sequence[str], sigma_sq: np.ndarray | None = None,
                  meta: dict[str, Any] | None = None) -> Gallery:
    """One template per distinct label (people sorted by name); see the module doc for the rule."""
    e = np.asarray(embeddings, dtype=np.float32)
    if e.ndim != 2 or e.shape[0] != len(labels):
        raise ShapeMismatchError(f"{len(labels)} labels but embeddings of shape {list(e.shape)}")
    if not np.isfinite(e).all():
        raise NonFiniteError("embeddings contain NaN or Inf")
    e = l2n(e)
    lab = np.asarray(labels)
    names = sorted(set(lab.tolist()))
    temps, sigs, counts = [], [], []
    for name in names:
        rows = np.flatnonzero(lab == name)
        counts.append(len(rows))
        if sigma_sq is None:
            temps.append(e[rows].mean(axis=0))
        else:
            mu, s = fuse_gaussians(e[rows], np.asarray(sigma_sq)[rows])
            temps.append(mu)
            sigs.append(s)
    return Gallery(names, l2n(np.stack(temps)) if temps else np.zeros((0, e.shape[1]), np.float32),
                   np.asarray(counts, dtype=np.int64),
                   np.stack(sigs).astype(np.float32) if sigs else None, dict(meta or {}))


def save_gallery(path: str | Path, gallery: Gallery) -> None:
    """Write ``gallery`` as an ``.npz`` atomically (no pickled objects)."""
    arrays: dict[str, np.ndarray] = {
        "format": np.array(GALLERY_FORMAT), "version": np.array(GALLERY_VERSION),
        "names": np.array(gallery.names, dtype=str), "templates": gallery.templates.astype(np.float32),
        "counts": gallery.counts.astype(np.int64), "meta": np.array(json.dumps(gallery.meta)),
    }
    if gallery.sigma_sq is not None:
        arrays["sigma_sq"] = gallery.sigma_sq.astype(np.float32)
    if gallery.faces is not None:
        arrays["faces"] = gallery.faces.astype(np.float32)
        arrays["face_labels"] = np.array(gallery.face_labels, dtype=str)
        if gallery.face_sigma_sq is not None:
            arrays["face_sigma_sq"] = gallery.face_sigma_sq.astype(np.float32)

    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    write_with(path, _write)


def load_gallery(path: str | Path) -> Gallery:
    """Read a gallery written by :func:`save_gallery` (checked: format, shapes, finite unit templates)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError("gallery not found", path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile / numpy raise several types on corrupt files
        raise InputFormatError(f"not a gallery .npz ({type(exc).__name__})", path) from None
    if str(data.get("format", "")) != GALLERY_FORMAT:
        raise InputFormatError(f"not a faceembed gallery (no format '{GALLERY_FORMAT}')", path)
    if int(data["version"]) != GALLERY_VERSION:
        raise InputFormatError(f"gallery version {int(data['version'])} is not {GALLERY_VERSION}", path)
    names, t = [str(n) for n in data["names"]], np.asarray(data["templates"], dtype=np.float32)
    if t.ndim != 2 or t.shape[0] != len(names) or len(data["counts"]) != len(names):
        raise InputFormatError(f"{len(names)} names but templates of shape {list(t.shape)}", path)
    if not np.isfinite(t).all():
        raise InputFormatError("templates contain NaN or Inf", path)
    sig = np.asarray(data["sigma_sq"], dtype=np.float32) if "sigma_sq" in data else None
    faces, labels, face_sig = data.get("faces"), data.get("face_labels"), data.get("face_sigma_sq")
    if faces is not None and (labels is None or len(faces) != len(labels) or faces.ndim != 2):
        raise InputFormatError("gallery 'faces' and 'face_labels' do not match", path)
    if face_sig is not None and (faces is None or face_sig.shape != faces.shape):
        raise InputFormatError("gallery 'face_sigma_sq' does not match 'faces'", path)
    return Gallery(names, t, np.asarray(data["counts"]), sig, json.loads(str(data["meta"])),
                   None if faces is None else np.asarray(faces, np.float32),
                   None if labels is None else [str(n) for n in labels],
                   None if face_sig is None else np.asarray(face_sig, np.float32))


def search(templates: np.ndarray, probes: np.ndarray, k: int = 5, method: str = "auto",
           chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` templates by inner product (cosine for unit vectors) for every probe.

    Returns ``(indices [M, k], scores [M, k])``, best first (``k`` is capped at the gallery size). ``method``:
    ``"numpy"`` (exact, chunked matrix product), ``"faiss"`` (``IndexFlatIP``, exact) or ``"auto"``.
    """
    t = np.ascontiguousarray(templates, dtype=np.float32)
    p = np.ascontiguousarray(probes, dtype=np.float32)
    if t.ndim != 2 or p.ndim != 2 or t.shape[1] != p.shape[1]:
        raise ShapeMismatchError(f"gallery {list(t.shape)} and probes {list(p.shape)} do not match")
    k = max(1, min(int(k), t.shape[0]))
    if method == "auto":
        method = "faiss" if t.shape[0] >= FAISS_MIN_GALLERY else "numpy"
    if method == "faiss":
        import faiss

        index = faiss.IndexFlatIP(t.shape[1])
        index.add(t)
        scores, idx = index.search(p, k)
        return idx.astype(np.int64), scores.astype(np.float32)
    if method != "numpy":
        raise ValueError(f"method must be 'auto', 'numpy' or 'faiss', got {method!r}")
    idx = np.empty((len(p), k), dtype=np.int64)
    sc = np.empty((len(p), k), dtype=np.float32)
    for s in range(0, len(p), chunk):
        sim = p[s:s + chunk] @ t.T
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < t.shape[0] else np.tile(np.arange(k), (len(sim), 1))
        ps = np.take_along_axis(sim, part, axis=1)
        order = np.argsort(-ps, axis=1, kind="stable")
        idx[s:s + chunk] = np.take_along_axis(part, order, axis=1)
        sc[s:s + chunk] = np.take_along_axis(ps, order, axis=1)
    return idx, sc


def mls_search(templates: np.ndarray, template_sigma_sq: np.ndarray, probes: np.ndarray,
               probe_sigma_sq: np.ndarray, k: int = 5, chunk_elements: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` templates by mutual likelihood score (:func:`~faceembed.evaluation.scores.mls_scores`, float64,
    higher = more alike) of each probe Gaussian ``(mu, sigma_sq)`` against each template's (fused mean and fused
    sigma^2). Exact; probes go in chunks of about ``chunk_elements`` probe x template x dimension values.
    Returns ``(indices [M, k], scores [M, k])``, best first; equal scores keep the template order."""
    t, ts = np.asarray(templates, np.float64), np.asarray(template_sigma_sq, np.float64)
    p, ps = np.asarray(probes, np.float64), np.asarray(probe_sigma_sq, np.float64)
    if t.ndim != 2 or p.ndim != 2 or t.shape[1] != p.shape[1] or ts.shape != t.shape or ps.shape != p.shape:
        raise ShapeMismatchError(f"gallery {list(t.shape)} (sigma_sq {list(ts.shape)}) and probes {list(p.shape)} "
                                 f"(sigma_sq {list(ps.shape)}) do not match")
    (g, d), k = t.shape, max(1, min(int(k), t.shape[0]))
    idx, sc = np.empty((len(p), k), np.int64), np.empty((len(p), k), np.float64)
    step = max(1, chunk_elements // max(1, g * d))
    for s in range(0, len(p), step):
        m = len(p[s:s + step])
        score = mls_scores(_each(p[s:s + step], g, 1), _each(ps[s:s + step], g, 1), _each(t, m, 0),
                           _each(ts, m, 0)).reshape(m, g)
        order = np.argsort(-score, axis=1, kind="stable")[:, :k]
        idx[s:s + m], sc[s:s + m] = order, np.take_along_axis(score, order, axis=1)
    return idx, sc


def _each(a: np.ndarray, times: int, axis: int) -> np.ndarray:
    """Rows of ``a`` (n, D) paired with ``times`` others, as (n * times, D) or (times * n, D) rows: ``axis`` 1
    repeats each row ``times`` times in place, ``axis`` 0 repeats the whole block."""
    shape = (len(a), times, a.shape[1]) if axis == 1 else (times, len(a), a.shape[1])
    return np.broadcast_to(np.expand_dims(a, axis), shape).reshape(-1, a.shape[1])


def _search_by(gallery: Gallery, probes: np.ndarray, k: int, method: str, metric: str,
               probe_sigma_sq: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`search` (cosine) or :func:`mls_search` (``metric="mls"``: the gallery's and the probes' sigma^2)."""
    if metric == "cosine":
        return search(gallery.templates, l2n(probes), k, method)
    if metric != "mls":
        raise InputFormatError(f"--metric must be one of {', '.join(METRICS)}, not {metric!r}")
    if gallery.sigma_sq is None:
        raise InputFormatError("--metric mls needs a gallery enrolled with a PFE model (it stores fused sigma_sq); "
                               "this gallery has none")
    if probe_sigma_sq is None:
        raise InputFormatError("--metric mls needs a PFE model (outputs sigma_sq) for the probes")
    return mls_search(gallery.templates, gallery.sigma_sq, l2n(probes), probe_sigma_sq, k)


def identify(gallery: Gallery, probes: np.ndarray, k: int = 5, threshold: float | None = None,
             method: str = "auto", metric: str = "cosine",
             probe_sigma_sq: np.ndarray | None = None) -> list[list[tuple[str, float]]]:
    """Top-``k`` ``(name, score)`` per probe embedding, by cosine or (``metric="mls"``, with the probes'
    ``probe_sigma_sq``) by mutual likelihood score; the first name becomes ``"unknown"`` when its score is
    below ``threshold`` (in the metric's units)."""
    idx, sc = _search_by(gallery, probes, k, method, metric, probe_sigma_sq)
    out = []
    for row_i, row_s in zip(idx, sc, strict=True):
        hits = [(gallery.names[int(i)], float(s)) for i, s in zip(row_i, row_s, strict=True)]
        if threshold is not None and hits and hits[0][1] < threshold:
            hits.insert(0, (UNKNOWN, hits[0][1]))
            hits = hits[:k]
        out.append(hits)
    return out


def split_gallery_probes(labels: Sequence[str], seed: int = 0, gallery_fraction: float = 0.5,
                         min_images: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Per person (with >= ``min_images`` images, at least 2) shuffle their images with ``seed`` and put
    ``round(n * gallery_fraction)`` (at least 1, at most n - 1) in the gallery, the rest in the probes.
    Returns ``(gallery_rows, probe_rows)``, sorted."""
    if not 0 < gallery_fraction < 1:
        raise ValueError(f"gallery_fraction must be in (0, 1), got {gallery_fraction}")
    rng = np.random.default_rng(seed)
    lab = np.asarray(labels)
    g, p = [], []
    for name in sorted(set(lab.tolist())):
        rows = np.flatnonzero(lab == name)
        if len(rows) < max(2, min_images):
            continue
        rows = rows[rng.permutation(len(rows))]
        n_g = int(min(max(1, round(len(rows) * gallery_fraction)), len(rows) - 1))
        g.extend(rows[:n_g].tolist())
        p.extend(rows[n_g:].tolist())
    return np.sort(np.asarray(g, dtype=np.int64)), np.sort(np.asarray(p, dtype=np.int64))


def _ranks(gallery: Gallery, probes: np.ndarray, truth: Sequence[str], method: str, metric: str = "cosine",
           probe_sigma_sq: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """1-based rank of the true person for each probe (gallery size + 1 if absent), and top-1 scores/names."""
    idx, sc = _search_by(gallery, probes, len(gallery), method, metric, probe_sigma_sq)
    names = np.asarray(gallery.names)[idx]
    hit = names == np.asarray(truth)[:, None]
    ranks = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, len(gallery) + 1)
    return ranks, sc[:, 0], names[:, 0]


@dataclass
class _Split:
    """The rows of one evaluation: gallery and probe rows, the open-set gallery and its held-out people."""

    emb: np.ndarray
    sig: np.ndarray | None
    lab: np.ndarray
    p_rows: np.ndarray
    gal: Gallery
    gal2: Gallery | None = None
    held: set[str] = field(default_factory=set)

    def probe(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return self.emb[rows], self.lab[rows], None if self.sig is None else self.sig[rows]


def _metric_result(sp: _Split, metric: str, method: str, far: float, max_rank: int) -> dict[str, Any]:
    """Closed-set rank-1 / rank-5 / CMC and open-set DIR at ``far`` of one metric."""
    e, t, s = sp.probe(sp.p_rows)
    ranks, _, _ = _ranks(sp.gal, e, t, method, metric, s)
    cmc = [float((ranks <= r).mean()) for r in range(1, max_rank + 1)]
    out: dict[str, Any] = {"rank1": cmc[0], "rank5": cmc[min(4, max_rank - 1)], "cmc": cmc}
    if sp.gal2 is None:
        return out
    gen_rows = sp.p_rows[np.array([n not in sp.held for n in sp.lab[sp.p_rows]], bool)]
    imp_rows = np.flatnonzero(np.isin(sp.lab, list(sp.held)))
    e, t, s = sp.probe(gen_rows)
    r_gen, s_gen, _ = _ranks(sp.gal2, e, t, method, metric, s)
    e, t, s = sp.probe(imp_rows)
    _, s_imp, _ = _ranks(sp.gal2, e, t, method, metric, s)
    n_fa = int(np.floor(far * len(s_imp)))
    thr = float(np.sort(s_imp)[::-1][n_fa]) if n_fa < len(s_imp) else float(s_imp.min()) - 1e-6
    out["open_set"] = {
        "far_target": far, "threshold": thr, "impostor_people": len(sp.held), "impostor_probes": int(len(s_imp)),
        "genuine_probes": int(len(gen_rows)), "far_achieved": float((s_imp > thr).mean()),
        "dir": float(((r_gen == 1) & (s_gen > thr)).mean()), "enrolled_people": len(sp.gal2),
        "far_resolution_ok": bool(len(s_imp) * far >= 1),
    }
    return out


def evaluate_identification(embeddings: np.ndarray, labels: Sequence[str], seed: int = 0,
                            gallery_fraction: float = 0.5, min_images: int = 2, impostor_fraction: float = 0.2,
                            far: float = 1e-2, max_rank: int = 20, sigma_sq: np.ndarray | None = None,
                            method: str = "auto", compare_faiss: bool = False) -> dict[str, Any]:
    """Closed-set rank-1 / rank-5 / CMC (every person enrolled) and open-set DIR at ``far`` (a seeded
    ``impostor_fraction`` of the people left out of the gallery; all their images are impostor probes; the
    threshold is the lowest score that at most ``far`` of impostor probes exceed). ``compare_faiss`` adds
    :func:`search_agreement` of the closed-set search.

    The top-level figures are cosine's. With ``sigma_sq`` (PFE) the gallery is fused and ``by_metric`` holds
    the same figures for ``cosine`` and for ``mls`` (probe Gaussians against the fused templates)."""
    lab, emb = np.asarray(labels), np.asarray(embeddings)
    g_rows, p_rows = split_gallery_probes(lab, seed, gallery_fraction, min_images)
    if len(g_rows) == 0:
        raise InputFormatError(f"no person has >= {max(2, min_images)} images: nothing to evaluate")
    sig_all = None if sigma_sq is None else np.asarray(sigma_sq)
    sig = None if sig_all is None else sig_all[g_rows]
    sp = _Split(emb, sig_all, lab, p_rows, build_gallery(emb[g_rows], lab[g_rows], sig))
    people = np.asarray(sp.gal.names)
    rng = np.random.default_rng(seed + 1)
    n_out = int(round(len(people) * impostor_fraction))
    if 0 < n_out < len(people):  # open set
        sp.held = set(people[rng.permutation(len(people))[:n_out]].tolist())
        enrolled = np.array([n not in sp.held for n in lab[g_rows]])
        sp.gal2 = build_gallery(emb[g_rows][enrolled], lab[g_rows][enrolled], None if sig is None else sig[enrolled])
    by_metric = {m: _metric_result(sp, m, method, far, max_rank) for m in (METRICS if sig is not None else METRICS[:1])}
    result: dict[str, Any] = {
        "people": len(sp.gal), "gallery_images": int(len(g_rows)), "probes": int(len(p_rows)), "seed": seed,
        "gallery_fraction": gallery_fraction, "min_images": min_images, **by_metric["cosine"],
    }
    if compare_faiss:
        result["numpy_vs_faiss"] = search_agreement(sp.gal.templates, l2n(emb[p_rows]))
    if len(by_metric) > 1:
        result["by_metric"] = by_metric
    return result


def search_agreement(templates: np.ndarray, probes: np.ndarray, k: int = 5) -> dict[str, float]:
    """Run NumPy and FAISS search on the same data: share of probes with the same top-1 template, same top-k
    lists, and the largest score difference."""
    i_np, s_np = search(templates, probes, k, "numpy")
    i_fa, s_fa = search(templates, probes, k, "faiss")
    return {"top1_agreement": float((i_np[:, 0] == i_fa[:, 0]).mean()),
            "topk_agreement": float((i_np == i_fa).all(axis=1).mean()),
            "max_score_diff": float(np.abs(s_np - s_fa).max()) if s_np.size else 0.0, "k": int(i_np.shape[1])}
