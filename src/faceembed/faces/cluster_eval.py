"""``evaluate-clustering``: a people.json against a one-folder-per-person truth tree, with peer clusterings of the
same embeddings (dlib's Chinese Whispers, DBSCAN) as rows of the same table.

How faces map to the truth: a photo's label is its folder's name, and it labels one face, the photo's own (the
detected face whose box centre is nearest the photo's centre; LFW centres the named person). Extra faces in a
photo are clustered like any other (they can join or bridge people) but are not scored, having no label. A photo
with no face in people.json (no face found, low quality, unreadable, or missing) counts as a singleton, so every
photo of the truth tree is scored and leaving faces out is never rewarded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from faceembed.errors import FaceembedError
from faceembed.evaluation.clustering import clustering_scores

CW_DEFAULT = 0.5  # face_recognition's tolerance, the Euclidean distance its users pass to Chinese Whispers
CW_GRID = (0.25, 0.28, 0.3, 0.32, 0.34, 0.36, 0.38, 0.4, 0.45, 0.5)
DBSCAN_GRID = (0.02, 0.025, 0.03, 0.035, 0.04, 0.05, 0.06, 0.08)


def _image_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError):
        return None


def own_faces(images: list[str], boxes: list[list[float] | None], root: str | Path) -> dict[str, int]:
    """Index of each photo's own face: the box whose centre is nearest the photo's centre."""
    root = Path(root)
    best: dict[str, tuple[float, int]] = {}
    sizes: dict[str, tuple[int, int] | None] = {}
    for i, (img, box) in enumerate(zip(images, boxes, strict=True)):
        if img not in sizes:
            sizes[img] = _image_size(root / img)
        size = sizes[img]
        if size is None:  # unreadable now: the first face listed (the largest) is taken
            d = float(i)
        else:
            x, y, w, h = box
            d = (x + w / 2 - size[0] / 2) ** 2 + (y + h / 2 - size[1] / 2) ** 2
        if img not in best or d < best[img][0]:
            best[img] = (d, i)
    return {img: i for img, (_, i) in best.items()}


def truth_of(folder: str | Path) -> dict[str, str]:
    """``{photo path relative to folder: person}`` of a one-folder-per-person tree."""
    from faceembed.data.images import list_identity_folder

    items = list_identity_folder(folder)
    if not items:
        raise FaceembedError("no person folder with photos in --truth", folder)
    return dict(items)


def score_labels(images: list[str], boxes: list, labels: np.ndarray, truth: dict[str, str],
                 root: str | Path) -> dict[str, Any]:
    """Scores of per-face ``labels`` (-1: unassigned) against ``truth``, scored on each truth photo's own face;
    photos without one become singletons (see the module docstring)."""
    own = own_faces(images, boxes, root)
    clusters, people, fresh = [], [], int(max(labels.max(initial=-1), -1)) + 1
    missing = 0
    for img, person in truth.items():
        i = own.get(img)
        if i is None or labels[i] < 0:
            clusters.append(fresh)
            fresh += 1
            missing += i is None
        else:
            clusters.append(int(labels[i]))
        people.append(person)
    s = clustering_scores(clusters, people)
    s.update({"photos_without_face": missing, "extra_faces": len(images) - len(own)})
    return s


def _doc_faces(doc: dict[str, Any]) -> tuple[list[str], list, np.ndarray]:
    images, boxes, labels = [], [], []
    for k, p in enumerate(doc["people"]):
        for f in p["faces"]:
            images.append(f["image"])
            boxes.append(f["box"])
            labels.append(k)
    for u in doc["unassigned"]:
        if u.get("box") is not None:
            images.append(u["image"])
            boxes.append(u["box"])
            labels.append(-1)
    return images, boxes, np.asarray(labels, np.int64)


def peer_rows(emb: np.ndarray, images: list[str], boxes: list, truth: dict[str, str], root: str | Path,
              best: bool = True) -> list[dict[str, Any]]:
    """Peer clusterings of the same embeddings: Chinese Whispers at 0.5 and (``best``) at its best threshold
    on this truth, DBSCAN at its best eps on this truth. "Best" rows are tuned on the data they are scored on:
    an upper bound no user gets without labels."""
    from faceembed.faces.cluster_algos import chinese_whispers, dbscan

    rows = []

    def run(name: str, setting: str, labels: np.ndarray) -> dict[str, Any]:
        return {"method": name, "setting": setting, **score_labels(images, boxes, labels, truth, root)}

    rows.append(run("dlib chinese whispers", f"euclidean {CW_DEFAULT} (face_recognition)",
                    chinese_whispers(emb, CW_DEFAULT)))
    if best:
        grid = [run("dlib chinese whispers", f"euclidean {t} (best on the truth)", chinese_whispers(emb, t))
                for t in CW_GRID]
        rows.append(max(grid, key=lambda r: r["bcubed_f"]))
        grid = [run("scikit-learn DBSCAN", f"cosine eps {e}, min_samples 2 (best on the truth)",
                    dbscan(emb, 1.0 - e)) for e in DBSCAN_GRID]
        rows.append(max(grid, key=lambda r: r["bcubed_f"]))
    return rows


def evaluate_people(people_json: str | Path, truth: str | Path, photos: str | Path | None = None,
                    peers: bool = True, json_out: str | Path | None = None) -> dict[str, Any]:
    """BCubed and pairwise precision / recall / F and the number of people of ``people_json`` against the
    folders of ``truth`` (photo paths in people.json are relative to ``photos``, default ``truth``); with
    ``peers`` and the embeddings cache ``cluster`` wrote beside people.json, peer rows on the same embeddings."""
    from faceembed.faces.cluster import read_people
    from faceembed.faces.cluster_photos import faces_cache_path, load_photo_faces
    from faceembed.files import write_json

    doc = read_people(people_json)
    root = Path(photos) if photos is not None else Path(truth)
    labels_truth = truth_of(truth)
    images, boxes, labels = _doc_faces(doc)
    meta = doc.get("meta", {})
    rows = [{"method": "faceembed cluster", "setting": f"{meta.get('algorithm', '?')} linkage at FAR "
             f"{meta.get('far', '?')} (threshold {meta.get('threshold', '?')})",
             **score_labels(images, boxes, labels, labels_truth, root)}]
    cache = faces_cache_path(people_json)
    if peers and cache.is_file():
        faces = load_photo_faces(cache)
        rows += peer_rows(faces.embeddings, faces.images, faces.boxes, labels_truth, root)
    result = {"people_json": str(people_json), "truth": str(truth), "rows": rows,
              "peers": "on the same embeddings" if len(rows) > 1 else f"none (no {cache.name})"}
    if json_out:
        write_json(json_out, result)
    return result

