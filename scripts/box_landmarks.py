"""Where MTCNN's 5 landmarks sit inside its face box, as fractions of the box (mean over LFW View 1 training
images, ``pairsDevTrain.txt``): the landmarks faceembed assumes for a photo that is already a face crop
(``--detector none``, ``--no-face whole``), written in ``faces/crops.py``.

Usage: python scripts/box_landmarks.py [--lfw ../shared/data/lfw] [--limit 600]"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from faceembed.data.lfw import pair_images, read_pairs
from faceembed.faces.detect_files import detect_files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw"))
    ap.add_argument("--limit", type=int, default=600)
    args = ap.parse_args()
    rels = pair_images(read_pairs(args.lfw / "pairsDevTrain.txt"))[: args.limit]
    found = detect_files(args.lfw / "images", rels, keep="center", workers=2)
    fractions = []
    for rel, lm in found.landmarks.items():
        x1, y1, x2, y2 = found.boxes[rel][:4]
        fractions.append((lm - [x1, y1]) / [x2 - x1, y2 - y1])
    f = np.asarray(fractions)
    print(f"{len(f)} faces; mean landmark position in the box (x, y fractions):")
    print(np.array2string(f.mean(axis=0), precision=4, separator=", "))
    print("spread (std):", np.array2string(f.std(axis=0), precision=3, separator=", "))


if __name__ == "__main__":
    main()
