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



def relit_faces(args, people_file: str, out: Path):
    """The faces of a re-lit copy (:func:`make_relit`) of ``people_file``'s people, embedded once and cached."""
    from cluster_lfw import cache_path, people_of
    from faceembed.faces.cluster_photos import embed_photo_folder, load_photo_faces, save_photo_faces

    root = Path(args.data) / "lfw" / "images"
    cache = out.with_name(out.name + "_faces.npz")
    if not cache.exists():
        if not out.is_dir():
            make_relit(root, cache_path(args.model), people_of(Path(args.data) / "lfw" / people_file), out, args.seed)
        faces = embed_photo_folder(out, args.model, "mtcnn", "whole", progress=True, threads=args.threads)
        save_photo_faces(cache, faces, {"model": args.model, "people": people_file})
    return load_photo_faces(cache)


def relit_train_table(args, grid: list[tuple[str, float | None]]) -> list[dict]:
    """BCubed scores of each (algorithm, FAR) of ``grid`` on the re-lit View 1 *training* people: with the colour
    table of ``select``, the setting is chosen for collections unlike LFW without looking at a test person."""
    import faceembed as fe
    from cluster_lfw import score
    from faceembed.faces.cluster import card_threshold
    from faceembed.faces.cluster_algos import cluster_embeddings
    from faceembed.faces.cluster_eval import truth_of

    out = Path("runs/cluster/relit_train")
    faces = relit_faces(args, "pairsDevTrain.txt", out)
    card, truth, rows = fe.FaceAnalyzer(args.model).card, truth_of(out), list(range(len(faces)))
    table = []
    for algo, far in grid:
        t = card_threshold(card, far) if far else 0.0
        labels = cluster_embeddings(faces.embeddings, t, algo)
        table.append({"algorithm": algo, "far": far, **score(faces, rows, labels, truth, out)})
    return table

def fold_photos(root: Path, pairs_file: Path) -> dict[int, list[str]]:
    """Every photo (relative to ``root``) of each View 2 fold's people; the folds are person-disjoint."""
    from faceembed.data.lfw import read_pairs

    people: dict[int, set[str]] = {}
    for p in read_pairs(pairs_file):
        people.setdefault(p.fold, set()).update((p.name1, p.name2))
    return {k: sorted(f"{n}/{f.name}" for n in names for f in (root / n).iterdir() if f.is_file())
            for k, names in sorted(people.items())}


def _concat(parts: list, fold_of: list[int]):
    from faceembed.faces.cluster_photos import PhotoFaces

    out = PhotoFaces()
    for part in parts:
        for name in ("images", "boxes", "scores", "ranks", "whole", "unassigned"):
            getattr(out, name).extend(getattr(part, name))
    out.embeddings = np.concatenate([p.embeddings for p in parts])
    out.quality = np.concatenate([p.quality for p in parts])
    return out, np.asarray(fold_of, np.int64)


def quality_step(args, setting: tuple[str, float]) -> dict:
    """Quality gating with PFE heads that never saw the people they score: the photos of View 2 fold k's people
    embedded by ``train-pfe``'s head k (its mu is dlib-resnet's embedding), all folds clustered together, with
    and without the gate; each face's gate is its head's card value that rejects 5 % / 10 % of the head's
    validation faces (nothing chosen on these photos)."""
    import json

    import faceembed as fe
    from faceembed.faces.cluster import card_threshold, cluster_faces
    from faceembed.faces.cluster_eval import own_faces, score_labels, truth_of
    from faceembed.faces.cluster_photos import embed_photo_folder, load_photo_faces, save_photo_faces
    from faceembed.models.card_io import read_card

    algo, far = setting
    root = Path(args.data) / "lfw" / "images"
    heads = Path(args.heads) / "heads"
    folds = fold_photos(root, Path(args.data) / "lfw" / "pairs.txt")
    cache = Path(f"runs/cluster/quality_{Path(args.heads).name}_faces.npz")
    if not cache.exists():
        parts, fold_of = [], []
        for k, rels in folds.items():
            part = embed_photo_folder(root, str(heads / f"fold_{k:02d}.pt"), "mtcnn", "whole", progress=True,
                                      relpaths=rels, threads=args.threads)
            parts.append(part)
            fold_of += [k] * len(part)
        faces, fold_of = _concat(parts, fold_of)
        save_photo_faces(cache, faces, {"heads": str(heads), "fold_of": fold_of.tolist()})
    faces = load_photo_faces(cache)
    with np.load(cache) as z:  # the cache's meta entry alone (load_photo_faces does not return it)
        fold_of = np.asarray(json.loads(str(z["meta"]))["fold_of"], np.int64)
    photos = {r for rels in folds.values() for r in rels}
    truth = {img: person for img, person in truth_of(root).items() if img in photos}
    t = card_threshold(fe.FaceAnalyzer(args.model).card, far)
    own = own_faces(faces.images, faces.boxes, root)
    own_rows = np.asarray(sorted(own.values()), np.int64)
    rows = {"setting": {"algorithm": algo, "far": far, "threshold": round(t, 5)}, "photos": len(truth),
            "faces": len(faces), "gates": []}
    for reject in (None, "0.05", "0.1", "0.2"):
        if reject is None:
            gate = np.zeros(len(faces))
        else:
            per_fold = {k: read_card(heads / f"fold_{k:02d}.pt").quality.min_quality_for_reject[reject] for k in folds}
            gate = np.asarray([per_fold[int(k)] for k in fold_of])
        labels = cluster_faces(faces.embeddings, t, algo, faces.quality - gate, 0.0)
        s = score_labels(faces.images, faces.boxes, labels, truth, root)
        kept = own_rows[labels[own_rows] >= 0]
        assigned = score_labels([faces.images[i] for i in kept], [faces.boxes[i] for i in kept], labels[kept],
                                {faces.images[i]: truth[faces.images[i]] for i in kept}, root)
        rows["gates"].append({"reject_fraction_on_validation": reject, "faces_low_quality": int((labels < 0).sum()),
                              "photos_own_face_unassigned": int(len(own_rows) - len(kept)),
                              "all_photos": {k: round(v, 4) for k, v in s.items() if isinstance(v, float)},
                              "assigned_photos": {k: round(v, 4) for k, v in assigned.items()
                                                  if isinstance(v, float)}})
    return rows

if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__).parse_args()
