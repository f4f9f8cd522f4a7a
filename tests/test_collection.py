"""fe.Collection on real LFW photos with dlib-resnet (enroll, recognize, verify, embed, rename, delete) on SQLite
and PostgreSQL; the model binding (digest, dim, a card without thresholds); ``faceembed collection`` and
``enroll`` / ``identify --db`` from the command line; Gallery.from_collection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import faceembed as fe
from faceembed.errors import FaceembedError, NoFaceError, NoThresholdsError, ShapeMismatchError

LFW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lfw" / "images"
needs_lfw = pytest.mark.skipif(not LFW.is_dir(), reason="../shared/data/lfw/images (LFW photos) not found")


def photo(name: str, i: int) -> Path:
    return LFW / name / f"{name}_{i:04d}.jpg"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faceembed", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.fixture(scope="module")
def analyzer():
    return fe.FaceAnalyzer("dlib-resnet")


@pytest.fixture(scope="module")
def no_threshold_model(tmp_path_factory) -> Path:
    """A tiny ONNX file whose card is dlib-resnet's without thresholds (create reads only the card)."""
    import onnx
    from onnx import TensorProto, helper

    from faceembed.models.card_io import card_to_onnx, read_card

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 150, 150])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 67500])
    model = helper.make_model(helper.make_graph([helper.make_node("Flatten", ["x"], ["y"])], "t", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    card_to_onnx(model, read_card("dlib-resnet").replace(thresholds=None))
    path = tmp_path_factory.mktemp("models") / "uncalibrated.onnx"
    onnx.save(model, path)
    return path


def test_model_binding(tmp_path, no_threshold_model):
    url = f"sqlite:///{tmp_path}/c.db"
    with pytest.raises(NoThresholdsError, match="run 'faceembed calibrate"):
        fe.Collection.create(url, "x", no_threshold_model)
    with pytest.raises(NoThresholdsError, match="no threshold at FAR 0.5"):
        fe.Collection.create(url, "x", "dlib-resnet", far=0.5)
    col, key = fe.Collection.create(url, "office")
    with col:
        assert col.info.dim == 128 and col.threshold == pytest.approx(fe.read_card("dlib-resnet").thresholds.far[
            "0.001"]) and len(key) >= 40
        with pytest.raises(ShapeMismatchError):
            col.add_embedding("ann", np.ones(64, np.float32))
        face_id = col.add_embedding("ann", np.ones(128, np.float32) * 3)
        assert col.store.faces("office")[0].face_id == face_id
        assert abs(float(np.linalg.norm(col.store.faces("office")[0].embedding)) - 1) < 1e-6
        other = SimpleNamespace(model=SimpleNamespace(path=no_threshold_model), detector="mtcnn")
        with pytest.raises(FaceembedError, match="is bound to model 'dlib-resnet'"):
            fe.Collection.open(col.store, "office", other)  # type: ignore[arg-type]
        col.store.create_collection("stale", "dlib-resnet", "0" * 64, 128, threshold=0.9)  # the file changed since
        with pytest.raises(FaceembedError, match="is bound to model 'dlib-resnet' .*digest 000000000000"):
            fe.Collection.open(col.store, "stale")
        with pytest.raises(FaceembedError, match="detector must be"):
            col.recognize(np.zeros((8, 8, 3), np.uint8), detector="hog")
        with pytest.raises(fe.FaceembedError, match="not a readable image"):
            col.recognize(b"definitely not a photo")


@needs_lfw
@pytest.mark.realdata
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_enroll_recognize_verify_on_lfw(request, tmp_path, analyzer, backend):
    url = f"sqlite:///{tmp_path}/c.db" if backend == "sqlite" else request.getfixturevalue("pg_url")
    fe.Collection.create(url, "office")[0].close()
    with fe.Collection.open(url, "office", analyzer) as col:
        for name in ("Colin_Powell", "Tony_Blair"):
            for i in (2, 3):
                r = col.enroll(name, photo(name, i).read_bytes() if i == 3 else photo(name, i))
                assert r["subject"] == name and len(r["box"]) == 4 and r["box"][2] > 40 and len(r["landmarks"]) == 5
        assert [(s["subject"], s["faces"]) for s in col.subjects()] == [("Colin_Powell", 2), ("Tony_Blair", 2)]
        faces = col.recognize(photo("Colin_Powell", 1))
        assert faces[0]["subject"] == "Colin_Powell" and faces[0]["matches"][0]["similarity"] >= col.threshold
        assert [m["subject"] for m in faces[0]["matches"]] == ["Colin_Powell", "Tony_Blair"]
        stranger = col.recognize(photo("George_W_Bush", 1))
        assert stranger[0]["subject"] is None  # nobody enrolled at the threshold
        assert col.verify(photo("Colin_Powell", 1), photo("Colin_Powell", 4))["same"]
        v = col.verify(photo("Colin_Powell", 1), photo("Tony_Blair", 1))
        assert not v["same"] and v["far"] == 1e-3 and v["threshold"] == col.threshold
        emb = col.embed(photo("Colin_Powell", 1))[0]["embedding"]
        assert len(emb) == 128 and abs(np.linalg.norm(emb) - 1) < 1e-5
        with pytest.raises(NoFaceError):
            col.enroll("blank", np.full((120, 120, 3), 128, np.uint8))
        assert col.enroll("blank", np.full((120, 120, 3), 128, np.uint8), no_face="whole")["subject"] == "blank"
        col.delete_subject("blank")
        col.rename("Tony_Blair", "Tony")
        assert col.recognize(photo("Tony_Blair", 1))[0]["subject"] == "Tony"  # the index follows the rename
        col.delete_face(col.store.faces("office", "Tony")[0].face_id)
        assert [s["faces"] for s in col.subjects()] == [2, 1]
    gallery = fe.Gallery.from_collection(url, "office", analyzer)
    assert gallery.names == ["Colin_Powell", "Tony"] and gallery.search(photo("Colin_Powell", 1), k=1)[0][0] == \
        "Colin_Powell"


@needs_lfw
@pytest.mark.realdata
def test_collection_cli_and_enroll_identify_db(tmp_path):
    db = f"sqlite:///{tmp_path}/s.db"
    made = cli("collection", "create", "office", "--db", db, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert len(key) == 43 and " " not in key
    again = cli("collection", "create", "office", "--db", db, cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
    people = tmp_path / "people"
    for name in ("Colin_Powell", "Tony_Blair"):
        (people / name).mkdir(parents=True)
        for i in (2, 3):
            (people / name / f"{i}.jpg").write_bytes(photo(name, i).read_bytes())
    (people / "Tony_Blair" / "empty.jpg").write_bytes(b"")
    enrolled = cli("enroll", "--images", str(people), "--db", db, "--collection", "office", "--no-progress",
                   cwd=tmp_path)
    assert enrolled.returncode == 0, enrolled.stderr
    assert '"faces_added": 4' in enrolled.stdout and "empty.jpg" in enrolled.stderr
    found = cli("identify", "--images", str(photo("Colin_Powell", 1)), "--images", str(photo("George_W_Bush", 1)),
                "--db", db, "--collection", "office", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    lines = found.stdout.strip().splitlines()
    assert lines[0].split("\t")[1].startswith("Colin_Powell") and lines[1].split("\t")[1].startswith("unknown")
    import json

    listed = json.loads(cli("collection", "list", "--db", db, "--json", cwd=tmp_path).stdout)
    assert [(c["name"], c["subjects"], c["faces"]) for c in listed] == [("office", 2, 4)]
    keys = json.loads(cli("collection", "keys", "office", "--db", db, "--json", cwd=tmp_path).stdout)
    assert keys[0]["prefix"] == key[:8] and not keys[0]["revoked"]
    assert cli("collection", "revoke", "office", keys[0]["key_id"], "--db", db, cwd=tmp_path).returncode == 0
    with fe.Collection.open(db, "office") as col:
        assert col.store.collection_for_key(key) is None
    assert cli("collection", "delete", "office", "--db", db, cwd=tmp_path).returncode == 0
    gone = cli("identify", "--images", str(people), "--db", db, "--collection", "office", cwd=tmp_path)
    assert gone.returncode == 2 and "no collection named 'office'" in gone.stderr
