"""Every face of every photo under a folder, embedded for clustering: one row per face (image, box, detector
score, rank within its photo, quality), the photos with no usable face listed with a reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.errors import FaceembedError


@dataclass
class PhotoFaces:
    """Faces found under a photo root: per face ``images`` (path relative to the root), ``boxes`` [x, y, w, h],
    detector ``scores``, ``ranks`` (0 = the photo's largest face), ``whole`` (used whole: no detector, or no face
    found with ``no_face="whole"``), ``embeddings`` [N, D] unit, ``sigma_sq`` [N, D] (PFE models) and
    ``quality`` (N,) or None; ``unassigned``: ``{"image", "box", "reason"}`` of photos without a usable face."""

    images: list[str] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    ranks: list[int] = field(default_factory=list)
    whole: list[bool] = field(default_factory=list)
    embeddings: np.ndarray | None = None
    sigma_sq: np.ndarray | None = None
    quality: np.ndarray | None = None
    unassigned: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def face(self, i: int) -> dict[str, Any]:
        """Face ``i`` as people.json writes it: image, box, quality (None without a PFE model), score."""
        q = None if self.quality is None else round(float(self.quality[i]), 4)
        return {"image": self.images[i], "box": self.boxes[i], "quality": q, "score": round(self.scores[i], 4)}


def xywh(box: Any) -> list[float]:
    """A detector box (x1, y1, x2, y2) as [x, y, w, h], rounded to 0.1 px."""
    from faceembed.faces.detect import box_xywh

    return box_xywh(box, 1)


def embed_photo_folder(root: str | Path, model: Any = "dlib-resnet", detector: str = "mtcnn", no_face: str = "skip",
                       progress: bool = False, relpaths: list[str] | None = None,
                       threads: int | None = None) -> PhotoFaces:
    """Detect, align and embed every face of every photo under ``root`` (recursive, any image format), or of
    ``relpaths`` under it. ``detector="none"``: each photo is one face crop, used whole. ``no_face``: a photo
    where MTCNN finds no face is ``skip``-ped (unassigned, reason "no face") or used ``whole``."""
    from faceembed.data.images import list_images
    from faceembed.faces.analyzer import FaceAnalyzer
    from faceembed.report.progress import progress_bar

    if detector not in ("mtcnn", "none"):
        raise FaceembedError(f"--detector must be one of mtcnn, none, not {detector!r}")
    if no_face not in ("skip", "whole"):
        raise FaceembedError(f"--no-face must be one of skip, whole, not {no_face!r}")
    root = Path(root)
    rels = list_images(root) if relpaths is None else list(relpaths)
    if not rels:
        raise FaceembedError("no image in this folder", root)
    analyzer = model if isinstance(model, FaceAnalyzer) else FaceAnalyzer(model, detector=detector, threads=threads)
    whole_an = FaceAnalyzer(analyzer.model, detector="none")
    out, embs, sigs, quals = PhotoFaces(), [], [], []
    bar, task = progress_bar(progress, len(rels), "faces")
    with bar:
        for rel in rels:
            _embed_one(root, rel, analyzer, whole_an, no_face, out, embs, sigs, quals)
            bar.advance(task)
    dim = analyzer.card.embedding_size
    out.embeddings = np.asarray(embs, np.float32).reshape(-1, dim)
    out.sigma_sq = np.asarray(sigs, np.float32).reshape(len(embs), -1) if sigs and sigs[0] is not None else None
    out.quality = np.asarray(quals, np.float64) if quals and quals[0] is not None else None
    return out


def _embed_one(root: Path, rel: str, analyzer: Any, whole_an: Any, no_face: str, out: PhotoFaces,
               embs: list, sigs: list, quals: list) -> None:
    """Append the faces of one photo to ``out`` (or an unassigned row)."""
    try:
        faces = analyzer.faces(root / rel)
        used_whole = analyzer.detector == "none"
        if not faces and no_face == "whole":
            faces, used_whole = whole_an.faces(root / rel), True
    except FaceembedError as exc:
        out.unassigned.append({"image": rel, "box": None, "reason": f"unreadable: {exc.one_line()}"})
        return
    if not faces:
        out.unassigned.append({"image": rel, "box": None, "reason": "no face"})
        return
    for rank, f in enumerate(faces):
        out.images.append(rel)
        out.boxes.append(xywh(f.box))
        out.scores.append(float(f.score))
        out.ranks.append(rank)
        out.whole.append(used_whole)
        embs.append(f.embedding)
        sigs.append(f.sigma_sq)
        quals.append(f.quality)


def save_photo_faces(path: str | Path, faces: PhotoFaces, meta: dict[str, Any] | None = None) -> None:
    """Cache ``faces`` as one .npz (written atomically) to reuse the embeddings across experiments."""
    import json

    from faceembed.files import write_with

    arrays = {"embeddings": faces.embeddings, "boxes": np.asarray(faces.boxes, np.float32).reshape(-1, 4),
              "scores": np.asarray(faces.scores, np.float32), "ranks": np.asarray(faces.ranks, np.int32),
              "whole": np.asarray(faces.whole, bool), "images": np.asarray(faces.images, dtype=str),
              "unassigned": np.asarray(json.dumps(faces.unassigned)), "meta": np.asarray(json.dumps(meta or {}))}
    if faces.sigma_sq is not None:
        arrays["sigma_sq"] = faces.sigma_sq
    if faces.quality is not None:
        arrays["quality"] = faces.quality

    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    write_with(path, _write)


def load_photo_faces(path: str | Path) -> PhotoFaces:
    """The :class:`PhotoFaces` cached by :func:`save_photo_faces`."""
    import json

    with np.load(path, allow_pickle=False) as z:
        return PhotoFaces(images=[str(s) for s in z["images"]], boxes=z["boxes"].round(1).tolist(),
                          scores=z["scores"].astype(float).tolist(), ranks=z["ranks"].astype(int).tolist(),
                          whole=z["whole"].astype(bool).tolist(), embeddings=z["embeddings"],
                          sigma_sq=z.get("sigma_sq"),
                          quality=z.get("quality"),
                          unassigned=json.loads(str(z["unassigned"])))


def faces_cache_path(people_json: str | Path) -> Path:
    """Where ``cluster`` keeps the faces' embeddings beside people.json: ``people.faces.npz``."""
    p = Path(people_json)
    return p.with_name(p.stem + ".faces.npz")
