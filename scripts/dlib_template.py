"""Fit a 5-point template in 150x150 chip coordinates so that faceembed's least-squares similarity alignment
(``faceembed.faces.align.similarity_transform`` + ``cv2.warpAffine``) of LFW's ``lfw_landmark.txt`` points
reproduces dlib's 68-point face chip (``dlib.get_face_chip(img, shape, size=150, padding=0.25)``), the input
dlib's face-recognition ResNet was trained on.

Fit on the images of LFW View 1 training pairs (``pairsDevTrain.txt``) only: for each image, dlib's HOG
detector (upsampling 1, the detection nearest the image centre) and 68-point shape predictor give dlib's chip
transform (``get_face_chip_details``; the image -> chip affine map is dlib's ``get_mapping_to_chip``), through
which the 5 annotated points are mapped; the template is their mean. Held-out check on View 1 test images
(``pairsDevTest.txt``, other people): mean absolute pixel difference between our chip and dlib's, and mean
displacement (px, in the chip) of the 5 annotated points and of dlib's 68 points between the two transforms.

    python scripts/dlib_template.py [--lfw ../shared/data/lfw] [--max-train N] [--max-test N] [--json out.json]

Needs ``dlib`` (``pip install dlib-bin``) and ``face_recognition_models`` (the 68-point predictor).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from faceembed.data.images import read_image_rgb
from faceembed.data.lfw import read_landmarks, read_pairs
from faceembed.faces.align import similarity_transform
from faceembed.models.dlib_weights import dlib_model_path

DEFAULT_LFW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lfw"


def pair_images(path: Path) -> list[str]:
    """Every image (``Name/Name_0001.jpg``) of a pairs file, in first-seen order."""
    out: dict[str, None] = {}
    for p in read_pairs(path):
        out[f"{p.name1}/{p.name1}_{p.idx1:04d}.jpg"] = None
        out[f"{p.name2}/{p.name2}_{p.idx2:04d}.jpg"] = None
    return list(out)


def chip_affine(details) -> np.ndarray:
    """dlib's ``get_mapping_to_chip``: the 2x3 affine map image -> chip taking the rotated chip rectangle's
    top-left, top-right and bottom-right corners to (0, 0), (cols-1, 0), (cols-1, rows-1)."""
    r, a = details.rect, details.angle
    cx, cy = (r.left() + r.right()) / 2.0, (r.top() + r.bottom()) / 2.0
    c, s = math.cos(a), math.sin(a)

    def rot(x: float, y: float) -> tuple[float, float]:
        return (c * (x - cx) - s * (y - cy) + cx, s * (x - cx) + c * (y - cy) + cy)

    src = np.array([rot(r.left(), r.top()), rot(r.right(), r.top()), rot(r.right(), r.bottom())], np.float32)
    dst = np.array([[0, 0], [details.cols - 1, 0], [details.cols - 1, details.rows - 1]], np.float32)
    return cv2.getAffineTransform(src, dst).astype(np.float64)


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


class DlibFaces:
    """dlib's HOG detector + 68-point predictor + face chips."""

    def __init__(self, size: int, padding: float):
        import dlib

        self.dlib = dlib
        self.size, self.padding = size, padding
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat")))

    def shape(self, img: np.ndarray):
        """The 68-point shape of the detection nearest the image centre, or None without a detection."""
        dets = self.detector(img, 1)
        if not dets:
            return None
        h, w = img.shape[:2]
        best = min(dets, key=lambda d: (d.center().x - w / 2) ** 2 + (d.center().y - h / 2) ** 2)
        return self.predictor(img, best)

    def details(self, shape):
        return self.dlib.get_face_chip_details(shape, self.size, self.padding)

    def chip(self, img: np.ndarray, shape) -> np.ndarray:
        return self.dlib.get_face_chip(img, shape, size=self.size, padding=self.padding)

    def check_mapping(self, img: np.ndarray, shape) -> float:
        """Max error (px) of :func:`chip_affine` against dlib's own chip extraction of a coordinate ramp."""
        h, w = img.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        d = self.details(shape)
        cx = self.dlib.extract_image_chip(xx, d)
        cy = self.dlib.extract_image_chip(yy, d)
        inv = cv2.invertAffineTransform(chip_affine(d))
        gy, gx = np.mgrid[0:d.rows, 0:d.cols].astype(np.float64)
        px = inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]
        py = inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]
        inside = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
        return float(max(np.abs(cx - px)[inside].max(), np.abs(cy - py)[inside].max()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lfw", type=Path, default=DEFAULT_LFW, help="LFW folder (images/, pairs files, landmarks)")
    ap.add_argument("--size", type=int, default=150, help="chip size (px)")
    ap.add_argument("--padding", type=float, default=0.25, help="dlib chip padding")
    ap.add_argument("--max-train", type=int, default=0, help="fit on at most N images (0: all)")
    ap.add_argument("--max-test", type=int, default=0, help="evaluate on at most N images (0: all)")
    ap.add_argument("--json", type=Path, help="also write the template and the figures here")
    args = ap.parse_args(argv)

    try:
        faces = DlibFaces(args.size, args.padding)
    except ImportError:
        print("dlib is not installed: pip install dlib-bin", file=sys.stderr)
        return 2
    landmarks = read_landmarks(args.lfw / "lfw_landmark.txt")
    train = [r for r in pair_images(args.lfw / "pairsDevTrain.txt") if r in landmarks]
    train_people = {r.split("/")[0] for r in train}
    test = [r for r in pair_images(args.lfw / "pairsDevTest.txt") if r in landmarks
            and r.split("/")[0] not in train_people]
    if args.max_train:
        train = train[:args.max_train]
    if args.max_test:
        test = test[:args.max_test]

    t0 = time.time()
    mapped, skipped, check = [], 0, None
    for rel in train:
        img = read_image_rgb(args.lfw / "images" / rel)
        shape = faces.shape(img)
        if shape is None:
            skipped += 1
            continue
        if check is None:
            check = faces.check_mapping(img, shape)
        mapped.append(apply(chip_affine(faces.details(shape)), landmarks[rel].astype(np.float64)))
    pts = np.stack(mapped)
    template = pts.mean(axis=0)
    print(f"fit on {len(pts)} View 1 training images ({skipped} without a HOG detection skipped), "
          f"{time.time() - t0:.0f} s; chip map check vs dlib.extract_image_chip: {check:.2e} px max error")
    print(f"per-point spread (std, px): {np.round(pts.std(axis=0).mean(axis=1), 2).tolist()}")
    print(f"TEMPLATE_{args.size}x{args.size} = np.array([")
    for x, y in template:
        print(f"    [{x:.4f}, {y:.4f}],")
    print("])")

    pix, d5, d68, n_test, skipped_test = [], [], [], 0, 0
    for rel in test:
        img = read_image_rgb(args.lfw / "images" / rel)
        shape = faces.shape(img)
        if shape is None:
            skipped_test += 1
            continue
        lm = landmarks[rel].astype(np.float64)
        theirs = chip_affine(faces.details(shape))
        ours = similarity_transform(lm, template)
        our_chip = cv2.warpAffine(img, ours, (args.size, args.size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        pix.append(np.abs(our_chip.astype(np.float64) - faces.chip(img, shape).astype(np.float64)).mean())
        d5.append(np.linalg.norm(apply(ours, lm) - apply(theirs, lm), axis=1).mean())
        p68 = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        d68.append(np.linalg.norm(apply(ours, p68) - apply(theirs, p68), axis=1).mean())
        n_test += 1
    figures = {
        "train_images": len(pts), "train_skipped": skipped, "test_images": n_test, "test_skipped": skipped_test,
        "mean_abs_pixel_diff": float(np.mean(pix)), "median_abs_pixel_diff": float(np.median(pix)),
        "mean_displacement_5pt_px": float(np.mean(d5)), "mean_displacement_68pt_px": float(np.mean(d68)),
        "median_displacement_68pt_px": float(np.median(d68)),
    }
    print(f"held-out View 1 test images: {n_test} ({skipped_test} without a HOG detection skipped)")
    print(f"  mean |our chip - dlib chip| = {figures['mean_abs_pixel_diff']:.2f} (0..255, median "
          f"{figures['median_abs_pixel_diff']:.2f})")
    print(f"  mean displacement of the 5 annotated points = {figures['mean_displacement_5pt_px']:.2f} px, "
          f"of dlib's 68 points = {figures['mean_displacement_68pt_px']:.2f} px (median "
          f"{figures['median_displacement_68pt_px']:.2f})")
    if args.json:
        args.json.write_text(json.dumps({"template": template.tolist(), **figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
