"""LFW 10-fold accuracy of the built-in dlib-resnet on dlib's own face chips: dlib's HOG detector (upsample 1, the
face nearest the image centre), its 68-point shape predictor and ``get_face_chip(size=150, padding=0.25)``, then
the converted model (PyTorch) and cosine on single images. README's "dlib's own chips" row. Needs dlib-bin.

    python scripts/dlib_chips_lfw.py --lfw ../shared/data/lfw --json runs/dlib_chips_lfw.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def dlib_chip(dlib, det, sp, img: np.ndarray) -> np.ndarray | None:
    """dlib's 150x150 chip of the face nearest the image centre, or None when HOG finds none."""
    dets = det(img, 1)
    if not dets:
        return None
    h, w = img.shape[:2]
    best = min(dets, key=lambda d: (d.center().x - w / 2) ** 2 + (d.center().y - h / 2) ** 2)
    return dlib.get_face_chip(img, sp(img, best), size=150, padding=0.25)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    import dlib
    import torch

    from faceembed.data.images import read_image_rgb
    from faceembed.data.lfw import pair_images, read_pairs
    from faceembed.evaluation.verification import ten_fold_accuracy
    from faceembed.models.checkpoint import load_checkpoint
    from faceembed.models.dlib_weights import dlib_model_path, dlib_resnet_checkpoint
    from faceembed.report.progress import progress_bar

    pairs = read_pairs(args.lfw / "pairs.txt")
    names = pair_images(pairs)
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat")))
    model, spec, _ = load_checkpoint(dlib_resnet_checkpoint(), expect_arch="dlib_resnet")
    emb: dict[str, np.ndarray] = {}
    bar, task = progress_bar(True, len(names), "dlib chips")
    with bar:
        for rel in names:
            bar.advance(task)
            chip = dlib_chip(dlib, det, sp, read_image_rgb(args.lfw / "images" / rel))
            if chip is None:
                continue
            x = (torch.from_numpy(chip[None]).permute(0, 3, 1, 2).float() - spec.mean) / spec.scale
            with torch.no_grad():
                v = model(x)[0][0].numpy()
            emb[rel] = v / np.linalg.norm(v)
    kept = [p for p in pairs if p.relpath1 in emb and p.relpath2 in emb]
    scores = np.array([float(emb[p.relpath1] @ emb[p.relpath2]) for p in kept])
    res = ten_fold_accuracy(scores, np.array([p.same for p in kept]), np.array([p.fold for p in kept]))
    report = {"images": len(names), "no_face": len(names) - len(emb), "pairs": len(kept),
              "accuracy": res["mean"], "std": res.get("std")}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
