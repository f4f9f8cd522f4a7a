"""Compare head-training variants on VALIDATION people only: each fold's validation people are split in halves
by person; a single head early-stops on half A and is measured on half B (MLS best-threshold accuracy and AUC),
so no variant is favoured by selecting on the pairs it is scored on. No test-fold data is touched.

Usage (after ``faceembed demo lfw``): python scripts/pfe_compare_variants.py base,flip,acc,flip_acc"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from faceembed.evaluation.scores import mls_scores
from faceembed.evaluation.verification import auc, best_threshold
from faceembed.models.pfe_head import UncertaintyHead
from faceembed.training.pfe_fit import PFETrainConfig, head_sigma_sq, make_validation_pairs, train_head
from faceembed.training.train_pfe import lfw_features

VARIANTS = {"base": {}, "flip": {"flip_augment": True}, "acc": {"val_metric": "accuracy"},
            "flip_acc": {"flip_augment": True, "val_metric": "accuracy"}}


def fold_result(feats, cfg: PFETrainConfig, k: int) -> tuple[float, float, int, float]:
    """(MLS accuracy, AUC, best step, cosine accuracy) of one head stopped on half A of fold k's validation
    people, measured on half B (cosine: the same pairs scored by the backbone's embeddings alone)."""
    fit, val = feats.fold_split(k, cfg)
    perm = np.random.default_rng(100 + k).permutation(len(val))
    half_a, half_b = sorted(val[i] for i in perm[: len(val) // 2]), sorted(val[i] for i in perm[len(val) // 2:])
    (tr, trl), (ia, la), (ib, lb) = feats.rows_of(fit), feats.rows_of(half_a), feats.rows_of(half_b)
    state, hist = train_head(feats.fmaps[tr], trl, feats.mu[tr], cfg, val=(feats.fmaps[ia], la, feats.mu[ia]),
                             seed=cfg.seed + k, mirrored=feats.mirrored(tr))
    head = UncertaintyHead(feats.fmaps.shape[1], feats.mu.shape[1])
    head.load_state_dict(state)
    vp = make_validation_pairs(lb, cfg.max_val_genuine_per_person, 500 + k)
    s, m = head_sigma_sq(head, feats.fmaps[ib]), feats.mu[ib]
    scores = mls_scores(m[vp[:, 0]], s[vp[:, 0]], m[vp[:, 1]], s[vp[:, 1]])
    same = vp[:, 2].astype(bool)
    cosine = (m[vp[:, 0]] * m[vp[:, 1]]).sum(1)
    return best_threshold(scores, same)[1], auc(scores, same), hist["best_step"], best_threshold(cosine, same)[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", help=f"comma-separated, from {', '.join(VARIANTS)}")
    ap.add_argument("--backbone", default="runs/demo/mobilefacenet.pt", help="checkpoint or model name")
    ap.add_argument("--cache", default="runs/demo/pfe/cache")
    ap.add_argument("--lfw", default="../shared/data/lfw")
    args = ap.parse_args()
    torch.set_num_threads(2)
    from faceembed.models.registry import resolve_model

    feats = lfw_features(resolve_model(args.backbone), args.lfw, f"{args.lfw}/lfw_landmark.txt", args.cache,
                         progress=False, mirror=True)
    for name in args.variants.split(","):
        cfg = dataclasses.replace(PFETrainConfig(heads=1), **VARIANTS[name])
        results = [fold_result(feats, cfg, k) for k in range(10)]
        for k, (acc, area, step, cos) in enumerate(results):
            print(name, k, round(acc, 5), round(area, 6), step, "cosine", round(cos, 5), flush=True)
        print("MEAN", name, "mls", round(float(np.mean([r[0] for r in results])), 5), "auc",
              round(float(np.mean([r[1] for r in results])), 6), "cosine",
              round(float(np.mean([r[3] for r in results])), 5), flush=True)


if __name__ == "__main__":
    main()
