"""Rank-1 identification over HTTP: one photo per person enrolled through ``POST /v1/subjects/{name}/faces``,
every other photo of those people recognized through ``POST /v1/recognize`` (a real ``faceembed serve`` on
127.0.0.1, MTCNN, the default model), rank-1 = the first match is the right person.

People: ``--people heldout`` (default): the LFW people with at least two photos who are not in pairs.txt (View 2,
whose images calibrated the model's thresholds); ``--people multi``: every LFW person with at least
two photos (the usual LFW closed-set protocol; these people are in pairs.txt). No face database other than LFW is
installable here (see README), so both sets are LFW.

    nice -n 5 python scripts/serve_rank1.py --people heldout --out runs/serve_rank1_heldout.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared" / "data" / "lfw"


def pair_people(lfw: Path) -> set[str]:
    """Everyone named in LFW's pairs.txt (View 2)."""
    used: set[str] = set()
    for name in ("pairs.txt",):
        for line in (lfw / name).read_text().splitlines()[1:]:
            parts = line.split()
            used |= {parts[0]} if len(parts) == 3 else {parts[0], parts[2]} if len(parts) == 4 else set()
    return used


def select_people(lfw: Path, which: str) -> dict[str, list[Path]]:
    people = {d.name: sorted(d.glob("*.jpg")) for d in sorted((lfw / "images").iterdir())}
    people = {n: p for n, p in people.items() if len(p) >= 2}
    if which == "heldout":
        used = pair_people(lfw)
        people = {n: p for n, p in people.items() if n not in used}
    return people


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lfw", type=Path, default=LFW, help="LFW folder (images/, pairs files); ../shared/data/lfw.")
    ap.add_argument("--people", choices=("heldout", "multi"), default="heldout", help="Which people (see above).")
    ap.add_argument("--clients", type=int, default=8, help="Concurrent HTTP clients; default 8.")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "serve_rank1", help="Scratch folder (recreated).")
    ap.add_argument("--out", type=Path, default=None, help="Write the JSON result here too.")
    args = ap.parse_args()

    import httpx

    from faceembed.faces.collection import Collection
    from faceembed.serve.process import ServerProcess

    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    db = f"sqlite:///{args.work / 'rank1.db'}"
    col, key = Collection.create(db, "rank1")
    col.close()
    people = select_people(args.lfw, args.people)
    local = threading.local()

    def http() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=srv.url, headers={"x-api-key": key}, timeout=120)
        return local.client

    def enroll(item: tuple[str, list[Path]]) -> tuple[str, Path | None]:
        name, photos = item
        for p in photos:  # the first photo with a face is the enrolled one
            r = http().post(f"/v1/subjects/{quote(name, safe='')}/faces", files={"file": p.read_bytes()})
            if r.status_code == 201:
                return name, p
        return name, None

    def recognize(probe: tuple[str, Path]) -> dict:
        name, p = probe
        r = http().post("/v1/recognize", files={"file": p.read_bytes()}, params={"limit": 1})
        faces = r.json().get("faces", []) if r.status_code == 200 else []
        top = faces[0]["matches"][0]["subject"] if faces and faces[0]["matches"] else None
        return {"truth": name, "status": r.status_code, "face": bool(faces), "top": top,
                "subject": faces[0]["subject"] if faces else None}

    with ServerProcess(db, log=args.work / "serve.log") as srv, ThreadPoolExecutor(args.clients) as pool:
        enrolled = dict(pool.map(enroll, people.items()))
        probes = [(n, p) for n, photos in people.items() if enrolled[n] is not None
                  for p in photos if p != enrolled[n]]
        got = list(pool.map(recognize, probes))
    right = sum(g["top"] == g["truth"] for g in got)
    result = {"people_set": args.people, "people": len(people),
              "enrolled": sum(v is not None for v in enrolled.values()),
              "probes": len(got), "errors": sum(g["status"] != 200 for g in got),
              "no_face": sum(not g["face"] for g in got), "rank1": round(right / len(got), 4) if got else None,
              "rank1_right": right, "named_right_at_threshold": sum(g["subject"] == g["truth"] for g in got),
              "named_wrong_at_threshold": sum(g["subject"] not in (None, g["truth"]) for g in got),
              "misses": [g for g in got if g["top"] != g["truth"]][:20]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
