"""faceembed serve in process (FastAPI's TestClient): every route, keys and isolation between collections, bad
input (each its 4xx, the server answering after it), the upload limit while reading, micro-batching.

Photos are synthetic crops used whole (``detector=none``) except in the real-data test (LFW, MTCNN)."""

from __future__ import annotations

import io
import struct
import threading
import zlib
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

LFW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lfw" / "images"
NONE = {"detector": "none"}


def png_bytes(seed: int, size: int = 150) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def png_bomb(side: int = 30000) -> bytes:
    """A PNG whose header says ``side x side`` RGB (2.7 GB decoded at 30000) in a few hundred bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (3 * side + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A TestClient on a fresh SQLite store with two collections; their keys (and the store's URL as "db")."""
    from fastapi.testclient import TestClient

    from faceembed.faces.collection import Collection
    from faceembed.serve.app import create_app

    db = f"sqlite:///{tmp_path_factory.mktemp('serve') / 'faces.db'}"
    keys = {}
    for name in ("office", "other"):
        col, keys[name] = Collection.create(db, name)
        col.close()
    with TestClient(create_app(db, max_upload_mb=1)) as client:
        yield client, {**keys, "db": db}


def h(key: str) -> dict:
    return {"x-api-key": key}


def enroll(client, key: str, subject: str, photo: bytes, **params):
    return client.post(f"/v1/subjects/{quote(subject, safe='')}/faces", headers=h(key),
                       files={"file": ("p.png", photo)}, params=params or NONE)


def test_health_page_and_docs(served):
    client, _ = served
    assert client.get("/v1/health").json()["status"] == "ok"
    assert "faceembed" in client.get("/").text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/docs").status_code == 200
    assert "/v1/recognize" in client.get("/openapi.json").json()["paths"]


def test_enroll_recognize_rename_delete(served):
    client, keys = served
    k = keys["office"]
    r = enroll(client, k, "Ann", png_bytes(1))
    assert r.status_code == 201, r.text
    face = r.json()
    assert face["subject"] == "Ann" and len(face["face_id"]) == 32
    assert enroll(client, k, "Bob", png_bytes(2)).status_code == 201
    faces = client.post("/v1/recognize", headers=h(k), files={"file": png_bytes(1)}, params=NONE).json()["faces"]
    assert faces[0]["subject"] == "Ann" and faces[0]["matches"][0]["similarity"] > 0.999
    listed = {s["subject"]: s["faces"] for s in client.get("/v1/subjects", headers=h(k)).json()["subjects"]}
    assert listed["Ann"] == 1 and listed["Bob"] == 1
    thumb = client.get(f"/v1/faces/{face['face_id']}/thumbnail", headers=h(k))
    assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"
    assert client.patch("/v1/subjects/Bob", headers=h(k), json={"name": "Ann"}).status_code == 200  # merges
    assert client.get("/v1/subjects/Ann/faces", headers=h(k)).json()["faces"].__len__() == 2
    assert client.delete(f"/v1/faces/{face['face_id']}", headers=h(k)).status_code == 200
    assert client.get(f"/v1/faces/{face['face_id']}/thumbnail", headers=h(k)).status_code == 404
    assert client.delete("/v1/subjects/Ann", headers=h(k)).status_code == 200
    assert client.delete("/v1/subjects/Ann", headers=h(k)).status_code == 404
    assert all(s["subject"] != "Ann" for s in client.get("/v1/subjects", headers=h(k)).json()["subjects"])


def test_verify_and_embed(served):
    client, keys = served
    files = {"a": ("a.png", png_bytes(3)), "b": ("b.png", png_bytes(3))}
    v = client.post("/v1/verify", headers=h(keys["office"]), files=files, params=NONE).json()
    assert v["same"] is True and v["far"] == 1e-3
    e = client.post("/v1/embed", headers=h(keys["office"]), files={"file": png_bytes(4)}, params=NONE).json()
    vec = np.array(e["faces"][0]["embedding"])
    assert vec.shape == (128,) and abs(np.linalg.norm(vec) - 1) < 1e-5


