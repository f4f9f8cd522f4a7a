"""Validation-only analogue of the test protocol: each head's validation people are split in two halves (by
person); score calibration is fitted on half A, and the 10-fold threshold protocol runs over the 10 heads'
half-B pairs (threshold from the other 9 heads' pairs). No test-fold data is touched.

Usage (after ``faceembed demo lfw --out runs/demo``):
    python scripts/pfe_validation_protocol.py runs/demo/pfe/heads [more heads folders ...]
prints the validation 10-fold accuracy of cosine, raw MLS and the two calibrations."""

from __future__ import annotations

import argparse

import numpy as np
import torch

from faceembed.evaluation.scores import fit_logistic_calibration, mls_scores
from faceembed.evaluation.verification import best_threshold, ten_fold_accuracy
from faceembed.models.checkpoint import load_checkpoint
from faceembed.training.pfe_fit import PFETrainConfig, head_sigma_sq, make_validation_pairs
from faceembed.training.train_pfe import lfw_features


def halves(people: list, seed: int) -> list[list]:
    """The validation people split in two halves at random (by person)."""
    perm = np.random.default_rng(seed).permutation(len(people))
    return [sorted(people[i] for i in perm[: len(people) // 2]), sorted(people[i] for i in perm[len(people) // 2:])]


def half_scores(feats, model, people: list, cfg: PFETrainConfig, seed: int):
    """(MLS, cosine, same-person) of the validation pairs among ``people``."""
    idx, lab = feats.rows_of(people)
    vp = make_validation_pairs(lab, cfg.max_val_genuine_per_person, seed)
    s, m = head_sigma_sq(model.head, feats.fmaps[idx]), feats.mu[idx]
    a, b = vp[:, 0], vp[:, 1]
    return mls_scores(m[a], s[a], m[b], s[b]), (m[a] * m[b]).sum(1), vp[:, 2].astype(bool)


def evaluate(feats, heads_dir: str, cfg: PFETrainConfig) -> dict[str, float]:
    scores: dict[str, list] = {m: [] for m in ("cos", "raw", "thr_std", "logit")}
    same_all, fold_all = [], []
    for k in range(10):
        model, _, _ = load_checkpoint(f"{heads_dir}/fold_{k:02d}.pt", expect_arch="pfe")
        _, val = feats.fold_split(k, cfg)
        (m_a, _, y_a), (m_b, c_b, y_b) = (half_scores(feats, model, h, cfg, cfg.seed + k + 1)
                                          for h in halves(val, 100 + k))
        thr, _ = best_threshold(m_a, y_a)
        a, b = fit_logistic_calibration(m_a, y_a)
        for name, v in (("cos", c_b), ("raw", m_b), ("thr_std", (m_b - thr) / m_a.std()), ("logit", a * m_b + b)):
            scores[name].append(v)
        same_all.append(y_b)
        fold_all.append(np.full(len(y_b), k))
    same, folds = np.concatenate(same_all), np.concatenate(fold_all)
    return {m: ten_fold_accuracy(np.concatenate(v), same, folds)["mean"] for m, v in scores.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("heads", nargs="+", help="heads folders (fold_00.pt ... fold_09.pt)")
    ap.add_argument("--backbone", default="runs/demo/mobilefacenet.pt")
    ap.add_argument("--cache", default="runs/demo/pfe/cache")
    ap.add_argument("--lfw", default="../shared/data/lfw")
    args = ap.parse_args()
    torch.set_num_threads(2)
    feats = lfw_features(args.backbone, args.lfw, f"{args.lfw}/lfw_landmark.txt", args.cache, progress=False)
    for heads_dir in args.heads:
        res = evaluate(feats, heads_dir, PFETrainConfig())
        print(heads_dir, {m: round(v, 5) for m, v in res.items()}, flush=True)


if __name__ == "__main__":
    main()
