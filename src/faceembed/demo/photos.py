"""``faceembed demo photos``: from raw JPEGs to identities on LFW, through the same functions as the CLI.

import MobileFaceNet -> export it to ONNX (parity-checked) -> on every LFW person with >= 10 images
(158 people, 4,324 photos): detect (MTCNN, all cores) -> align -> embed (ONNX Runtime) -> split each person's
photos into gallery / probes (seed 0, half enrolled) -> enroll (template = mean of unit embeddings) ->
identify the probes (exact search; NumPy and FAISS compared) -> rank-1, rank-5, DIR at FAR 1e-2, CMC curve,
and throughput in photos per second from JPEG to identity. ``quick`` runs 12 people x 10 photos.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from faceembed.demo.common import console, step
from faceembed.errors import MissingInputError
from faceembed.files import write_json

WEIGHTS = "weights/mobilefacenet_casia_112x96.ckpt"
MIN_IMAGES = 10


def _people(images: Path, quick: bool) -> tuple[list[str], list[str]]:
    from faceembed.data.images import list_identity_folder

    items = list_identity_folder(images)
    counts = Counter(n for _, n in items)
    items = [(r, n) for r, n in items if counts[n] >= MIN_IMAGES]
    if quick:
        keep = sorted({n for _, n in items})[:12]
        per: Counter = Counter()
        picked = []
        for r, n in items:
            if n in keep and per[n] < 10:
                picked.append((r, n))
                per[n] += 1
        items = picked
    return [r for r, _ in items], [n for _, n in items]


def run_photos_demo(out: str | Path, json_path: str | Path | None = None, data: str | Path | None = None,
                    quick: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run detect -> align -> embed -> enroll -> identify on LFW people with >= 10 photos; print the table."""
    from faceembed.convert.torch_state import import_checkpoint
    from faceembed.evaluation.identification import evaluate_identification
    from faceembed.export.export_model import export_checkpoint
    from faceembed.faces.embed import FaceModel, embed_images

    data = Path(data or "../shared/data")
    images, out = data / "lfw" / "images", Path(out)
    if not images.is_dir() or not (data / WEIGHTS).is_file():
        raise MissingInputError(f"lfw/images and {WEIGHTS} expected under --data", data)
    out.mkdir(parents=True, exist_ok=True)
    backbone, onnx_path = out / "mobilefacenet.pt", out / "mobilefacenet.onnx"
    if not backbone.exists():
        step(f"import {data / WEIGHTS} -> {backbone}")
        import_checkpoint(data / WEIGHTS, backbone)
    if not onnx_path.exists():
        step(f"export {backbone} -> {onnx_path} (parity-checked)")
        export_checkpoint(backbone, onnx_path)
    rels, labels = _people(images, quick)
    label = dict(zip(rels, labels, strict=True))
    model = FaceModel.load(onnx_path)
    step(f"{len(rels)} photos of {len(set(labels))} people: detect -> align -> embed -> enroll -> identify")
    t0 = time.perf_counter()
    emb = embed_images(images, rels, model, keep="center", progress=progress)  # LFW photos centre their subject
    names = [label[r] for r in emb.relpaths]
    t_search = time.perf_counter()
    result = evaluate_identification(emb.embeddings, names, seed=0, min_images=2, compare_faiss=False)
    seconds = time.perf_counter() - t0
    stages = {**{k: round(v, 2) for k, v in emb.seconds.items()},
              "enroll_identify": round(time.perf_counter() - t_search, 3)}
    from faceembed.evaluation.identification import search_agreement

    result["numpy_vs_faiss"] = search_agreement(*_gallery_and_probes(emb.embeddings, names))
    result.update({"photos": len(rels), "people_total": len(set(labels)), "embedded": len(emb.relpaths),
                   "failed": len(emb.failed), "failed_list": emb.failed[:50], "seconds": round(seconds, 2),
                   "stage_seconds": stages, "photos_per_s": round(len(rels) / seconds, 1),
                   "detector": "MTCNN (min face 40 px, backend auto)", "model": "MobileFaceNet",
                   "embedding": emb.config})
    from faceembed.report.identification import plot_cmc

    plot_cmc({"MobileFaceNet, MTCNN landmarks": result["cmc"]}, out / "cmc.png",
             title=f"LFW people with >= {MIN_IMAGES} photos: CMC")
    _table(result)
    if json_path:
        write_json(json_path, result)
    console.print(f"done in {result['seconds']:.0f} s; CMC curve: {out / 'cmc.png'}")
    return result


def _gallery_and_probes(embeddings, names):
    """Gallery templates and probe embeddings of the default split (for the NumPy / FAISS comparison)."""
    import numpy as np

    from faceembed.evaluation.identification import build_gallery, l2n, split_gallery_probes

    g, p = split_gallery_probes(names, 0)
    lab = np.asarray(names)
    return build_gallery(embeddings[g], lab[g]).templates, l2n(embeddings[p])


def _table(r: dict[str, Any]) -> None:
    table = Table(title=f"Identification from raw photos: {r['people']} LFW people, {r['probes']} probes")
    for col in ("rank-1", "rank-5", "DIR @ FAR 1e-2", "no face", "photos/s (JPEG -> identity)", "seconds"):
        table.add_column(col, justify="right")
    dir_ = r.get("open_set", {}).get("dir")
    table.add_row(f"{r['rank1']:.4f}", f"{r['rank5']:.4f}", f"{dir_:.4f}" if dir_ is not None else "",
                  str(r["failed"]), f"{r['photos_per_s']:.1f}", f"{r['seconds']:.1f}")
    Console().print(table)
