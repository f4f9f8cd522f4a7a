"""The store (faceembed.store) on SQLite and on PostgreSQL: every operation, the schema's version and migration,
API keys, hostile subject names, the change counter seen from another process, kill -9 durability, and
CollectionIndex.search against a direct float64 computation."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from faceembed.errors import FaceembedError, MissingInputError, ShapeMismatchError
from faceembed.store import CollectionIndex, NewFace, open_store
from faceembed.store.schema import LATEST, schema_version

DIM = 8


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path) -> str:
    """A fresh empty store on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/sub/faces.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def make(store, name: str = "c") -> str:
    store.create_collection(name, "dlib-resnet", "d" * 64, DIM, far=1e-3, threshold=0.5, meta={"k": 1})
    return name


def test_urls_and_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_store("rel/one.db") as s:  # a bare path, its folder created
        assert s.url == "sqlite:///rel/one.db" and schema_version(s) == LATEST
    assert (tmp_path / "rel" / "one.db").is_file()
    with open_store(f"sqlite:///{tmp_path}/abs.sqlite") as s:
        assert s.collections() == []
    for bad in ("mysql://x/y", "faces.txt", "sqlite:///"):
        with pytest.raises(FaceembedError, match="unknown store URL|needs a file path"):
            open_store(bad)


def test_collections_and_keys(store):
    info, key = store.create_collection("c", "dlib-resnet", "d" * 64, DIM, far=1e-3, threshold=0.5, meta={"k": 1})
    assert (info.name, info.dim, info.far, info.threshold, info.meta) == ("c", DIM, 1e-3, 0.5, {"k": 1})
    assert store.collection("c") == info and store.collections() == [info]
    with pytest.raises(FaceembedError, match="already exists"):
        store.create_collection("c", "m", "d", DIM)
    for bad in ("", "a b", "x" * 101, "../etc", "a;b"):
        with pytest.raises(FaceembedError, match="collection name"):
            store.create_collection(bad, "m", "d", DIM)
    with pytest.raises(MissingInputError):
        store.collection("nope")
    other_info, other = store.create_collection("other", "m", "e" * 64, DIM)
    second = store.create_key("c")
    assert store.collection_for_key(key) == info and store.collection_for_key(second) == info
    assert store.collection_for_key(other) == other_info  # a key opens its own collection, never another
    assert store.collection_for_key("x" * 43) is None and store.collection_for_key("") is None
    keys = store.keys("c")
    assert [k["prefix"] for k in keys] == [key[:8], second[:8]] and not any(k["revoked"] for k in keys)
    store.revoke_key("c", keys[0]["key_id"])
    assert store.collection_for_key(key) is None and store.collection_for_key(second) == info
    assert [k["revoked"] for k in store.keys("c")] == [True, False]
    with pytest.raises(MissingInputError):
        store.revoke_key("other", keys[1]["key_id"])  # another collection's key id
    with store.transaction() as tx:  # keys are kept as SHA-256 only
        rows = tx.execute("SELECT key_id, collection, prefix, key_hash FROM api_keys").fetchall()
    assert not any(key in str(v) or second in str(v) for r in rows for v in r)
    assert hashlib.sha256(second.encode()).hexdigest() in {r[3] for r in rows}
    store.delete_collection("c")
    assert [c.name for c in store.collections()] == ["other"] and store.collection_for_key(second) is None
    with pytest.raises(MissingInputError):
        store.delete_collection("c")