def test_keys_and_isolation(served):
    client, keys = served
    face_id = enroll(client, keys["office"], "Secret", png_bytes(5)).json()["face_id"]
    assert client.get("/v1/subjects").status_code == 401
    assert client.get("/v1/subjects", headers=h("fe_" + "0" * 40)).status_code == 403
    other = h(keys["other"])
    assert "Secret" not in {s["subject"] for s in client.get("/v1/subjects", headers=other).json()["subjects"]}
    assert client.get(f"/v1/faces/{face_id}/thumbnail", headers=other).status_code == 404
    assert client.delete(f"/v1/faces/{face_id}", headers=other).status_code == 404
    assert client.delete("/v1/subjects/Secret", headers=other).status_code == 404
    assert client.patch("/v1/subjects/Secret", headers=other, json={"name": "Mine"}).status_code == 404
    got = client.post("/v1/recognize", headers=other, files={"file": png_bytes(5)}, params=NONE).json()["faces"]
    assert got[0]["subject"] is None and got[0]["matches"] == []
    mine = client.get("/v1/subjects/Secret/faces", headers=h(keys["office"])).json()["faces"]
    assert [f["face_id"] for f in mine] == [face_id]  # untouched by the other key's attempts


@pytest.mark.parametrize("name", ["../../etc/passwd", "x'; DROP TABLE faces; --", "Robert\"); DELETE FROM subjects",
                                  "a/b\\c", "名前 with spaces"])
def test_hostile_subject_names_are_plain_data(served, name):
    """Path-looking and SQL-looking names are stored literally (bound parameters, no file named by a subject)."""
    client, keys = served
    k = keys["office"]
    r = enroll(client, k, name, png_bytes(6))
    assert r.status_code == 201, r.text
    assert r.json()["subject"] == name
    assert name in {s["subject"] for s in client.get("/v1/subjects", headers=h(k)).json()["subjects"]}
    assert client.delete(f"/v1/subjects/{quote(name, safe='')}", headers=h(k)).status_code == 200
    assert client.get("/v1/subjects", headers=h(keys["other"])).status_code == 200


def _truncated_jpeg() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.full((120, 120, 3), 128, np.uint8)).save(out, "JPEG")
    return out.getvalue()[:-200]


def _corrupt_jpeg() -> bytes:
    return b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9"


BAD_PHOTOS = {"zero-byte": (b"", 400), "text": (b"hello, I am not a photo\n", 400),
              "truncated": (None, 400), "corrupt": (None, 400), "png-bomb": (None, 413)}


@pytest.mark.parametrize("kind", BAD_PHOTOS)
@pytest.mark.parametrize("route", ["enroll", "recognize", "embed"])
def test_bad_photos(served, kind, route):
    client, keys = served
    data, status = BAD_PHOTOS[kind]
    data = data if data is not None else {"truncated": _truncated_jpeg, "corrupt": _corrupt_jpeg,
                                          "png-bomb": png_bomb}[kind]()
    path = "/v1/subjects/Bad/faces" if route == "enroll" else f"/v1/{route}"
    r = client.post(path, headers=h(keys["office"]), files={"file": ("x.jpg", data)})
    assert r.status_code == status, r.text
    assert list(r.json()) == ["error"] and "\n" not in r.json()["error"]
    assert client.get("/v1/health").status_code == 200
    assert "Bad" not in {s["subject"] for s in client.get("/v1/subjects", headers=h(keys["office"])).json()["subjects"]}


def test_bad_requests(served):
    client, keys = served
    k = h(keys["office"])
    assert client.post("/v1/recognize", headers=k).status_code == 400  # no file field
    assert client.post("/v1/recognize?detector=bogus", headers=k, files={"file": png_bytes(1)}).status_code == 400
    assert client.post("/v1/recognize?limit=0", headers=k, files={"file": png_bytes(1)}).status_code == 400
    assert client.post("/v1/recognize", headers={**k, "content-type": "multipart/form-data; boundary=zz"},
                       content=b"garbage--zz\r\nxx").status_code == 400  # malformed multipart
    assert client.patch("/v1/subjects/x", headers={**k, "content-type": "application/json"},
                        content=b"{bad").status_code == 400
    assert client.put("/v1/recognize", headers=k).status_code == 405
    assert client.patch("/v1/subjects/x", headers=k, json={}).status_code in (400, 404)
    assert client.delete("/v1/faces/..%2F..%2Fetc%2Fpasswd", headers=k).status_code == 404
    assert client.get("/v1/faces/../../etc/passwd/thumbnail", headers=k).status_code == 404
    assert enroll(client, keys["office"], "tab\there", png_bytes(1)).status_code == 400  # control character
    assert enroll(client, keys["office"], "x" * 201, png_bytes(1)).status_code == 400
    r = enroll(client, keys["office"], "Blank", np.full(1, 0, np.uint8).tobytes(), detector="mtcnn")
    assert r.status_code == 400
    from PIL import Image

    grey = io.BytesIO()
    Image.new("RGB", (200, 200), (128, 128, 128)).save(grey, "PNG")
    r = enroll(client, keys["office"], "Nobody", grey.getvalue(), detector="mtcnn")
    assert r.status_code == 422 and "no face" in r.json()["error"]


