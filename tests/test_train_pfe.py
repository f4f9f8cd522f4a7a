"""The LFW cross-fold head protocol end to end on a tiny synthetic LFW: no head sees its fold's people,
features (and mirror features) are cached, heads are reused on a rerun."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch

from faceembed.data.lfw import write_landmarks
from faceembed.models import build
from faceembed.models.checkpoint import FACE_INPUT_112x96, load_checkpoint, save_checkpoint
from faceembed.training.pfe_fit import PFETrainConfig
from faceembed.training.train_pfe import lfw_features, train_pfe_crossfold

PEOPLE = [f"P{i:02d}" for i in range(12)]  # P00-P07 appear in pairs, P08-P11 only train heads
PAIRS = """2\t2
P00\t1\t2
P01\t1\t3
P02\t1\tP03\t2
P00\t3\tP03\t1
P04\t1\t2
P05\t2\t3
P06\t1\tP07\t1
P04\t3\tP07\t2
"""


@pytest.fixture(scope="module")
def tiny_lfw(tmp_path_factory):
    root = tmp_path_factory.mktemp("lfw")
    rng = np.random.default_rng(0)
    marks = {}
    for person in PEOPLE:
        (root / "images" / person).mkdir(parents=True)
        for i in (1, 2, 3):
            rel = f"{person}/{person}_{i:04d}.jpg"
            cv2.imwrite(str(root / "images" / rel), (rng.random((250, 250, 3)) * 255).astype(np.uint8))
            marks[rel] = np.array([[100, 110], [150, 110], [125, 140], [105, 170], [145, 170]], np.float32)
    write_landmarks(root / "lfw_landmark.txt", marks, "interleaved")
    (root / "pairs.txt").write_text(PAIRS)
    torch.manual_seed(0)
    backbone = root / "mfn.pt"
    save_checkpoint(backbone, "mobilefacenet", {"embedding_size": 128}, build("mobilefacenet", embedding_size=128),
                    FACE_INPUT_112x96)
    return root, backbone


CONFIG = PFETrainConfig(people_per_batch=4, images_per_person=3, max_steps=10, eval_every=5, patience=2, heads=1,
                        flip_augment=True)


def test_fold_split_keeps_test_people_out(tiny_lfw, tmp_path):
    root, backbone = tiny_lfw
    feats = lfw_features(backbone, root, root / "lfw_landmark.txt", tmp_path / "cache", workers=1, progress=False,
                         mirror=True)
    assert len(feats.relpaths) == 36 and feats.fmaps_mirror is not None
    assert feats.fmaps_mirror.shape == feats.fmaps.shape
    assert not np.array_equal(feats.mu_mirror, feats.mu), "mirror images give other embeddings"
    for k in range(2):
        fit, val = feats.fold_split(k, CONFIG)
        assert fit and len(val) == 2 and not set(fit) & set(val)
        assert not (set(fit) | set(val)) & feats.people_of_fold[k], "a head never sees its fold's people"


def test_crossfold_heads_results_and_reuse(tiny_lfw, tmp_path):
    root, backbone = tiny_lfw
    out = tmp_path / "pfe"
    res = train_pfe_crossfold(backbone, root, root / "lfw_landmark.txt", out, CONFIG, progress=False, workers=1)
    assert res["pairs"] == 8 and res["images"] == 36
    assert 0.0 <= res["mls"]["accuracy"] <= 1.0 and len(res["mls"]["per_fold"]) == 2
    assert sorted(p.name for p in (out / "heads").iterdir()) == ["fold_00.pt", "fold_01.pt"]
    assert len(list((out / "cache").glob("fmaps_*.npz"))) == 2, "features and mirror features cached"
    model, _, extra = load_checkpoint(out / "heads" / "fold_00.pt", expect_arch="pfe")
    assert extra["calibration"]["method"] == "logistic" and extra["config"]["flip_augment"] is True
    with torch.no_grad():
        mu, sigma_sq = model(torch.zeros(1, 3, 112, 96))
    assert mu.shape == sigma_sq.shape == (1, 128) and bool((sigma_sq > 0).all())
    again = train_pfe_crossfold(backbone, root, root / "lfw_landmark.txt", out, CONFIG, progress=False, workers=1)
    assert all(f.get("reused") for f in again["folds"]) and again["mls"] == res["mls"]
    assert json.loads((out / "pfe_results.json").read_text())["mls"] == res["mls"]


def test_the_same_command_twice_gives_the_same_heads(tiny_lfw, tmp_path):
    """Deterministic on one machine: two fresh runs (separate processes whose default thread counts differ, no
    shared cache) write bitwise-identical heads and the same figures."""
    import os
    import subprocess
    import sys

    root, backbone = tiny_lfw
    script = ("import sys, dataclasses, json; from pathlib import Path\n"
              "from faceembed.training.pfe_fit import PFETrainConfig\n"
              "from faceembed.training.train_pfe import train_pfe_crossfold\n"
              "cfg = PFETrainConfig(**json.loads(sys.argv[3]))\n"
              "r = train_pfe_crossfold(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[2]) / 'lfw_landmark.txt',"
              " Path(sys.argv[4]), cfg, progress=False, workers=1)\n"
              "print(json.dumps({'mls': r['mls'], 'cosine': r['cosine']}))\n")
    config = json.dumps({**dataclasses.asdict(CONFIG), "heads": 2})
    outs = []
    for run, omp in (("a", "1"), ("b", "2")):
        env = {**os.environ, "OMP_NUM_THREADS": omp}
        proc = subprocess.run([sys.executable, "-c", script, str(backbone), str(root), config, str(tmp_path / run)],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert outs[0] == outs[1]
    for fold in ("fold_00.pt", "fold_01.pt"):
        a, _, _ = load_checkpoint(tmp_path / "a" / "heads" / fold, expect_arch="pfe")
        b, _, _ = load_checkpoint(tmp_path / "b" / "heads" / fold, expect_arch="pfe")
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert torch.equal(x, y), f"{fold}: {name} differs"
