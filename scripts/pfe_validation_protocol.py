"""Validation-only analogue of the test protocol: each head's validation people are split in two halves
(by person); score calibration is fitted on half A, and the 10-fold threshold protocol runs over the 10 heads'
half-B pairs (threshold from the other 9 heads' pairs). No test-fold data is touched.

Usage (after `faceembed demo lfw --out runs/demo`): python scripts/pfe_validation_protocol.py runs/demo/pfe/heads
[more heads folders...]; prints the validation 10-fold accuracy of cosine, raw MLS and the two calibrations."""
import sys, json
import numpy as np, torch
sys.path.insert(0, "src")
from faceembed.training.train_pfe import lfw_features
from faceembed.training.pfe_fit import PFETrainConfig, head_sigma_sq, make_validation_pairs
from faceembed.models.checkpoint import load_checkpoint
from faceembed.evaluation.scores import mls_scores
from faceembed.evaluation.verification import best_threshold, ten_fold_accuracy
torch.set_num_threads(2)
import os
BACKBONE = os.environ.get("BACKBONE", "runs/demo/mobilefacenet.pt")
CACHE = os.environ.get("CACHE", "runs/demo/pfe/cache")
feats = lfw_features(BACKBONE, "../shared/data/lfw", "../shared/data/lfw/lfw_landmark.txt",
                     CACHE, progress=False)
cfg = PFETrainConfig()

def logistic(scores, same):
    # 1-d logistic regression (Newton), returns (a, b): calibrated = a * s + b = log-odds
    x = (scores - scores.mean()) / scores.std(); y = same.astype(float); w = np.zeros(2)
    X = np.stack([x, np.ones_like(x)], 1)
    for _ in range(50):
        p = 1 / (1 + np.exp(-X @ w)); g = X.T @ (p - y); H = (X * (p * (1 - p))[:, None]).T @ X + 1e-6 * np.eye(2)
        w -= np.linalg.solve(H, g)
    return w[0] / scores.std(), w[1] - w[0] * scores.mean() / scores.std()

for heads_dir in sys.argv[1:]:
    S = {m: [] for m in ("cos", "raw", "thr_std", "logit")}; same_all = []; fold_all = []
    for k in range(10):
        model, _, _ = load_checkpoint(f"{heads_dir}/fold_{k:02d}.pt", expect_arch="pfe")
        fit, val = feats.fold_split(k, cfg)
        rng = np.random.default_rng(100 + k); perm = rng.permutation(len(val))
        halves = [sorted(val[i] for i in perm[: len(val) // 2]), sorted(val[i] for i in perm[len(val) // 2:])]
        out = []
        for h in halves:
            idx, lab = feats.rows_of(h)
            vp = make_validation_pairs(lab, cfg.max_val_genuine_per_person, cfg.seed + k + 1)
            s = head_sigma_sq(model.head, feats.fmaps[idx]); m = feats.mu[idx]
            a, b = vp[:, 0], vp[:, 1]
            out.append((mls_scores(m[a], s[a], m[b], s[b]), (m[a] * m[b]).sum(1), vp[:, 2].astype(bool)))
        (mA, cA, yA), (mB, cB, yB) = out
        thr, _ = best_threshold(mA, yA)
        la, lb = logistic(mA, yA)
        S["cos"].append(cB); S["raw"].append(mB); S["thr_std"].append((mB - thr) / mA.std()); S["logit"].append(la * mB + lb)
        same_all.append(yB); fold_all.append(np.full(len(yB), k))
    same = np.concatenate(same_all); folds = np.concatenate(fold_all)
    res = {m: ten_fold_accuracy(np.concatenate(v), same, folds)["mean"] for m, v in S.items()}
    print(heads_dir, {m: round(v, 5) for m, v in res.items()}, "pairs", len(same), flush=True)