def test_huge_body_gets_413_while_read(served):
    client, keys = served
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (3 * 2**20)
    r = client.post("/v1/recognize", headers=h(keys["office"]), files={"file": ("big.png", big)})
    assert r.status_code == 413 and "upload limit" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is met while the body streams in
        for _ in range(40):
            yield b"\0" * 100_000

    r = client.post("/v1/recognize", headers={**h(keys["office"]), "content-type": "multipart/form-data; boundary=x"},
                    content=chunks())
    assert r.status_code == 413
    assert client.get("/v1/health").status_code == 200


class CountingModel:
    """A stand-in FaceModel: embedding = the crop's mean per channel; counts its calls."""

    def __init__(self):
        self.path, self.backend, self.card = Path("fake.pt"), None, None
        self.calls: list[int] = []

    def embed(self, faces, batch=64):
        self.calls.append(len(faces))
        return faces.reshape(len(faces), -1, 3).mean(axis=1).astype(np.float32), None


def test_micro_batching_groups_concurrent_callers():
    from faceembed.serve.batching import BatchingModel

    fake = CountingModel()
    model = BatchingModel(fake, window_ms=50, max_batch=64)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (1 + i % 3, 4, 4, 3), dtype=np.uint8) for i in range(16)]
    got: dict[int, np.ndarray] = {}
    start = threading.Barrier(16)

    def call(i: int) -> None:
        start.wait()
        got[i] = model.embed(crops[i])[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    model.close()
    for i, c in enumerate(crops):  # each caller gets its own rows, against a direct float64 computation
        np.testing.assert_allclose(got[i], c.reshape(len(c), -1, 3).astype(np.float64).mean(axis=1), rtol=1e-6)
    assert sum(fake.calls) == sum(len(c) for c in crops)
    assert len(fake.calls) < 16 and model.stats.requests == 16


def test_micro_batching_passes_errors_to_callers():
    from faceembed.serve.batching import BatchingModel

    class Failing(CountingModel):
        def embed(self, faces, batch=64):
            raise ValueError("model failed")

    model = BatchingModel(Failing(), window_ms=1)
    with pytest.raises(ValueError, match="model failed"):
        model.embed(np.zeros((1, 4, 4, 3), np.uint8))
    model.close()


@pytest.mark.realdata
@pytest.mark.skipif(not LFW.is_dir(), reason="../shared/data/lfw not found: real-data test skipped")
def test_real_photos_over_http(served):
    client, keys = served
    k = keys["other"]
    for name in ("Aaron_Peirsol", "Amelie_Mauresmo"):
        photo = (LFW / name / f"{name}_0001.jpg").read_bytes()
        r = client.post(f"/v1/subjects/{name}/faces", headers=h(k), files={"file": photo})
        assert r.status_code == 201, r.text
    for name in ("Aaron_Peirsol", "Amelie_Mauresmo"):
        photo = (LFW / name / f"{name}_0002.jpg").read_bytes()
        faces = client.post("/v1/recognize", headers=h(k), files={"file": photo}).json()["faces"]
        assert faces[0]["subject"] == name
        x, y, w, hgt = faces[0]["box"]
        assert 40 < x + w / 2 < 210 and 40 < y + hgt / 2 < 210


def test_collection_bound_to_another_model_is_409(served):
    """A key whose collection was made with another model (another card digest) is refused, not served wrong."""
    client, keys = served
    from faceembed.store import open_store

    store = open_store(keys["db"])
    _, key = store.create_collection("elsewhere", "another-model", "f" * 64, 128, 1e-3, 0.5)
    store.close()
    r = client.get("/v1/subjects", headers=h(key))
    assert r.status_code == 409 and "another-model" in r.json()["error"]
