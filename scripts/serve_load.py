"""A bounded load run of ``faceembed serve`` on 127.0.0.1: fixed request counts, it stops by itself.

One LFW photo per person is enrolled (in process) into a fresh SQLite store; then the same probe photos (each
person's second photo, cycled) are recognized ``--requests`` times: first by the in-process API
(``Collection.recognize``, one caller), then over HTTP by 1, 4, 8 and 16 clients (threads with an httpx client each),
then in process again (so that drift of a shared machine shows). Reports errors, p50 / p99 latency, photos/s and
the ratio to the in-process photos/s (the mean of the runs before and after), as JSON.

    nice -n 5 python scripts/serve_load.py --out runs/serve_load/result.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared" / "data" / "lfw" / "images"


def pick_people(lfw: Path, count: int) -> list[str]:
    """The first ``count`` people (sorted by name) with at least two photos."""
    people = sorted(d.name for d in lfw.iterdir() if (d / f"{d.name}_0002.jpg").is_file())
    return people[:count]


def enroll_gallery(db_url: str, lfw: Path, people: list[str]) -> str:
    from faceembed.faces.collection import Collection

    col, key = Collection.create(db_url, "load")
    for name in people:
        col.enroll(name, str(lfw / name / f"{name}_0001.jpg"))
    col.close()
    return key


def in_process(db_url: str, photos: list[bytes], requests: int) -> dict:
    """photos/s of ``Collection.recognize`` called ``requests`` times in a row on the probe photos."""
    from faceembed.faces.collection import Collection

    with Collection.open(db_url, "load") as col:
        for p in photos[:3]:
            col.recognize(p)
        lat = []
        t0 = time.perf_counter()
        for i in range(requests):
            t = time.perf_counter()
            col.recognize(photos[i % len(photos)])
            lat.append(time.perf_counter() - t)
        wall = time.perf_counter() - t0
    return {"requests": requests, "photos_per_s": round(requests / wall, 3), **percentiles(lat)}


def percentiles(lat: list[float]) -> dict:
    if not lat:
        return {"p50_ms": None, "p99_ms": None}
    a = np.array(lat) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 1), "p99_ms": round(float(np.percentile(a, 99)), 1)}


def http_run(url: str, key: str, photos: list[bytes], requests: int, clients: int) -> dict:
    """``requests`` recognize calls shared among ``clients`` threads; errors are non-200 answers or failures."""
    import httpx

    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(no: int) -> None:
        with httpx.Client(base_url=url, headers={"x-api-key": key}, timeout=120) as http:
            start.wait()
            for i in range(no, requests, clients):
                t = time.perf_counter()
                try:
                    r = http.post("/v1/recognize", files={"file": ("p.jpg", photos[i % len(photos)])})
                    ok = r.status_code == 200 and bool(r.json()["faces"])
                    why = None if ok else f"{r.status_code}: {r.text[:100]}"
                except httpx.HTTPError as exc:
                    why = f"{type(exc).__name__}: {exc}"
                with lock:
                    lat.append(time.perf_counter() - t)
                    if why:
                        errors.append(why)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": requests, "errors": len(errors), "first_errors": errors[:3],
            "photos_per_s": round(requests / wall, 3), **percentiles(lat)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lfw", type=Path, default=LFW, help="LFW images folder (default ../shared/data/lfw/images).")
    ap.add_argument("--people", type=int, default=32, help="People enrolled (one photo each); default 32.")
    ap.add_argument("--requests", type=int, default=128, help="Recognize requests per run; default 128.")
    ap.add_argument("--clients", default="1,4,8,16", help="Comma-separated client counts; default 1,4,8,16.")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "serve_load", help="Scratch folder (recreated).")
    ap.add_argument("--out", type=Path, default=None, help="Write the JSON result here too.")
    args = ap.parse_args()

    from faceembed.serve.process import ServerProcess

    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    db = f"sqlite:///{args.work / 'load.db'}"
    people = pick_people(args.lfw, args.people)
    key = enroll_gallery(db, args.lfw, people)
    photos = [(args.lfw / n / f"{n}_0002.jpg").read_bytes() for n in people]
    before = in_process(db, photos, args.requests)
    runs = []
    with ServerProcess(db, log=args.work / "serve.log") as srv:
        http_run(srv.url, key, photos, 8, 4)  # warm-up
        for c in (int(v) for v in args.clients.split(",")):
            runs.append(http_run(srv.url, key, photos, args.requests, c))
        import httpx

        batching = httpx.get(srv.url + "/v1/health").json().get("batching")
    after = in_process(db, photos, args.requests)
    base = (before["photos_per_s"] + after["photos_per_s"]) / 2
    for r in runs:
        r["ratio_to_in_process"] = round(r["photos_per_s"] / base, 3)
    result = {"people": len(people), "photos": len(photos), "in_process_before": before, "in_process_after": after,
              "in_process_photos_per_s": round(base, 3), "http": runs, "batching": batching,
              "cpus": os.cpu_count(), "loadavg": os.getloadavg()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
