"""Benchmark (not a test): clustering 1,000,000 embeddings through approximate nearest neighbours (FAISS).

Synthetic "people" (random unit centres in 128-d; each face its centre plus Gaussian noise, so that faces of one
person have cosine ~0.95 and strangers ~0) stand in for a large photo library. The threshold graph (pairs at or
above the cosine threshold) comes from a FAISS IVF-Flat inner-product index (k nearest neighbours per face,
kept when >= threshold) instead of the exact all-pairs product, then faceembed's linkage runs per connected
component (exact within each). Reports seconds per stage, the peak resident memory of the process and BCubed F
against the synthetic truth (a sanity check: the people are made to be separable).

    nice -n 5 python scripts/cluster_ann_bench.py --n 1000000 --threads 1 --json runs/cluster/ann_1m.json
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np


def synthetic_people(n: int, per: int, dim: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit embeddings of ``n // per`` people (float32), and each one's person."""
    rng = np.random.default_rng(seed)
    people = n // per
    centres = rng.standard_normal((people, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(people), per)[:n]
    emb = centres[truth] + rng.standard_normal((len(truth), dim), dtype=np.float32) * np.float32(noise)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb, truth


def ann_pairs(emb: np.ndarray, threshold: float, k: int, nlist: int, nprobe: int,
              chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``i < j`` among each face's ``k`` nearest neighbours (IVF-Flat, inner product) at >= threshold."""
    import faiss

    dim = emb.shape[1]
    quant = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quant, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    index.train(emb[rng.choice(len(emb), min(len(emb), 40 * nlist), replace=False)])
    index.add(emb)
    index.nprobe = nprobe
    rows, cols = [], []
    for s in range(0, len(emb), chunk):
        sims, ids = index.search(emb[s:s + chunk], k)
        i = np.repeat(np.arange(s, s + len(ids)), k)
        j, v = ids.ravel(), sims.ravel()
        keep = (v >= threshold) & (j > i)
        rows.append(i[keep])
        cols.append(j[keep])
    return np.concatenate(rows), np.concatenate(cols)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--per", type=int, default=5, help="faces per synthetic person")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--noise", type=float, default=0.021, help="per-dimension noise around a person's centre")
    p.add_argument("--threshold", type=float, default=0.9306, help="cosine (dlib-resnet's card at FAR 5e-4)")
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--nlist", type=int, default=4096)
    p.add_argument("--nprobe", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    import faiss

    from faceembed.evaluation.clustering import bcubed
    from faceembed.faces.cluster_algos import linkage_clusters

    faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    emb, truth = synthetic_people(args.n, args.per, args.dim, args.noise, args.seed)
    t1 = time.perf_counter()
    pairs = ann_pairs(emb, args.threshold, args.k, args.nlist, args.nprobe)
    t2 = time.perf_counter()
    labels = linkage_clusters(emb, args.threshold, "average", pairs=pairs)
    t3 = time.perf_counter()
    bp, br, bf = bcubed(labels, truth)
    result = {"n": args.n, "people": int(truth.max()) + 1, "dim": args.dim, "threshold": args.threshold,
              "index": f"IVF{args.nlist},Flat nprobe {args.nprobe}, k {args.k}", "threads": args.threads,
              "pairs": len(pairs[0]), "clusters": int(labels.max()) + 1,
              "bcubed": {"precision": round(bp, 4), "recall": round(br, 4), "f": round(bf, 4)},
              "seconds": {"make_data": round(t1 - t0, 1), "ann_neighbours": round(t2 - t1, 1),
                          "components_and_linkage": round(t3 - t2, 1)},
              "embeddings_mib": round(emb.nbytes / 2**20, 1), "peak_rss_mib": round(peak_mib(), 1)}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