def test_subjects_and_faces(store):
    rng = np.random.default_rng(0)
    make(store)
    v0 = store.version("c")
    e = unit(rng, 5)
    ids = store.add_faces("c", [NewFace("ann", e[0], quality=0.7, box=[1, 2, 3, 4], landmarks=[[1, 2]] * 5,
                                        photo_digest="p", image="Ann/1.jpg"),
                                NewFace("ann", e[1]), NewFace("bob", e[2])])
    assert len(set(ids)) == 3 and store.version("c") == v0 + 1
    assert store.subjects("c") == [{"subject": "ann", "faces": 2, "named": True},
                                   {"subject": "bob", "faces": 1, "named": True}]
    row = store.faces("c", "ann")[0]
    assert (row.face_id, row.quality, row.box, row.landmarks, row.photo_digest, row.image) == \
        (ids[0], 0.7, [1.0, 2.0, 3.0, 4.0], [[1.0, 2.0]] * 5, "p", "Ann/1.jpg")
    assert np.array_equal(row.embedding, e[0]) and row.sigma_sq is None
    m = store.matrix("c")
    assert m.face_ids == ids and m.subjects == ["ann", "ann", "bob"] and m.sigma_sq is None
    assert m.embeddings.dtype == np.float32 and np.array_equal(m.embeddings, e[:3]) and m.version == store.version("c")

    with pytest.raises(ShapeMismatchError, match="dimension 8"):
        store.add_faces("c", [NewFace("carl", e[3]), NewFace("carl", np.ones(4, np.float32))])
    with pytest.raises(ShapeMismatchError, match="sigma_sq"):
        store.add_faces("c", [NewFace("carl", e[3], sigma_sq=np.ones(3))])
    assert len(store.faces("c")) == 3 and store.version("c") == v0 + 1  # nothing written, counter untouched

    store.add_faces("c", [NewFace("p0001", e[3]), NewFace("p0001", e[4])], named=False)
    p_ids = [f.face_id for f in store.faces("c", "p0001")]
    store.add_cannot_link("c", p_ids[0], "ann")
    store.add_cannot_link("c", p_ids[0], "ann")  # twice: kept once
    store.add_cannot_link("c", ids[2], "p0001")
    store.set_named("c", "p0001", True)
    store.set_named("c", "p0001", False)
    assert {s["subject"]: s["named"] for s in store.subjects("c")}["p0001"] is False
    store.rename_subject("c", "ann", "anne")  # a rename: the cannot-link follows
    assert store.cannot_links("c") == sorted([(p_ids[0], "anne"), (ids[2], "p0001")])
    store.rename_subject("c", "p0001", "anne")  # into an existing name: merged, named
    assert store.subjects("c")[0] == {"subject": "anne", "faces": 4, "named": True}
    assert (ids[2], "anne") in store.cannot_links("c")
    store.move_faces("c", [p_ids[1]], "p0002")
    assert {s["subject"]: (s["faces"], s["named"]) for s in store.subjects("c")} == \
        {"anne": (3, True), "bob": (1, True), "p0002": (1, False)}
    store.move_faces("c", [p_ids[1]], "bob")  # p0002 left without faces: dropped
    assert [s["subject"] for s in store.subjects("c")] == ["anne", "bob"]
    store.delete_face("c", p_ids[0])
    assert all(f != p_ids[0] for f, _ in store.cannot_links("c"))
    store.delete_subject("c", "bob")
    assert [s["subject"] for s in store.subjects("c")] == ["anne"] and store.cannot_links("c") == []
    for call in (lambda: store.delete_subject("c", "bob"), lambda: store.delete_face("c", "nope"),
                 lambda: store.rename_subject("c", "bob", "x"), lambda: store.move_faces("c", ["nope"], "x"),
                 lambda: store.add_cannot_link("c", "nope", "x"), lambda: store.add_faces("zz", [])):
        with pytest.raises(MissingInputError):
            call()
    sig = np.abs(unit(rng, 2))
    make(store, "s")
    store.add_faces("s", [NewFace("a", e[0], sigma_sq=sig[0]), NewFace("b", e[1], sigma_sq=sig[1])])
    assert np.array_equal(store.matrix("s").sigma_sq, sig) and store.matrix("c").sigma_sq is None


HOSTILE = ["Robert'); DROP TABLE faces;--", "../../etc/passwd", "..\\..\\boot.ini", "%s %(x)s ?", "a\"b`c",
           "Zoë 😀 名前", "x" * 200, "/", "1 OR 1=1", "NULL"]


def test_hostile_subject_names_are_stored_verbatim(store):
    rng = np.random.default_rng(1)
    make(store)
    store.add_faces("c", [NewFace(s, v) for s, v in zip(HOSTILE, unit(rng, len(HOSTILE)), strict=True)])
    assert [s["subject"] for s in store.subjects("c")] == sorted(HOSTILE)
    assert len(store.faces("c", HOSTILE[0])) == 1
    store.rename_subject("c", HOSTILE[1], HOSTILE[0])
    assert {s["subject"]: s["faces"] for s in store.subjects("c")}[HOSTILE[0]] == 2
    for bad in ("", "x" * 201, "a\nb", "a\x00b", "tab\there", "\x7f"):
        with pytest.raises(FaceembedError, match="subject name"):
            store.add_faces("c", [NewFace(bad, unit(rng, 1)[0])])
    assert len(store.faces("c")) == len(HOSTILE)  # the tables are intact


def test_schema_migrates_and_refuses_newer(store_url):
    rng = np.random.default_rng(2)
    with open_store(store_url) as s:
        make(s)
        s.add_faces("c", [NewFace("a", unit(rng, 1)[0])])
        with s.transaction(write=True) as tx:  # back to version 1: no cannot_links table yet
            tx.execute("DROP TABLE cannot_links")
            tx.execute("UPDATE schema_version SET version = 1")
    with open_store(store_url) as s:
        assert schema_version(s) == LATEST and s.cannot_links("c") == [] and len(s.faces("c")) == 1
        with s.transaction(write=True) as tx:
            tx.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(FaceembedError, match="newer than this faceembed"):
        open_store(store_url)


def test_threads_write_at_once(store):
    rng = np.random.default_rng(3)
    make(store)
    vecs = unit(rng, 40)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(10):
                store.add_faces("c", [NewFace(f"t{t}", vecs[t * 10 + i])])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(store.faces("c")) == 40 and store.version("c") == 41


