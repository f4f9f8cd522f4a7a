"""PFE heads over several seeds, and the same command twice: the spread README reports and the reproducibility
check. Runs ``faceembed train-pfe --backbone B --seed S --out WORK/seed_S`` for each seed (and, with
``--repeat-first``, the first seed again into ``WORK/seed_S_again``), then prints cosine / MLS 10-fold accuracy per
run, their mean and standard deviation, and whether the repeat matched to the last digit.

    python scripts/pfe_seeds.py --backbone runs/mfn.pt --seeds 0,1,2 --repeat-first --work-dir runs/pfe_seeds \
        --json runs/pfe_seeds/mfn.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path


def train(backbone: str, seed: int, out: Path, lfw: str) -> dict:
    """One ``faceembed train-pfe`` run (resumes a finished one); its cosine and MLS accuracy."""
    cmd = [sys.executable, "-m", "faceembed", "train-pfe", "--backbone", backbone, "--lfw", lfw, "--seed", str(seed),
           "--out", str(out), "--no-progress"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    res = json.loads((out / "pfe_results.json").read_text())
    return {"seed": seed, "out": str(out), "cosine": res["cosine"]["accuracy"], "mls": res["mls"]["accuracy"],
            "heads_s": res["timing_s"]["heads"]}


def summary(runs: list[dict]) -> dict:
    """Mean and sample standard deviation of each metric over ``runs``."""
    return {m: {"mean": statistics.mean(r[m] for r in runs), "std": statistics.stdev(r[m] for r in runs)
                if len(runs) > 1 else 0.0} for m in ("cosine", "mls")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", required=True, help="a model name or faceembed checkpoint")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    ap.add_argument("--repeat-first", action="store_true", help="run the first seed twice (reproducibility)")
    ap.add_argument("--lfw", default="../shared/data/lfw")
    ap.add_argument("--work-dir", type=Path, default=Path("runs/pfe_seeds"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    runs = [train(args.backbone, s, args.work_dir / f"seed_{s}", args.lfw) for s in seeds]
    report: dict = {"backbone": args.backbone, "runs": runs, "summary": summary(runs)}
    if args.repeat_first:
        again = train(args.backbone, seeds[0], args.work_dir / f"seed_{seeds[0]}_again", args.lfw)
        same = (again["cosine"], again["mls"]) == (runs[0]["cosine"], runs[0]["mls"])
        report["repeat"] = {**again, "identical": same}
    for r in runs:
        print(f"seed {r['seed']}: cosine {r['cosine']:.4f}  MLS {r['mls']:.4f}")
    for m, s in report["summary"].items():
        print(f"{m}: {s['mean']:.4f} +- {s['std']:.4f} over {len(runs)} seeds")
    if "repeat" in report:
        print(f"seed {seeds[0]} again: cosine {report['repeat']['cosine']:.4f}  MLS {report['repeat']['mls']:.4f}  "
              f"identical: {report['repeat']['identical']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
