"""Fault runs of ``faceembed serve`` on 127.0.0.1, shared by the tests (short) and ``scripts/serve_faults.py``:

* :func:`kill_during_enrollment`: ``kill -9`` of the server while 4 clients enroll; after a restart, every
  enrollment that was answered 201 must be there;
* :func:`cross_process_latency`: two servers on one store (PostgreSQL); how long after an enrollment through one
  the other recognizes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

PhotoSource = Callable[[int, int], bytes]  # (client number, photo number) -> photo bytes


def _enroll_until_killed(url: str, key: str, client_no: int, photo: PhotoSource, params: dict, acked: list,
                         stop: threading.Event) -> None:
    """Enroll photos as subject ``c<client_no>`` until the server stops answering; keep every 201's face id."""
    import httpx

    with httpx.Client(base_url=url, headers={"x-api-key": key}, timeout=60) as http:
        n = 0
        while not stop.is_set():
            try:
                r = http.post(f"/v1/subjects/c{client_no}/faces", params=params,
                              files={"file": ("p.jpg", photo(client_no, n))})
            except httpx.HTTPError:
                return
            if r.status_code == 201:
                acked.append((f"c{client_no}", r.json()["face_id"]))
            n += 1


def _present(url: str, key: str, subjects: set[str]) -> set[str]:
    import httpx

    present: set[str] = set()
    for subject in subjects:
        r = httpx.get(f"{url}/v1/subjects/{subject}/faces", headers={"x-api-key": key}, timeout=60)
        if r.status_code == 200:
            present |= {f["face_id"] for f in r.json()["faces"]}
    return present


def kill_during_enrollment(db_url: str, key: str, photo: PhotoSource, clients: int = 4, kill_after: int = 24,
                           params: dict | None = None, log: str | Path | None = None,
                           timeout: float = 120) -> dict:
    """Start a server on ``db_url``, let ``clients`` threads enroll (subject ``c<i>``) until ``kill_after``
    enrollments were answered 201, ``kill -9`` it mid-stream, start it again and count the acknowledged face ids
    that are present. Returns ``{"acknowledged", "present", "lost", "seconds_to_kill"}``."""
    from faceembed.serve.process import ServerProcess

    server = ServerProcess(db_url, log=log).start()
    acked: list[tuple[str, str]] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_enroll_until_killed,
                                args=(server.url, key, i, photo, params or {}, acked, stop)) for i in range(clients)]
    t0 = time.monotonic()
    try:
        for t in threads:
            t.start()
        while len(acked) < kill_after and time.monotonic() - t0 < timeout:
            time.sleep(0.02)
        seconds = time.monotonic() - t0
        server.kill()  # SIGKILL while the clients are mid-request
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        server.kill()
    acknowledged = {face_id for _, face_id in acked}
    with ServerProcess(db_url, log=log) as again:
        present = _present(again.url, key, {s for s, _ in acked})
    return {"acknowledged": len(acknowledged), "present": len(acknowledged & present),
            "lost": len(acknowledged - present), "seconds_to_kill": round(seconds, 2)}


def cross_process_latency(db_url: str, key: str, trials: list[tuple[bytes, bytes]], params: dict | None = None,
                          log_folder: str | Path | None = None, limit_s: float = 5.0) -> dict:
    """Two servers on ``db_url``; per trial ``(enroll photo, probe photo)`` of a new subject: enroll through the
    first, then ask the second to recognize the probe until it names the subject (at most ``limit_s``). Returns
    the seconds from the 201 to the first right answer per trial (both servers warmed by one request first), and
    how many were recognized."""
    import httpx

    from faceembed.serve.process import ServerProcess

    logs = Path(log_folder) if log_folder else None
    head = {"x-api-key": key}
    seconds, recognized = [], 0
    with ServerProcess(db_url, log=logs / "a.log" if logs else None) as a, \
            ServerProcess(db_url, log=logs / "b.log" if logs else None) as b:
        for srv in (a, b):  # warm: the first request opens the collection and the detectors' sessions
            httpx.post(f"{srv.url}/v1/recognize", headers=head, params=params, files={"file": trials[0][1]},
                       timeout=60)
        for i, (enroll_photo, probe) in enumerate(trials):
            subject = f"x{i}-{time.time_ns()}"
            r = httpx.post(f"{a.url}/v1/subjects/{subject}/faces", headers=head, params=params,
                           files={"file": enroll_photo}, timeout=60)
            r.raise_for_status()
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < limit_s:
                faces = httpx.post(f"{b.url}/v1/recognize", headers=head, params=params, files={"file": probe},
                                   timeout=60).json()["faces"]
                if faces and faces[0]["subject"] == subject:
                    recognized += 1
                    seconds.append(round(time.perf_counter() - t0, 4))
                    break
    return {"trials": len(trials), "recognized": recognized, "seconds": seconds,
            "max_seconds": max(seconds) if seconds else None}
