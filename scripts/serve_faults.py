"""Fault runs of ``faceembed serve`` on 127.0.0.1, with real LFW photos (MTCNN detection), JSON out:

* kill -9 of the server while 4 clients enroll, restart, count the enrollments answered 201 that are present:
  on SQLite and on PostgreSQL (a throwaway PostgreSQL 15 server, as the tests start one), ``--rounds`` times each;
* two serve processes on one PostgreSQL: an enrollment through one, recognized by the other: seconds from the
  201 to the other's first right answer (the probe is the enrolled photo), per trial.

    nice -n 5 python scripts/serve_faults.py --out runs/serve_faults.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared" / "data" / "lfw" / "images"


def lfw_photos(lfw: Path, count: int) -> list[bytes]:
    """The first ``count`` LFW photos (people sorted by name, then their photos)."""
    out: list[bytes] = []
    for person in sorted(lfw.iterdir()):
        for f in sorted(person.glob("*.jpg")):
            out.append(f.read_bytes())
            if len(out) == count:
                return out
    return out


def pairs_for_trials(lfw: Path, count: int) -> list[tuple[bytes, bytes]]:
    """(photo, the same photo) of the last ``count`` people (sorted by name): the probe is the enrolled photo, so
    that the time measured is the other server's catching up, not the model's accuracy."""
    people = sorted(lfw.iterdir())[-count:]
    return [((d / f"{d.name}_0001.jpg").read_bytes(),) * 2 for d in people]


def new_collection(db_url: str) -> str:
    from faceembed.faces.collection import Collection

    col, key = Collection.create(db_url, "faults")
    col.close()
    return key


def kill_rounds(db_url: str, photos: list[bytes], rounds: int, kill_after: int, log: Path) -> list[dict]:
    from faceembed.serve.faults import kill_during_enrollment

    key = new_collection(db_url)
    out = []
    for r in range(rounds):
        def photo(client: int, n: int, r=r) -> bytes:
            return photos[(r * 7919 + client * 1009 + n) % len(photos)]

        out.append(kill_during_enrollment(db_url, key, photo, clients=4, kill_after=kill_after, log=log))
        print(f"{db_url.split(':')[0]} round {r + 1}: {out[-1]}", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lfw", type=Path, default=LFW, help="LFW images folder (default ../shared/data/lfw/images).")
    ap.add_argument("--rounds", type=int, default=3, help="kill -9 rounds per backend; default 3.")
    ap.add_argument("--kill-after", type=int, default=40, help="Kill once this many enrollments were answered 201.")
    ap.add_argument("--trials", type=int, default=10, help="Cross-process trials on PostgreSQL; default 10.")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "serve_faults", help="Scratch folder (recreated).")
    ap.add_argument("--out", type=Path, default=None, help="Write the JSON result here too.")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "tests"))
    from faceembed.serve.faults import cross_process_latency
    from pg_server import PostgresServer, missing_reason

    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    photos = lfw_photos(args.lfw, 300)
    result: dict = {"photos": len(photos), "clients": 4}
    result["sqlite"] = kill_rounds(f"sqlite:///{args.work / 'faults.db'}", photos, args.rounds, args.kill_after,
                                   args.work / "sqlite.log")
    why = missing_reason()
    if why:
        result["postgresql"] = f"skipped: {why}"
    else:
        with PostgresServer() as pg:
            result["postgresql"] = kill_rounds(pg.url, photos, args.rounds, args.kill_after, args.work / "pg.log")
            db = pg.fresh_database("twoservers")
            result["two_servers_postgresql"] = cross_process_latency(db, new_collection(db),
                                                                     pairs_for_trials(args.lfw, args.trials),
                                                                     log_folder=args.work)
    result["lost_total"] = sum(r["lost"] for k in ("sqlite", "postgresql") if isinstance(result[k], list)
                               for r in result[k])
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
