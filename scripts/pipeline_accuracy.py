"""Accuracy of the photo pipeline on all 13,233 LFW photos, in one pass (issue 27, "Accuracy does not drop").

One :func:`faceembed.faces.pipeline.run_pipeline` over every LFW image with the defaults every photo command now
uses (MTCNN ``detector_backend="auto"``, the model's auto-selected configuration, ``--keep center`` as the
README's detection figure): the detection rate, the landmark error against ``ldmark_lfw_mtcnncaffe.txt``
(mean point distance / inter-ocular, what ``faceembed detect --reference`` reports) and LFW 10-fold cosine
accuracy of the built-in model on the 6,000 pairs from these JPEG-to-embedding features. The features are kept
in ``--out`` (``.npz``) so a rerun only evaluates.

    python scripts/pipeline_accuracy.py --data ../shared/data --out runs/pipeline_lfw.npz --json r.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def run(data: Path, out: Path, model_name: str, workers: int, detector_backend: str) -> dict:
    """Detect + embed every LFW image (kept in ``out``), then score landmarks and verification."""
    from faceembed.data.lfw import list_lfw_images, read_landmarks, read_pairs
    from faceembed.evaluation.landmarks import compare_to_reference
    from faceembed.evaluation.verification import verify_features
    from faceembed.faces.embed import FaceModel
    from faceembed.faces.pipeline import PhotoOptions, run_pipeline

    root = data / "lfw" / "images"
    rels = list_lfw_images(root)
    model = FaceModel.load(model_name, threads=workers)
    seconds = None
    if not out.is_file():
        t = time.perf_counter()
        res = run_pipeline(root, rels, model, PhotoOptions(keep="center", detector_backend=detector_backend),
                           workers=workers, progress=True)
        seconds = time.perf_counter() - t
        kept = [p for p in res.photos if p.ok]
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, rels=np.array([p.rel for p in kept]), landmarks=np.stack([p.landmarks for p in kept]),
                 embeddings=res.embeddings)
    z = np.load(out)
    kept_rels = [str(r) for r in z["rels"]]
    marks = dict(zip(kept_rels, z["landmarks"], strict=True))
    ref = compare_to_reference(marks, read_landmarks(data / "lfw" / "ldmark_lfw_mtcnncaffe.txt"), rels)
    feats = dict(zip(kept_rels, z["embeddings"], strict=True))
    ver = verify_features(read_pairs(data / "lfw" / "pairs.txt"), feats)
    return {"images": len(rels), "detected": len(kept_rels), "landmarks": ref,
            "lfw_cosine_10fold": {"accuracy": ver.accuracy, "std": ver.accuracy_std, "tar_at_far": ver.tar_at_far},
            "model": model.config, "detector_backend": detector_backend, "seconds": seconds}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("runs/pipeline_lfw.npz"), help="kept features (.npz)")
    ap.add_argument("--model", default="dlib-resnet")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--detector-backend", default="auto")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    report = run(args.data, args.out, args.model, args.workers, args.detector_backend)
    text = json.dumps(report, indent=1, default=str)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
