"""``faceembed bench --pipeline``: photos to an enrolled gallery, end to end, against the sum of its parts and
against face_recognition's own pipeline, all in one run on the same real photos (LFW).

Rows (milliseconds per photo, photos/s):

* each stage alone at its best on the whole machine: decode (``threads`` threads, reduced-size JPEG decoding),
  detect (MTCNN, one process per thread, 1 intra-op thread each), align (threads), embed (the model's
  auto-selected configuration, batch 64), search (gallery build + top-5 of every photo);
* the limit: the sum of those per-photo times, i.e. what a pipeline that never idles a core would reach;
* end to end: :func:`faceembed.faces.pipeline.run_pipeline` + build + search in this process, and the fraction
  of the limit it reaches;
* ``faceembed enroll`` of the same photos as one process, start-up included (after one warm run, so caches of
  converted models and auto choices exist, as on any run but the first);
* ``FaceAnalyzer.faces(photo)``: the median per photo, one photo per call (batch 1);
* face_recognition's pipeline (:mod:`faceembed.bench.pipeline_peer`) on the same photos, and every ratio to it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.errors import MissingInputError
from faceembed.files import write_json

_FORKED: dict = {}


def lfw_photos(data: str | Path, n: int) -> tuple[Path, list[str], list[str]]:
    """The first ``n`` LFW photos in name order: (images folder, relative paths, person names)."""
    from faceembed.data.images import list_identity_folder

    root = Path(data) / "lfw" / "images"
    if not root.is_dir():
        raise MissingInputError("LFW images not found: pass --data ../shared/data", root)
    items = list_identity_folder(root)[:n]
    return root, [r for r, _ in items], [p for _, p in items]


def photo_tree(root: Path, rels: list[str], out: Path) -> Path:
    """``out`` holding the photos ``rels`` of ``root`` (hard links, else copies) in their person folders."""
    for rel in rels:
        dst = out / rel
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(root / rel, dst)
            except OSError:
                shutil.copyfile(root / rel, dst)
    return out


def _per_photo(seconds: float, n: int) -> float:
    return seconds * 1e3 / max(n, 1)


def _detect_part(k: int) -> list:
    imgs, step = _FORKED["images"], _FORKED["step"]
    if _FORKED.get("det") is None:  # one detector per worker process, made on its first part
        _FORKED["det"] = _FORKED["make"]()
    det = _FORKED["det"]
    out, end = [], min(len(imgs), (k + 1) * step)
    for s in range(k * step, end, 16):
        out += det.detect_many(imgs[s:min(s + 16, end)])
    return out


def isolated_stages(root: Path, rels: list[str], labels: list[str], model, threads: int) -> dict[str, float]:
    """Milliseconds per photo of each stage alone on the whole machine (module doc)."""
    import multiprocessing as mp

    from faceembed.evaluation.identification import build_gallery, search
    from faceembed.faces.align import align_face
    from faceembed.faces.detect import MTCNNDetector, choose_face
    from faceembed.faces.pipeline import decode_photo

    n, out = len(rels), {}
    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        images = [img for img, _ in pool.map(lambda r: decode_photo(root / r), rels)]
    out["decode"] = _per_photo(time.perf_counter() - t, n)
    MTCNNDetector(threads=1)  # convert / export before forking
    _FORKED.update(images=images, step=-(-n // threads), make=lambda: MTCNNDetector(threads=1), det=None)
    with mp.get_context("fork").Pool(threads) as pool:
        pool.map(_detect_part, range(threads))  # warm: each worker opens its sessions
        t = time.perf_counter()
        found = [f for part in pool.map(_detect_part, range(threads)) for f in part]
    out["detect"] = _per_photo(time.perf_counter() - t, n)
    keep = [(img, choose_face(f, *img.shape[:2]).landmarks) for img, f in zip(images, found, strict=True) if f]
    c = model.card
    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        crops = np.stack(list(pool.map(lambda a: align_face(a[0], a[1], (c.height, c.width), template=c.template),
                                       keep)))
    out["align"] = _per_photo(time.perf_counter() - t, n)
    model.embed(crops[:64])
    t = time.perf_counter()
    emb, _ = model.embed(crops)
    out["embed"] = _per_photo(time.perf_counter() - t, n)
    out["search"] = _search_ms(emb, [lb for lb, f in zip(labels, found, strict=True) if f], build_gallery, search)
    return out


def _search_ms(emb: np.ndarray, labels: list[str], build_gallery, search) -> float:
    t = time.perf_counter()
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    search(build_gallery(unit, labels).templates, unit, k=5)
    return _per_photo(time.perf_counter() - t, len(emb))


def end_to_end(root: Path, rels: list[str], labels: list[str], model, threads: int, progress: bool) -> dict:
    """The overlapped pipeline + gallery + search on all photos in this process."""
    from faceembed.evaluation.identification import build_gallery, search
    from faceembed.faces.pipeline import run_pipeline

    t = time.perf_counter()
    res = run_pipeline(root, rels, model, workers=threads, progress=progress)
    got = [lb for lb, p in zip(labels, res.photos, strict=True) if p.ok]
    unit = res.embeddings / np.linalg.norm(res.embeddings, axis=1, keepdims=True)
    _, idx = search(build_gallery(unit, got).templates, unit, k=5)
    wall = time.perf_counter() - t
    return {"seconds": round(wall, 3), "ms_per_photo": _per_photo(wall, len(rels)),
            "photos_per_s": round(len(rels) / wall, 1), "with_face": len(got),
            "busy_seconds": {k: round(v, 3) for k, v in res.seconds.items()}}


def enroll_process(tree: Path, out: Path, threads: int) -> dict:
    """``faceembed enroll --images TREE --model dlib-resnet`` as one process (start-up included); the best of
    two runs after a warm one (the first run of a machine converts models and measures auto choices)."""
    cmd = [sys.executable, "-m", "faceembed", "enroll", "--images", str(tree), "--model", "dlib-resnet",
           "--out", str(out / "gallery.npz"), "--workers", str(threads), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    times = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t)
    return {"command": " ".join(["faceembed", *cmd[3:]]), "seconds": round(min(times[1:]), 3),
            "runs_s": [round(x, 3) for x in times]}


def analyzer_latency(root: Path, rels: list[str], threads: int) -> dict:
    """Median milliseconds of ``FaceAnalyzer("dlib-resnet").faces(path)``, one photo per call."""
    from faceembed.faces.analyzer import FaceAnalyzer

    fa = FaceAnalyzer("dlib-resnet", threads=threads)
    fa.faces(root / rels[0])
    times = []
    for r in rels:
        t = time.perf_counter()
        fa.faces(root / r)
        times.append(time.perf_counter() - t)
    return {"photos": len(rels), "median_ms": round(float(np.median(times)) * 1e3, 3), "config": fa.model.config}


def run_pipeline_bench(data: str | Path, photos: int = 1000, threads: int = 2, work_dir: str | Path = "runs/bench",
                       api_photos: int = 200, json_out: str | Path | None = None, plot: str | Path | None = None,
                       progress: bool = False, peer: bool = True) -> dict[str, Any]:
    """The whole table (module doc) as a dict; written to ``json_out`` and charted to ``plot`` when given."""
    from faceembed.bench.pipeline_peer import time_peer
    from faceembed.faces.embed import FaceModel

    root, rels, labels = lfw_photos(data, photos)
    work = Path(work_dir) / "pipeline"
    tree = photo_tree(root, rels, work / "photos")
    load = os.getloadavg()
    model = FaceModel.load("dlib-resnet", threads=threads)
    stages = isolated_stages(root, rels, labels, model, threads)
    limit = sum(stages.values())
    e2e = end_to_end(root, rels, labels, model, threads, progress)
    report: dict[str, Any] = {
        "photos": len(rels), "threads": threads, "load_average_before": [round(x, 2) for x in load],
        "embedding": model.config, "stages_ms_per_photo": {k: round(v, 3) for k, v in stages.items()},
        "limit_ms_per_photo": round(limit, 3), "limit_photos_per_s": round(1e3 / limit, 1),
        "end_to_end": e2e, "fraction_of_limit": round(limit / e2e["ms_per_photo"], 3)}
    report["enroll"] = enroll_process(tree, work, threads)
    report["enroll"]["photos_per_s"] = round(len(rels) / report["enroll"]["seconds"], 1)
    report["api"] = analyzer_latency(root, rels[:api_photos], threads)
    if peer:
        fr = time_peer([root / r for r in rels])
        report["face_recognition"] = fr
        per_s = fr["photos_per_s"]
        report["ratios"] = {"enroll_vs_face_recognition": round(report["enroll"]["photos_per_s"] / per_s, 2),
                            "end_to_end_vs_face_recognition": round(e2e["photos_per_s"] / per_s, 2),
                            "api_vs_face_recognition": round(fr["median_ms_per_photo"] / report["api"]["median_ms"], 2)}
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    if json_out:
        write_json(json_out, report)
    if plot:
        from faceembed.bench.pipeline_chart import plot_pipeline

        plot_pipeline(report, plot)
    return report
