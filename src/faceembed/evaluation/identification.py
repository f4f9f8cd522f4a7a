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
from faceembed.evaluation.scores import fuse_gaussians, l2_normalize
from faceembed.files import write_with

GALLERY_FORMAT = "faceembed-gallery"
GALLERY_VERSION = 1
FAISS_MIN_GALLERY = 100_000
UNKNOWN = "unknown"


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
    faces, labels = data.get("faces"), data.get("face_labels")
    if faces is not None and (labels is None or len(faces) != len(labels) or faces.ndim != 2):
        raise InputFormatError("gallery 'faces' and 'face_labels' do not match", path)
    return Gallery(names, t, np.asarray(data["counts"]), sig, json.loads(str(data["meta"])),
                   None if faces is None else np.asarray(faces, np.float32),
                   None if labels is None else [str(n) for n in labels])


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


def identify(gallery: Gallery, probes: np.ndarray, k: int = 5, threshold: float | None = None,
             method: str = "auto") -> list[list[tuple[str, float]]]:
    """Top-``k`` ``(name, cosine)`` per probe embedding; the first name becomes ``"unknown"`` when its score is
    below ``threshold``."""
    idx, sc = search(gallery.templates, l2n(probes), k, method)
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


def _ranks(gallery: Gallery, probes: np.ndarray, truth: Sequence[str], method: str) -> tuple[np.ndarray, ...]:
    """1-based rank of the true person for each probe (gallery size + 1 if absent), and top-1 scores/names."""
    idx, sc = search(gallery.templates, l2n(probes), len(gallery), method)
    names = np.asarray(gallery.names)[idx]
    hit = names == np.asarray(truth)[:, None]
    ranks = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, len(gallery) + 1)
    return ranks, sc[:, 0], names[:, 0]


def evaluate_identification(embeddings: np.ndarray, labels: Sequence[str], seed: int = 0,
                            gallery_fraction: float = 0.5, min_images: int = 2, impostor_fraction: float = 0.2,
                            far: float = 1e-2, max_rank: int = 20, sigma_sq: np.ndarray | None = None,
                            method: str = "auto", compare_faiss: bool = False) -> dict[str, Any]:
    """Closed-set rank-1 / rank-5 / CMC (every person enrolled) and open-set DIR at ``far`` (a seeded
    ``impostor_fraction`` of the people left out of the gallery; all their images are impostor probes; the
    threshold is the lowest score that at most ``far`` of impostor probes exceed). ``compare_faiss`` adds
    :func:`search_agreement` of the closed-set search."""
    lab = np.asarray(labels)
    g_rows, p_rows = split_gallery_probes(lab, seed, gallery_fraction, min_images)
    if len(g_rows) == 0:
        raise InputFormatError(f"no person has >= {max(2, min_images)} images: nothing to evaluate")
    sig = None if sigma_sq is None else np.asarray(sigma_sq)[g_rows]
    gal = build_gallery(np.asarray(embeddings)[g_rows], lab[g_rows], sig)
    ranks, _, _ = _ranks(gal, np.asarray(embeddings)[p_rows], lab[p_rows], method)
    cmc = [float((ranks <= r).mean()) for r in range(1, max_rank + 1)]
    result: dict[str, Any] = {
        "people": len(gal), "gallery_images": int(len(g_rows)), "probes": int(len(p_rows)), "seed": seed,
        "gallery_fraction": gallery_fraction, "min_images": min_images,
        "rank1": cmc[0], "rank5": cmc[min(4, max_rank - 1)], "cmc": cmc,
    }
    if compare_faiss:
        result["numpy_vs_faiss"] = search_agreement(gal.templates, l2n(np.asarray(embeddings)[p_rows]))
    # open set
    people = np.asarray(gal.names)
    rng = np.random.default_rng(seed + 1)
    n_out = int(round(len(people) * impostor_fraction))
    if 0 < n_out < len(people):
        held = set(people[rng.permutation(len(people))[:n_out]].tolist())
        enrolled = np.array([n not in held for n in lab[g_rows]])
        gal2 = build_gallery(np.asarray(embeddings)[g_rows][enrolled], lab[g_rows][enrolled],
                             None if sig is None else sig[enrolled])
        gen = np.array([n not in held for n in lab[p_rows]])
        imp_rows = np.flatnonzero(np.isin(lab, list(held)))
        r_gen, s_gen, _ = _ranks(gal2, np.asarray(embeddings)[p_rows][gen], lab[p_rows][gen], method)
        _, s_imp, _ = _ranks(gal2, np.asarray(embeddings)[imp_rows], lab[imp_rows], method)
        n_fa = int(np.floor(far * len(s_imp)))
        thr = float(np.sort(s_imp)[::-1][n_fa]) if n_fa < len(s_imp) else float(s_imp.min()) - 1e-6
        result["open_set"] = {
            "far_target": far, "threshold": thr, "impostor_people": n_out, "impostor_probes": int(len(s_imp)),
            "genuine_probes": int(gen.sum()), "far_achieved": float((s_imp > thr).mean()),
            "dir": float(((r_gen == 1) & (s_gen > thr)).mean()), "enrolled_people": len(gal2),
            "far_resolution_ok": bool(len(s_imp) * far >= 1),
        }
    return result


def search_agreement(templates: np.ndarray, probes: np.ndarray, k: int = 5) -> dict[str, float]:
    """Run NumPy and FAISS search on the same data: share of probes with the same top-1 template, same top-k
    lists, and the largest score difference."""
    i_np, s_np = search(templates, probes, k, "numpy")
    i_fa, s_fa = search(templates, probes, k, "faiss")
    return {"top1_agreement": float((i_np[:, 0] == i_fa[:, 0]).mean()),
            "topk_agreement": float((i_np == i_fa).all(axis=1).mean()),
            "max_score_diff": float(np.abs(s_np - s_fa).max()) if s_np.size else 0.0, "k": int(i_np.shape[1])}
