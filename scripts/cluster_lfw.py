"""Clustering measurements on LFW (issue 26), all on one cache of embeddings.

Steps (run in this order; each prints JSON and writes runs/cluster/STEP.json):
- ``embed``: every face of all 13,233 LFW photos (MTCNN, dlib-resnet; image, box, detector score, rank) cached
  once in runs/cluster/ and reused by every other step.
- ``select``: algorithms x false-accept rates on LFW View 1 *training* people only (the people of
  pairsDevTrain.txt, all their photos), in colour and as a re-lit copy (greyscale, tight, strong lighting, as
  ``relit`` makes); picks the setting with the best mean BCubed F of the two, so the default serves collections
  unlike LFW as well. Also checks the card's thresholds against impostor quantiles of those people alone.
- ``full``: the selected setting on all 13,233 photos, folder names as truth, with the peers on the same
  embeddings (dlib Chinese Whispers at 0.5 and at its best threshold, DBSCAN at its best eps: "best" = tuned on
  this truth, an upper bound), and the clustering time alone.
- ``incremental``: a seeded half of the photos clustered, corrections made (a rename, a "not X"), the other half
  added by assignment; BCubed F against the full run, and whether the corrections survive.
- ``relit``: the stand-in for a collection unlike LFW: View 1 *test* people (pairsDevTest.txt) made greyscale,
  cropped tight to the face and re-lit strongly (a one-sided light ramp and a gamma per photo), embedded with
  --no-face whole, clustered with the selected setting, no tuning.
- ``quality``: quality gating with PFE heads (``faceembed train-pfe --backbone dlib-resnet --out runs/pfe_dlib``):
  the photos of View 2 fold k's people scored by head k (which never saw them), clustered together with and
  without ``--min-quality`` at each head's card value for rejecting 5 / 10 / 20 % of its validation faces.

    nice -n 5 python scripts/cluster_lfw.py embed --data ../shared/data
    python scripts/cluster_lfw.py select --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_lfw_steps import incremental_step, quality_step, relit_step, relit_train_table  # noqa: E402

CACHE = Path("runs/cluster")
FARS = (1e-2, 3e-3, 1e-3, 5e-4, 3e-4, 2e-4, 1e-4)
ALGOS = ("average", "complete", "single", "chinese-whispers", "dbscan", "hdbscan")


def cache_path(model: str) -> Path:
    return CACHE / f"lfw_{model}_mtcnn_whole.npz"


def lfw_root(args: argparse.Namespace) -> Path:
    return Path(args.data) / "lfw" / "images"


def dump(step: str, result: dict) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / f"{step}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def cmd_embed(args: argparse.Namespace) -> None:
    from faceembed.faces.cluster_photos import embed_photo_folder, save_photo_faces

    out = cache_path(args.model)
    if out.exists():
        print("cached:", out)
        return
    t = time.perf_counter()
    faces = embed_photo_folder(lfw_root(args), args.model, "mtcnn", "whole", progress=True, threads=args.threads)
    secs = time.perf_counter() - t
    save_photo_faces(out, faces, {"model": args.model, "detector": "mtcnn", "no_face": "whole", "seconds": secs})
    print(json.dumps({"faces": len(faces), "whole": sum(faces.whole), "unassigned": len(faces.unassigned),
                      "seconds": round(secs, 1), "cache": str(out)}))


def people_of(pairs_file: Path) -> set[str]:
    from faceembed.data.lfw import read_pairs

    return {n for p in read_pairs(pairs_file) for n in (p.name1, p.name2)}


def subset(faces, truth: dict[str, str], people: set[str]):
    """Rows of the cache (and the truth) whose photo belongs to one of ``people``."""
    rows = [i for i, im in enumerate(faces.images) if truth[im] in people]
    return rows, {k: v for k, v in truth.items() if v in people}


def score(faces, rows, labels, truth, root) -> dict:
    from faceembed.faces.cluster_eval import score_labels

    s = score_labels([faces.images[i] for i in rows], [faces.boxes[i] for i in rows], labels, truth, root)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()}


def impostor_quantiles(emb: np.ndarray, people: list[str], fars) -> dict[str, float]:
    """Cosine thresholds at each FAR from all impostor pairs among ``emb`` (one face per photo)."""
    _, ids = np.unique(people, return_inverse=True)
    sims = []
    for s in range(0, len(emb), 1000):
        sim = emb[s:s + 1000] @ emb.T
        rows = np.arange(s, min(s + 1000, len(emb)))[:, None]
        sims.append(sim[(ids[s:s + 1000, None] != ids[None, :]) & (rows < np.arange(len(emb))[None, :])])
    sims = np.concatenate(sims)
    return {f"{f:g}": round(float(np.quantile(sims, 1 - f)), 5) for f in fars} | {"impostor_pairs": len(sims)}


def cmd_select(args: argparse.Namespace) -> None:
    import faceembed as fe
    from faceembed.faces.cluster import card_threshold
    from faceembed.faces.cluster_algos import cluster_embeddings
    from faceembed.faces.cluster_eval import own_faces, truth_of
    from faceembed.faces.cluster_photos import load_photo_faces

    root = lfw_root(args)
    faces = load_photo_faces(cache_path(args.model))
    rows, truth = subset(faces, truth_of(root), people_of(Path(args.data) / "lfw" / "pairsDevTrain.txt"))
    emb = faces.embeddings[rows]
    card = fe.FaceAnalyzer(args.model).card
    table = []
    for algo in ALGOS:
        for far in (FARS if algo != "hdbscan" else (None,)):
            t = card_threshold(card, far) if far else 0.0
            labels = cluster_embeddings(emb, t, algo)
            table.append({"algorithm": algo, "far": far, "threshold": round(t, 5),
                          **score(faces, rows, labels, truth, root)})
            print(algo, far, table[-1]["bcubed_f"], flush=True)
    relit = relit_train_table(args, [(r["algorithm"], r["far"]) for r in table])
    for r, q in zip(table, relit, strict=True):
        r["relit_bcubed_f"] = q["bcubed_f"]
        r["mean_bcubed_f"] = round((r["bcubed_f"] + q["bcubed_f"]) / 2, 4)
    best = max(table, key=lambda r: r["mean_bcubed_f"])
    own = own_faces([faces.images[i] for i in rows], [faces.boxes[i] for i in rows], root)
    idx = [own[k] for k in truth]
    card_t = {f"{f:g}": round(card_threshold(card, f), 5) for f in (1e-3, 5e-4, 1e-4)}
    check = impostor_quantiles(emb[idx], list(truth.values()), (1e-3, 5e-4, 1e-4))
    dump("select", {"people": len(set(truth.values())), "photos": len(truth), "faces": len(rows),
                    "best": best, "table": table, "card_thresholds": card_t,
                    "view1_train_impostor_thresholds": check})


def selected(args: argparse.Namespace) -> tuple[str, float]:
    if args.algorithm and args.far:
        return args.algorithm, args.far
    best = json.loads((CACHE / "select.json").read_text())["best"]
    return best["algorithm"], best["far"]


def cmd_full(args: argparse.Namespace) -> None:
    import faceembed as fe
    from faceembed.faces.cluster import card_threshold
    from faceembed.faces.cluster_algos import cluster_embeddings
    from faceembed.faces.cluster_eval import peer_rows, truth_of
    from faceembed.faces.cluster_photos import load_photo_faces

    root = lfw_root(args)
    faces = load_photo_faces(cache_path(args.model))
    truth = truth_of(root)
    algo, far = selected(args)
    t = card_threshold(fe.FaceAnalyzer(args.model).card, far)
    rows = list(range(len(faces)))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        labels = cluster_embeddings(faces.embeddings, t, algo)
        times.append(time.perf_counter() - t0)
    ours = {"method": "faceembed cluster", "setting": f"{algo} linkage, card threshold at FAR {far:g} ({t:.4f})",
            **score(faces, rows, labels, truth, root)}
    peers = peer_rows(faces.embeddings, faces.images, faces.boxes, truth, root)
    for r in peers:
        r.update({k: round(v, 4) for k, v in r.items() if isinstance(v, float)})
    dump("full", {"photos": len(truth), "faces": len(faces), "rows": [ours, *peers],
                  "cluster_seconds": {"median": round(float(np.median(times)), 3),
                                      "runs": [round(x, 3) for x in times]},
                  "threads": args.threads})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("embed", "select", "full", "incremental", "relit", "quality"))
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--model", default="dlib-resnet")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--algorithm", default=None, help="override the setting chosen by 'select'")
    p.add_argument("--far", type=float, default=None, help="override the setting chosen by 'select'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heads", default="runs/pfe_dlib", help="'quality': a train-pfe --backbone dlib-resnet folder")
    args = p.parse_args()
    steps = {"embed": cmd_embed, "select": cmd_select, "full": cmd_full,
             "incremental": lambda a: dump("incremental", incremental_step(a, cache_path(a.model), selected(a))),
             "relit": lambda a: dump("relit", relit_step(a, selected(a))),
             "quality": lambda a: dump(f"quality_{Path(a.heads).name}", quality_step(a, selected(a)))}
    steps[args.step](args)


if __name__ == "__main__":
    main()
