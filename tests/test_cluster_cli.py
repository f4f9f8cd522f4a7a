"""``faceembed cluster``, ``people`` and ``evaluate-clustering``: people.json's shape, the truth mapping of
evaluate-clustering, the corrections on the command line, and (real data) a small LFW folder end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from faceembed.cli import app
from faceembed.faces.cluster import cluster_faces, people_document, read_people
from faceembed.faces.cluster_eval import evaluate_people, own_faces
from faceembed.faces.cluster_photos import PhotoFaces, faces_cache_path, save_photo_faces

LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw" / "images"
runner = CliRunner()


def _photos(root: Path, people: dict[str, int], size=(60, 40)) -> list[str]:
    from PIL import Image

    rels = []
    for name, n in people.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", size, (100, 80, 60)).save(root / name / f"{i}.png")
            rels.append(f"{name}/{i}.png")
    return rels


def test_people_document_shape_and_quality_gate(tmp_path):
    rng = np.random.default_rng(0)
    c = rng.normal(size=(2, 16))
    emb = np.repeat(c, [3, 2], axis=0) + rng.normal(scale=0.05, size=(5, 16))
    faces = PhotoFaces(images=[f"{i}.jpg" for i in range(5)], boxes=[[1.0, 2.0, 3.0, 4.0]] * 5, scores=[0.9] * 5,
                       ranks=[0] * 5, whole=[False] * 5, embeddings=emb, quality=np.array([0.9, 0.9, 0.1, 0.8, 0.8]),
                       unassigned=[{"image": "x.jpg", "box": None, "reason": "no face"}])
    labels = cluster_faces(emb, 0.5, quality=faces.quality, min_quality=0.4)
    doc = people_document(faces, labels, min_quality=0.4)
    assert [p["person"] for p in doc["people"]] == ["p0001", "p0002"]
    assert [len(p["faces"]) for p in doc["people"]] == [2, 2]
    assert {u["reason"] for u in doc["unassigned"]} == {"no face", "low quality"}
    assert set(doc["people"][0]["faces"][0]) >= {"image", "box", "quality"}
    (tmp_path / "people.json").write_text(json.dumps(doc))
    assert read_people(tmp_path / "people.json")["people"] == doc["people"]


def test_own_face_is_the_one_nearest_the_centre(tmp_path):
    _photos(tmp_path, {"A": 1}, size=(100, 100))
    boxes = [[0.0, 0.0, 20.0, 20.0], [40.0, 40.0, 20.0, 20.0], [70.0, 70.0, 30.0, 30.0]]
    assert own_faces(["A/0.png"] * 3, boxes, tmp_path) == {"A/0.png": 1}


def test_evaluate_clustering_counts_every_truth_photo(tmp_path):
    rels = _photos(tmp_path / "truth", {"Ann": 3, "Bob": 2})
    box = [10.0, 20.0, 20.0, 20.0]
    doc = {"people": [{"person": "p0001", "faces": [{"image": r, "box": box} for r in rels[:3]]},
                      {"person": "p0002", "faces": [{"image": rels[3], "box": box},
                                                    {"image": rels[3], "box": [0.0, 0.0, 5.0, 5.0]}]}],
           "unassigned": [], "meta": {"algorithm": "average", "far": 5e-4, "threshold": 0.93}}
    (tmp_path / "people.json").write_text(json.dumps(doc))
    res = runner.invoke(app, ["evaluate-clustering", str(tmp_path / "people.json"), "--truth", str(tmp_path / "truth")])
    assert res.exit_code == 0, res.output
    row = json.loads(res.output)["rows"][0]
    # Bob/1.png is missing: a singleton; the second face of Bob/0.png is an extra face, not scored
    assert row["items"] == 5 and row["photos_without_face"] == 1 and row["extra_faces"] == 1
    assert row["bcubed_precision"] == 1.0 and row["bcubed_recall"] == pytest.approx((1 + 1 + 1 + 0.5 + 0.5) / 5)


def test_evaluate_clustering_peer_rows(tmp_path):
    rels = _photos(tmp_path / "truth", {"Ann": 4, "Bob": 4})
    rng = np.random.default_rng(0)
    emb = np.repeat(rng.normal(size=(2, 128)), 4, axis=0) + rng.normal(scale=0.02, size=(8, 128))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    faces = PhotoFaces(images=rels, boxes=[[10.0, 20.0, 20.0, 20.0]] * 8, scores=[1.0] * 8, ranks=[0] * 8,
                       whole=[False] * 8, embeddings=emb)
    doc = people_document(faces, cluster_faces(emb, 0.9))
    (tmp_path / "people.json").write_text(json.dumps(doc))
    save_photo_faces(faces_cache_path(tmp_path / "people.json"), faces)
    res = evaluate_people(tmp_path / "people.json", tmp_path / "truth")
    assert [r["method"] for r in res["rows"]] == ["faceembed cluster", "dlib chinese whispers",
                                                  "dlib chinese whispers", "scikit-learn DBSCAN"]
    assert res["rows"][0]["bcubed_f"] == 1.0


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faceembed", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_cluster_needs_out_or_db(tmp_path):
    (tmp_path / "p").mkdir()
    proc = _cli("cluster", "p", cwd=tmp_path)
    assert proc.returncode == 2 and "--out" in proc.stderr and proc.stderr.count("\n") == 1
    proc = _cli("cluster", "p", "--out", "x.json", "--recluster", cwd=tmp_path)
    assert proc.returncode == 2 and "--recluster needs --db" in proc.stderr


def test_people_commands(tmp_path):
    from faceembed.faces.people_store import cluster_into_store
    from test_cluster_store import blobs, photo_faces

    db = f"sqlite:///{tmp_path / 'p.db'}"
    emb, truth = blobs(people=3, per=4)
    cluster_into_store(None, db, faces=photo_faces(emb, truth, np.arange(12)), far=1e-3)
    listed = json.loads(runner.invoke(app, ["people", "list", "--db", db]).output)
    assert [p["faces"] for p in listed] == [4, 4, 4]
    a, b, c = (p["person"] for p in listed)
    assert runner.invoke(app, ["people", "rename", a, "Ann", "--db", db]).exit_code == 0
    assert runner.invoke(app, ["people", "merge", "Ann", b, "--db", db]).exit_code == 0
    face = listed[2]["face_ids"][0]
    assert runner.invoke(app, ["people", "split", c, "--faces", face, "--name", "Cy", "--db", db]).exit_code == 0
    assert runner.invoke(app, ["people", "not", "Ann", listed[0]["face_ids"][0], "--db", db]).exit_code == 0
    after = {p["person"]: p for p in json.loads(runner.invoke(app, ["people", "list", "--db", db]).output)}
    assert after["Ann"]["faces"] == 7 and after["Cy"]["faces"] == 1 and after[c]["faces"] == 3


@pytest.mark.realdata
def test_cluster_lfw_folder_end_to_end(tmp_path):
    if not LFW.is_dir():
        pytest.skip(f"LFW images not found at {LFW} (../shared/data absent)")
    photos = tmp_path / "photos"
    for name in ("Colin_Powell", "Tony_Blair", "Serena_Williams", "Ariel_Sharon"):
        (photos / name).mkdir(parents=True)
        for src in sorted((LFW / name).glob("*.jpg"))[:8]:
            shutil.copy(src, photos / name / src.name)
    out = tmp_path / "people.json"
    res = runner.invoke(app, ["cluster", str(photos), "--out", str(out), "--html", str(tmp_path / "sheets"),
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    doc = read_people(out)
    assert sum(len(p["faces"]) for p in doc["people"]) >= 32
    assert (tmp_path / "sheets" / "index.html").is_file() and len(list((tmp_path / "sheets").glob("*.png"))) >= 4
    ev = evaluate_people(out, photos, peers=False)
    assert ev["rows"][0]["bcubed_f"] > 0.9
    db = f"sqlite:///{tmp_path / 'people.db'}"
    res = runner.invoke(app, ["cluster", str(photos), "--db", db, "--no-progress"])
    assert res.exit_code == 0, res.output
    again = json.loads(runner.invoke(app, ["cluster", str(photos), "--db", db, "--no-progress"]).output)
    assert again["faces"] == json.loads(res.output)["faces"]  # photos already in the store are not added twice
