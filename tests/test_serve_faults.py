"""faceembed serve as real processes on 127.0.0.1: ``kill -9`` while 4 clients enroll loses no acknowledged
enrollment (SQLite and PostgreSQL); two servers on one PostgreSQL see each other's enrollments at once; bad input
leaves the server answering. Photos are synthetic crops used whole (``detector=none``) to keep the runs short."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from test_serve import png_bomb, png_bytes

NONE = {"detector": "none"}


def make_collection(db_url: str, name: str = "door") -> str:
    from faceembed.faces.collection import Collection

    col, key = Collection.create(db_url, name)
    col.close()
    return key


def kill_during_enrollment(db_url: str, tmp_path) -> dict:
    from faceembed.serve.faults import kill_during_enrollment as run

    key = make_collection(db_url)
    return run(db_url, key, lambda client, n: png_bytes(client * 100_000 + n, 64), clients=4, kill_after=24,
               params=NONE, log=tmp_path / "serve.log")


def test_kill_9_loses_no_acknowledged_enrollment_sqlite(tmp_path):
    got = kill_during_enrollment(f"sqlite:///{tmp_path / 'faces.db'}", tmp_path)
    assert got["acknowledged"] >= 24 and got["lost"] == 0, got


@pytest.mark.postgres
def test_kill_9_loses_no_acknowledged_enrollment_postgres(pg_url, tmp_path):
    got = kill_during_enrollment(pg_url, tmp_path)
    assert got["acknowledged"] >= 24 and got["lost"] == 0, got


@pytest.mark.postgres
def test_two_servers_on_one_postgres(pg_url, tmp_path):
    """An enrollment through one server is recognized by the other (two worker processes) on the next request."""
    import httpx

    from faceembed.serve.process import ServerProcess

    key = make_collection(pg_url)
    head = {"x-api-key": key}
    with ServerProcess(pg_url, log=tmp_path / "a.log") as a, \
            ServerProcess(pg_url, args=("--workers", "2"), log=tmp_path / "b.log") as b:
        for i in range(3):  # each of b's requests may land on either worker; every one must see the new face
            photo = png_bytes(7000 + i)
            first = httpx.post(f"{b.url}/v1/recognize", headers=head, params=NONE, files={"file": photo}, timeout=30)
            assert all(f["subject"] != f"p{i}" for f in first.json()["faces"])
            r = httpx.post(f"{a.url}/v1/subjects/p{i}/faces", headers=head, params=NONE, files={"file": photo},
                           timeout=30)
            assert r.status_code == 201
            for _ in range(2):
                got = httpx.post(f"{b.url}/v1/recognize", headers=head, params=NONE, files={"file": photo},
                                 timeout=30).json()["faces"]
                assert got[0]["subject"] == f"p{i}"


def test_bad_input_against_a_real_server(tmp_path):
    """Over a real socket: a huge body, a PNG bomb, a missing and a wrong key, a percent-encoded NUL in a subject:
    each its 4xx, and the server keeps answering."""
    import httpx

    from faceembed.serve.process import ServerProcess

    db = f"sqlite:///{tmp_path / 'faces.db'}"
    key = make_collection(db)
    with ServerProcess(db, args=("--max-upload-mb", "1"), log=tmp_path / "serve.log") as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as http:
        head = {"x-api-key": key}
        r = http.post("/v1/recognize", headers=head, files={"file": ("big.png", b"\0" * (8 * 2**20))})
        assert r.status_code == 413
        assert http.post("/v1/recognize", headers=head, files={"file": png_bomb()}).status_code == 413
        assert http.get("/v1/subjects").status_code == 401
        assert http.get("/v1/subjects", headers={"x-api-key": key[::-1]}).status_code == 403
        nul = http.post(f"/v1/subjects/{quote('a%00b', safe='')}/faces", headers=head, params=NONE,
                        files={"file": png_bytes(1)})
        assert nul.status_code == 201 and nul.json()["subject"] == "a%00b"  # decoded once, stored as sent
        assert http.get("/v1/health").json()["status"] == "ok"