def _child(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


WATCHER = """
    import sys, time
    from faceembed.store import open_store
    s = open_store(sys.argv[1])
    v = s.version("c")
    print("ready", v, flush=True)
    sys.stdin.readline()
    deadline = time.monotonic() + 1.0
    while s.version("c") == v and time.monotonic() < deadline:
        time.sleep(0.01)
    print("seen", s.version("c"), flush=True)
"""


def test_version_seen_by_another_process_and_index_refresh(store_url):
    rng = np.random.default_rng(4)
    with open_store(store_url) as s, open_store(store_url) as other:
        make(s)
        index = CollectionIndex(other, "c")
        assert len(index) == 0 and not index.refresh()
        child = _child(WATCHER, store_url)
        try:
            ready = child.stdout.readline().split()
            assert ready[0] == "ready", child.stderr.read()
            s.add_faces("c", [NewFace("a", unit(rng, 1)[0])])
            child.stdin.write("go\n")
            child.stdin.flush()
            seen = child.stdout.readline().split()
        finally:
            child.kill()
            child.wait()
        assert seen == ["seen", str(int(ready[1]) + 1)]  # within the watcher's 1 s
        assert index.refresh() and len(index) == 1 and not index.refresh()
        assert index.search(s.matrix("c").embeddings, k=3)[0][0][0] == "a"


WRITER = """
    import sys
    import numpy as np
    from faceembed.store import NewFace, open_store
    s = open_store(sys.argv[1])
    rng = np.random.default_rng(0)
    for i in range(100000):
        v = rng.standard_normal(8).astype(np.float32)
        face_id = s.add_faces("c", [NewFace(f"s{i % 7}", v / np.linalg.norm(v))])[0]
        print(face_id, flush=True)
"""


def test_acknowledged_faces_survive_kill_9(store_url):
    """Two writer processes at once (each face its own transaction, its id printed once committed), killed with
    SIGKILL mid-run: every printed id is in the store afterwards, and the store still takes writes."""
    with open_store(store_url) as s:
        make(s)
    writers = [_child(WRITER, store_url) for _ in range(2)]
    acknowledged: list[str] = []
    try:
        for _ in range(25):
            for w in writers:
                line = w.stdout.readline()
                assert line, w.stderr.read()
                acknowledged.append(line.strip())
    finally:
        for w in writers:
            w.send_signal(signal.SIGKILL)
            w.wait()
    for w in writers:
        assert w.returncode == -signal.SIGKILL
        acknowledged += [ln.strip() for ln in w.stdout.read().splitlines() if len(ln.strip()) == 32]
    with open_store(store_url) as s:
        stored = {f.face_id for f in s.faces("c")}
        assert set(acknowledged) <= stored and len(stored) >= 50
        s.add_faces("c", [NewFace("after", np.eye(DIM, dtype=np.float32)[0])])


def _direct(embs: np.ndarray, subjects: list[str], probes: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    sims = probes.astype(np.float64) @ embs.astype(np.float64).T
    out = []
    for row in sims:
        best: dict[str, float] = {}
        for s, v in zip(subjects, row, strict=True):
            best[s] = max(best.get(s, -np.inf), v)
        out.append(sorted(best.items(), key=lambda t: (-t[1], t[0]))[:k])
    return out


@pytest.mark.parametrize("method", ["numpy", "faiss"])
def test_index_search_matches_float64(tmp_path, method, monkeypatch):
    rng = np.random.default_rng(5)
    with open_store(tmp_path / "i.db") as s:
        make(s)
        assert CollectionIndex(s, "c", method).search(unit(rng, 2), k=3) == [[], []]
        embs = unit(rng, 300)
        subjects = [f"p{int(i):02d}" for i in rng.integers(0, 40, 300)]
        s.add_faces("c", [NewFace(n, v) for n, v in zip(subjects, embs, strict=True)])
        index = CollectionIndex(s, "c", method)
        probes = unit(rng, 7)
        for k in (1, 5, 100):
            got, want = index.search(probes, k), _direct(embs, subjects, probes, k)
            assert [[n for n, _ in r] for r in got] == [[n for n, _ in r] for r in want]
            assert np.allclose([v for r in got for _, v in r], [v for r in want for _, v in r], atol=1e-5)
        with pytest.raises(ShapeMismatchError):
            index.search(unit(rng, 1, DIM + 1))
        if method == "numpy":  # probes in chunks of 2 give the same answers
            import faceembed.store.index as index_module

            monkeypatch.setattr(index_module, "PROBE_CHUNK_FLOATS", 2 * len(embs))
            assert [[n for n, _ in r] for r in index.search(probes, 5)] == \
                [[n for n, _ in r] for r in _direct(embs, subjects, probes, 5)]
