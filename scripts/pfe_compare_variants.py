"""Compare head-training variants on VALIDATION people only: each fold's validation people are split in
halves by person; a single head early-stops on half A and is measured on half B (MLS best-threshold accuracy
and AUC), so no variant is favoured by selecting on the pairs it is scored on. No test-fold data is touched.

Usage (after `faceembed demo lfw`): BACKBONE=runs/demo/mobilefacenet.pt CACHE=runs/demo/pfe/cache \
    python scripts/pfe_compare_variants.py base,flip,acc,flip_acc"""
import dataclasses, os, sys
import numpy as np, torch
sys.path.insert(0, "src")
from faceembed.training.train_pfe import lfw_features
from faceembed.training.pfe_fit import PFETrainConfig, train_head, head_sigma_sq, make_validation_pairs
from faceembed.models.pfe_head import UncertaintyHead
from faceembed.evaluation.scores import mls_scores
from faceembed.evaluation.verification import auc, best_threshold
torch.set_num_threads(2)
feats = lfw_features(os.environ.get("BACKBONE", "runs/demo/mobilefacenet.pt"), "../shared/data/lfw", "../shared/data/lfw/lfw_landmark.txt",
                     os.environ.get("CACHE", "runs/demo/pfe/cache"), progress=False, mirror=True)
variants = {"base": {}, "flip": {"flip_augment": True}, "acc": {"val_metric": "accuracy"},
            "flip_acc": {"flip_augment": True, "val_metric": "accuracy"}}
for name in sys.argv[1].split(","):
    cfg = dataclasses.replace(PFETrainConfig(heads=1), **variants[name])
    accs, aucs = [], []
    for k in range(10):
        fit, val = feats.fold_split(k, cfg)
        perm = np.random.default_rng(100 + k).permutation(len(val))
        A = sorted(val[i] for i in perm[: len(val) // 2]); B = sorted(val[i] for i in perm[len(val) // 2:])
        tr, trl = feats.rows_of(fit); ia, la = feats.rows_of(A); ib, lb = feats.rows_of(B)
        state, hist = train_head(feats.fmaps[tr], trl, feats.mu[tr], cfg, val=(feats.fmaps[ia], la, feats.mu[ia]),
                                 seed=cfg.seed + k, mirrored=feats.mirrored(tr))
        head = UncertaintyHead(feats.fmaps.shape[1], feats.mu.shape[1]); head.load_state_dict(state)
        vp = make_validation_pairs(lb, cfg.max_val_genuine_per_person, 500 + k)
        s = head_sigma_sq(head, feats.fmaps[ib]); m = feats.mu[ib]
        sc = mls_scores(m[vp[:, 0]], s[vp[:, 0]], m[vp[:, 1]], s[vp[:, 1]]); same = vp[:, 2].astype(bool)
        accs.append(best_threshold(sc, same)[1]); aucs.append(auc(sc, same))
        print(name, k, round(accs[-1], 5), round(aucs[-1], 6), hist["best_step"], flush=True)
    print("MEAN", name, round(float(np.mean(accs)), 5), round(float(np.mean(aucs)), 6), flush=True)
