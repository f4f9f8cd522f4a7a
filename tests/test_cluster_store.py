"""Incremental clustering into a store and the corrections that must survive it (synthetic embeddings, SQLite):
assignment by the linkage rule, rename / merge / split / "not X", --recluster keeping confirmed people."""

from __future__ import annotations

import numpy as np
import pytest

from faceembed.errors import FaceembedError, MissingInputError
from faceembed.evaluation.clustering import bcubed
from faceembed.faces.cluster_assign import assign_faces, person_scores
from faceembed.faces.cluster_photos import PhotoFaces
from faceembed.faces.people_edit import list_people, merge_people, not_person, rename_person, split_person
from faceembed.faces.people_store import cluster_into_store, next_names, store_people_document

DIM = 128  # dlib-resnet's size: the collection is bound to that model


def blobs(people=8, per=6, seed=0, spread=0.12):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(people, DIM))
    x = np.repeat(centers, per, axis=0) + rng.normal(scale=spread, size=(people * per, DIM)) * np.sqrt(1.0)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(people), per)


def photo_faces(emb, truth, rows, tag=""):
    return PhotoFaces(images=[f"{truth[i]}/{i}{tag}.jpg" for i in rows], boxes=[[0.0, 0.0, 10.0, 10.0]] * len(rows),
                      scores=[1.0] * len(rows), ranks=[0] * len(rows), whole=[False] * len(rows),
                      embeddings=emb[rows])


def test_person_scores_match_direct_float64():
    rng = np.random.default_rng(1)
    old, new = rng.normal(size=(9, 5)), rng.normal(size=(4, 5))
    people = np.array([0, 2, 2, 1, 0, 2, 1, 1, 0])
    for method, fn in (("average", np.mean), ("complete", np.min), ("single", np.max)):
        got = person_scores(new, old, people, 4, method)
        for i in range(4):
            for p in range(3):
                assert got[i, p] == pytest.approx(fn([new[i] @ old[j] for j in np.flatnonzero(people == p)]))
            assert got[i, 3] == -np.inf  # a person with no face


def test_assign_faces_joins_people_and_makes_new_ones():
    emb, truth = blobs()
    old = np.flatnonzero(truth < 5)
    new = np.flatnonzero(truth >= 3)
    joined, fresh = assign_faces(emb[old], [f"P{t}" for t in truth[old]], emb[new], 0.5)
    for k, i in enumerate(new):
        if truth[i] < 5:
            assert joined[k] == f"P{truth[i]}"
        else:
            assert joined[k] is None and fresh[k] >= 0
    assert bcubed(fresh[truth[new] >= 5], truth[new][truth[new] >= 5])[2] == 1.0
    forbidden = {0: {f"P{truth[new[0]]}"}}
    joined, _ = assign_faces(emb[old], [f"P{t}" for t in truth[old]], emb[new], 0.5, forbidden=forbidden)
    assert joined[0] != f"P{truth[new[0]]}"


def test_update_people_equals_a_full_run():
    from faceembed.faces.cluster_algos import cluster_embeddings
    from faceembed.faces.cluster_assign import update_people

    emb, truth = blobs(people=10, per=6, spread=0.35, seed=3)
    old, new = np.arange(0, len(emb), 2), np.arange(1, len(emb), 2)
    t = 0.3
    before = cluster_embeddings(emb[old], t)
    joined, rows, labels = update_people(emb[old], [f"p{k}" for k in before], np.zeros(len(old), bool), emb[new], t)
    assert joined == [None] * len(new)
    after = np.r_[before + 1000, np.zeros(len(new), np.int64)]  # untouched old faces keep their people
    after[rows] = labels
    full = cluster_embeddings(np.r_[emb[old], emb[new]], t)
    assert bcubed(after, full) == pytest.approx((1.0, 1.0, 1.0))


def test_next_names():
    assert next_names({"p0001", "p0003"}, 3) == ["p0002", "p0004", "p0005"]


def test_incremental_run_keeps_corrections(tmp_path):
    db = f"sqlite:///{tmp_path / 'people.db'}"
    emb, truth = blobs()
    first = np.flatnonzero(np.arange(len(truth)) % 2 == 0)
    second = np.flatnonzero(np.arange(len(truth)) % 2 == 1)
    s = cluster_into_store(None, db, faces=photo_faces(emb, truth, first), far=1e-3)
    assert s["people"] == 8 and s["new_people"] == 8
    people = list_people(db)
    top = people[0]
    rename_person(db, top["person"], "Ann")
    victim = people[1]["face_ids"][0]
    out = not_person(db, people[1]["person"], victim)
    assert out["moved_to"] is not None
    s = cluster_into_store(None, db, faces=photo_faces(emb, truth, second, "b"), far=1e-3, out=tmp_path / "p.json")
    assert s["new_people"] == 0 and s["joined_confirmed"] == 6  # Ann and the person of the "not": 3 each
    after = {p["person"]: p for p in list_people(db)}
    assert after["Ann"]["named"] and after["Ann"]["faces"] == 6
    assert victim not in after[people[1]["person"]]["face_ids"]
    doc = store_people_document(_open(db))
    assert sum(len(p["faces"]) for p in doc["people"]) == len(truth)
    # recluster: the victim may rejoin any person but the one it is not; confirmed people stay as they are
    s = cluster_into_store(None, db, far=1e-3, recluster=True)
    after2 = {p["person"]: p for p in list_people(db)}
    assert after2["Ann"]["face_ids"] == after["Ann"]["face_ids"]
    assert victim not in after2[people[1]["person"]]["face_ids"]
    assert sum(p["faces"] for p in after2.values()) == len(truth)


def test_merge_and_split_survive_recluster(tmp_path):
    db = tmp_path / "people.db"
    emb, truth = blobs(people=4, per=5)
    cluster_into_store(None, str(db), faces=photo_faces(emb, truth, np.arange(len(truth))), far=1e-3)
    people = list_people(str(db))
    a, b = people[0]["person"], people[1]["person"]
    merge_people(str(db), a, b)  # a wrong merge the user wants kept (e.g. one person at two ages)
    moved = people[2]["face_ids"][:2]
    split_person(str(db), people[2]["person"], moved, name="Bob")
    cluster_into_store(None, str(db), far=1e-3, recluster=True)
    after = {p["person"]: p for p in list_people(str(db))}
    assert set(after[a]["face_ids"]) == set(people[0]["face_ids"]) | set(people[1]["face_ids"])
    assert set(after["Bob"]["face_ids"]) == set(moved)
    assert sum(p["faces"] for p in after.values()) == len(truth)


def test_correction_errors(tmp_path):
    db = str(tmp_path / "people.db")
    emb, truth = blobs(people=2, per=3)
    cluster_into_store(None, db, faces=photo_faces(emb, truth, np.arange(6)), far=1e-3)
    p = list_people(db)
    with pytest.raises(MissingInputError):
        rename_person(db, "nobody", "x")
    with pytest.raises(FaceembedError, match="itself"):
        merge_people(db, p[0]["person"], p[0]["person"])
    with pytest.raises(FaceembedError, match="--faces"):
        split_person(db, p[0]["person"], p[1]["face_ids"][:1])
    with pytest.raises(FaceembedError, match="exists"):
        split_person(db, p[0]["person"], p[0]["face_ids"][:1], name=p[1]["person"])


def _open(db):
    from faceembed.store import open_store

    return open_store(db)
