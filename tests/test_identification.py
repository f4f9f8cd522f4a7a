"""Identification (1:N): templates, gallery files, NumPy vs FAISS search, splits, metrics, CLI on real photos."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faceembed.errors import InputFormatError, MissingInputError
from faceembed.evaluation import identification as I

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LFW = SHARED / "lfw"
WEIGHTS = SHARED / "weights" / "mobilefacenet_casia_112x96.ckpt"
HAS_FAISS = importlib.util.find_spec("faiss") is not None
needs_faiss = pytest.mark.skipif(not HAS_FAISS, reason="faiss-cpu is not installed")


def _clusters(people: int, per: int, dim: int = 32, noise: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((people, dim))
    emb = np.repeat(centres, per, axis=0) + noise * rng.standard_normal((people * per, dim))
    labels = [f"p{i:03d}" for i in range(people) for _ in range(per)]
    return emb.astype(np.float32), labels


def test_template_is_renormalised_mean_of_unit_embeddings():
    e = np.array([[3.0, 0.0], [0.0, 1.0], [5.0, 5.0]], np.float32)
    g = I.build_gallery(e, ["b", "b", "a"])
    assert g.names == ["a", "b"] and g.counts.tolist() == [1, 2]
    np.testing.assert_allclose(g.templates[1], [2 ** -0.5, 2 ** -0.5], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(g.templates, axis=1), 1.0, rtol=1e-6)


def test_pfe_fusion_weights_confident_images():
    e = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    sig = np.array([[0.01, 0.01], [1.0, 1.0]], np.float32)
    g = I.build_gallery(e, ["x", "x"], sigma_sq=sig)
    assert g.sigma_sq is not None and g.templates[0, 0] > 0.99  # the confident first image dominates


def test_gallery_roundtrip_and_errors(tmp_path):
    e, lab = _clusters(5, 3)
    g = I.build_gallery(e, lab, meta={"model": "m.pt"})
    I.save_gallery(tmp_path / "g.npz", g)
    h = I.load_gallery(tmp_path / "g.npz")
    assert h.names == g.names and h.meta == {"model": "m.pt"} and h.sigma_sq is None
    np.testing.assert_array_equal(h.templates, g.templates)
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(InputFormatError, match="bad.npz"):
        I.load_gallery(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(InputFormatError, match="not a faceembed gallery"):
        I.load_gallery(tmp_path / "other.npz")
    with pytest.raises(MissingInputError):
        I.load_gallery(tmp_path / "none.npz")


def test_numpy_search_is_exact():
    rng = np.random.default_rng(1)
    t = I.l2n(rng.standard_normal((50, 16)))
    p = I.l2n(rng.standard_normal((30, 16)))
    idx, sc = I.search(t, p, k=5, method="numpy", chunk=7)
    full = p @ t.T
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1)[:, :5])
    np.testing.assert_allclose(sc, -np.sort(-full, axis=1)[:, :5], rtol=1e-5)
    assert I.search(t[:3], p, k=10, method="numpy")[0].shape == (30, 3)


@needs_faiss
def test_faiss_and_numpy_agree_on_a_large_gallery():
    rng = np.random.default_rng(2)
    t = I.l2n(rng.standard_normal((20000, 128)))
    p = I.l2n(t[rng.choice(20000, 500)] + 0.05 * rng.standard_normal((500, 128)))
    agree = I.search_agreement(t, p, k=5)
    assert agree["top1_agreement"] == 1.0 and agree["max_score_diff"] < 1e-4
    assert I.search(t, p, 1, method="auto")[0].shape == (500, 1)


def test_identify_unknown_below_threshold():
    g = I.build_gallery(np.eye(3, dtype=np.float32), ["a", "b", "c"])
    ans = I.identify(g, np.array([[1, 0.1, 0], [0.5, 0.5, 0.5]], np.float32), k=2, threshold=0.8)
    assert ans[0][0][0] == "a" and ans[1][0][0] == I.UNKNOWN and len(ans[1]) == 2


def test_split_is_seeded_and_person_wise():
    lab = ["a"] * 10 + ["b"] * 3 + ["c"]
    g, p = I.split_gallery_probes(lab, seed=0)
    g2, p2 = I.split_gallery_probes(lab, seed=0)
    assert g.tolist() == g2.tolist() and p.tolist() == p2.tolist()
    assert sorted(set(g) | set(p)) == list(range(13))  # c (one image) is left out
    assert sum(1 for i in g if lab[i] == "a") == 5 and sum(1 for i in g if lab[i] == "b") == 2
    assert I.split_gallery_probes(lab, seed=1)[0].tolist() != g.tolist()


def test_evaluate_identification_on_clusters(tmp_path):
    e, lab = _clusters(40, 8, noise=0.2)
    r = I.evaluate_identification(e, lab, seed=0, compare_faiss=HAS_FAISS)
    assert r["rank1"] == 1.0 and r["people"] == 40 and r["probes"] == 160
    assert r["cmc"][0] <= r["cmc"][-1] == 1.0
    assert r["open_set"]["impostor_people"] == 8 and 0.9 <= r["open_set"]["dir"] <= 1.0
    assert r["open_set"]["far_achieved"] <= 0.01
    hard = I.evaluate_identification(*_clusters(40, 8, noise=3.0), seed=0)
    assert hard["rank1"] < 0.9 and hard["rank5"] >= hard["rank1"]
    from faceembed.report.identification import plot_cmc

    plot_cmc({"x": r["cmc"], "hard": hard["cmc"]}, tmp_path / "cmc.png")
    assert (tmp_path / "cmc.png").read_bytes()[:4] == b"\x89PNG"


# ---- real photos ---------------------------------------------------------------------------------------------

def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faceembed", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.skipif(not WEIGHTS.is_file() or importlib.util.find_spec("mtcnn") is None,
                    reason="../shared/data (or the mtcnn package) not found: real-data test skipped")
def test_enroll_identify_evaluate_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEEMBED_CACHE", str(tmp_path / "cache"))
    people = ["Colin_Powell", "Donald_Rumsfeld", "George_W_Bush", "Gerhard_Schroeder", "Tony_Blair",
              "Ariel_Sharon"]
    gal, probes = tmp_path / "gallery", tmp_path / "probes"
    for i, name in enumerate(people):
        for k in range(1, 9):
            dst = (gal if k <= 4 else probes) / name
            dst.mkdir(parents=True, exist_ok=True)
            (dst / f"{name}_{k:04d}.jpg").symlink_to(LFW / "images" / name / f"{name}_{k:04d}.jpg")
        if i == 0:
            (gal / name / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    assert _cli("import", str(WEIGHTS), "--out", "mfn.pt", cwd=tmp_path).returncode == 0
    r = _cli("enroll", "--images", str(gal), "--model", "mfn.pt", "--out", "g.npz", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["people"] == 6 and summary["images"] == 24 and summary["failed"] == 1
    assert "broken.jpg" in r.stderr and (tmp_path / "g.skipped.txt").is_file()
    r = _cli("identify", "--gallery", "g.npz", "--images", str(probes), "--json", "ids.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    answers = json.loads((tmp_path / "ids.json").read_text())["answers"]
    correct = sum(hits[0]["name"] == rel.split("/")[0] for rel, hits in answers.items())
    assert len(answers) == 24 and correct >= 23
    r = _cli("identify", "--gallery", "g.npz", "--images", str(probes / "Tony_Blair" / "Tony_Blair_0005.jpg"),
             "--threshold", "0.999", cwd=tmp_path)
    assert r.returncode == 0 and "\tunknown " in r.stdout
    r = _cli("evaluate-identification", str(probes), "--model", "mfn.pt", "--min-images", "4", "--plot", "c.png",
             "--json", "e.json", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["people"] == 6 and ev["rank1"] >= 0.9 and ev["numpy_vs_faiss"]["top1_agreement"] == 1.0
    assert (tmp_path / "c.png").is_file()
