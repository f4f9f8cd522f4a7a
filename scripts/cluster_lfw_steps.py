"""The incremental and the re-lit steps of scripts/cluster_lfw.py (see its docstring); run that script."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _subset(faces, rows):
    from faceembed.faces.cluster_photos import PhotoFaces

    return PhotoFaces(images=[faces.images[i] for i in rows], boxes=[faces.boxes[i] for i in rows],
                      scores=[faces.scores[i] for i in rows], ranks=[faces.ranks[i] for i in rows],
                      whole=[faces.whole[i] for i in rows], embeddings=faces.embeddings[rows])


def _store_labels(store, faces) -> np.ndarray:
    """Per face of ``faces``, a number for its subject in the store (matched by image and box)."""
    where = {(f.image, tuple(round(v, 1) for v in f.box)): f.subject for f in store.faces("people")}
    names = {s: k for k, s in enumerate(sorted(set(where.values())))}
    return np.asarray([names[where[(im, tuple(round(v, 1) for v in b))]]
                       for im, b in zip(faces.images, faces.boxes, strict=True)], np.int64)


def incremental_step(args, cache: Path, setting: tuple[str, float]) -> dict:
    """Half of LFW's photos (seeded) clustered into a store, two corrections, the other half added."""
    import faceembed as fe
    from faceembed.faces.cluster import card_threshold
    from faceembed.faces.cluster_algos import cluster_embeddings
    from faceembed.faces.cluster_eval import score_labels, truth_of
    from faceembed.faces.cluster_photos import load_photo_faces
    from faceembed.faces.people_edit import list_people, not_person, rename_person
    from faceembed.faces.people_store import cluster_into_store
    from faceembed.store import open_store

    algo, far = setting
    root = Path(args.data) / "lfw" / "images"
    faces, truth = load_photo_faces(cache), truth_of(root)
    photos = sorted(set(faces.images))
    rng = np.random.default_rng(args.seed)
    first = set(rng.permutation(photos)[: len(photos) // 2].tolist())
    rows1 = [i for i, im in enumerate(faces.images) if im in first]
    rows2 = [i for i, im in enumerate(faces.images) if im not in first]
    t = card_threshold(fe.FaceAnalyzer(args.model).card, far)
    full = score_labels(faces.images, faces.boxes, cluster_embeddings(faces.embeddings, t, algo), truth, root)
    db = Path("runs/cluster/incremental.db")
    for p in db.parent.glob(db.name + "*"):
        p.unlink()
    t0 = time.perf_counter()
    cluster_into_store(None, str(db), faces=_subset(faces, rows1), far=far, algorithm=algo)
    t1 = time.perf_counter()
    people = list_people(str(db))
    named, other = people[0], people[1]
    rename_person(str(db), named["person"], "Named Person")
    victim = other["face_ids"][0]
    not_person(str(db), other["person"], victim)
    t2 = time.perf_counter()
    added = cluster_into_store(None, str(db), faces=_subset(faces, rows2), far=far, algorithm=algo)
    t3 = time.perf_counter()
    after = {p["person"]: p for p in list_people(str(db))}
    with open_store(str(db)) as store:
        labels = _store_labels(store, faces)
    incr = score_labels(faces.images, faces.boxes, labels, truth, root)
    survived = ("Named Person" in after and set(named["face_ids"]) <= set(after["Named Person"]["face_ids"])
                and victim not in after.get(other["person"], {"face_ids": []})["face_ids"])
    return {"setting": {"algorithm": algo, "far": far, "threshold": round(t, 5)}, "seed": args.seed,
            "photos_first_half": len(first), "photos_second_half": len(photos) - len(first),
            "full_run_bcubed_f": round(full["bcubed_f"], 4), "incremental_bcubed_f": round(incr["bcubed_f"], 4),
            "difference": round(full["bcubed_f"] - incr["bcubed_f"], 4), "incremental": {
                k: round(v, 4) if isinstance(v, float) else v for k, v in incr.items()},
            "second_half": added, "corrections_survive": bool(survived),
            "seconds": {"first_half_into_store": round(t1 - t0, 2), "second_half_added": round(t3 - t2, 2)}}


def relight(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A strong lighting change: a one-sided light ramp (0.12 to 1 across the face, random side) and a gamma
    in [0.5, 2]."""
    h, w = gray.shape
    ramp = np.linspace(0.12, 1.0, w)[None, :] if rng.random() < 0.5 else np.linspace(1.0, 0.12, w)[None, :]
    x = (gray.astype(np.float64) / 255.0) * ramp
    x = x ** float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def make_relit(root: Path, cache: Path, people: set[str], out: Path, seed: int) -> int:
    """Greyscale, tight (the detector's box, no margin), strongly re-lit copies of the photos of ``people``."""
    import cv2

    from faceembed.data.images import read_image
    from faceembed.faces.cluster_eval import own_faces
    from faceembed.faces.cluster_photos import load_photo_faces

    faces = load_photo_faces(cache)
    rows = [i for i, im in enumerate(faces.images) if im.split("/")[0] in people]
    own = own_faces([faces.images[i] for i in rows], [faces.boxes[i] for i in rows], root)
    rng = np.random.default_rng(seed)
    for img, k in sorted(own.items()):
        x, y, w, h = faces.boxes[rows[k]]
        gray = cv2.cvtColor(read_image(root / img, "RGB"), cv2.COLOR_RGB2GRAY)
        crop = gray[max(0, int(y)):int(y + h), max(0, int(x)):int(x + w)]
        dst = out / Path(img).with_suffix(".png")
        dst.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dst), relight(crop, rng))
    return len(own)


def relit_step(args, setting: tuple[str, float]) -> dict:
    """View 1 test people, greyscale / tight / re-lit, clustered like any folder (--no-face whole)."""
    from cluster_lfw import cache_path, people_of
    from faceembed.faces.cluster import cluster_folder
    from faceembed.faces.cluster_eval import evaluate_people

    algo, far = setting
    root = Path(args.data) / "lfw" / "images"
    out = Path("runs/cluster/relit")
    n = make_relit(root, cache_path(args.model), people_of(Path(args.data) / "lfw" / "pairsDevTest.txt"), out,
                   args.seed) if not out.is_dir() else len(list(out.glob("*/*.png")))
    summary = cluster_folder(out, "runs/cluster/relit_people.json", args.model, "mtcnn", "whole", far, algo,
                             threads=args.threads)
    ev = evaluate_people("runs/cluster/relit_people.json", out)
    return {"photos": n, "cluster": summary, "evaluation": ev["rows"]}


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__).parse_args()
