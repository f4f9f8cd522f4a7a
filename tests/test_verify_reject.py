"""``verify --reject``: rejection curves from feature files (uncertainty, random, detector score), end to end on
synthetic PFE features where the noisy faces are the uncertain ones."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from faceembed.batch.verify import verify_files
from faceembed.errors import InputFormatError


def _write(tmp_path, folds: int = 10, per: int = 30, d: int = 16):
    rng = np.random.default_rng(0)
    lines, names, mu, sig, det = [f"{folds}\t{per}"], [], [], [], {}

    def face(name: str, base: np.ndarray, noisy: bool) -> str:
        rel = f"{name}/{name}_0001.jpg" if name not in {n.split("/")[0] for n in names} else f"{name}/{name}_0002.jpg"
        names.append(rel)
        mu.append(base + rng.normal(size=d) * (3.0 if noisy else 0.3))
        sig.append(np.full(d, 5.0 if noisy else 0.1))
        det[rel] = {"score": 0.99 if rng.random() < 0.5 else 0.98}  # uninformative detector scores
        return rel

    for f in range(folds):
        for i in range(per):
            base = rng.normal(size=d)
            face(f"P{f}x{i}", base, False)
            face(f"P{f}x{i}", base, rng.random() < 0.2)
            lines.append(f"P{f}x{i}\t1\t2")
        for i in range(per):
            face(f"Q{f}x{i}", rng.normal(size=d), rng.random() < 0.2)
            face(f"R{f}x{i}", rng.normal(size=d), False)
            lines.append(f"Q{f}x{i}\t1\tR{f}x{i}\t1")
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    np.savez(tmp_path / "f.npz", names=np.array(names), mu=np.array(mu, np.float32), sigma_sq=np.array(sig, np.float32))
    (tmp_path / "det.json").write_text(json.dumps({"faces": det}))


def test_uncertainty_rejection_beats_random_and_detector(tmp_path):
    _write(tmp_path)
    out = verify_files(tmp_path / "pairs.txt", tmp_path / "f.npz", "cosine", reject=[0, 0.1, 0.2],
                       detections=tmp_path / "det.json", reject_plot=tmp_path / "rej.png")
    curves = out["rejection"]["curves"]
    assert set(curves) == {"uncertainty (PFE)", "random", "detector score"}
    unc, rnd, det = (curves[k] for k in ("uncertainty (PFE)", "random", "detector score"))
    assert unc[0]["accuracy"] == pytest.approx(out["accuracy"])  # nothing rejected: the plain 10-fold figure
    assert unc[2]["error"] < rnd[2]["error"] and unc[2]["error"] < det[2]["error"]
    assert unc[1]["kept"] == 600 - 10 * 6  # 10% of each fold's 60 pairs
    assert (tmp_path / "rej.png").stat().st_size > 1000


def test_reject_errors_are_one_line(tmp_path):
    _write(tmp_path, folds=10, per=3)
    with pytest.raises(InputFormatError, match=r"--reject takes fractions in \[0, 1\)"):
        verify_files(tmp_path / "pairs.txt", tmp_path / "f.npz", reject=[1.5])
    (tmp_path / "det.json").write_text("{}")
    with pytest.raises(InputFormatError, match="not a detection summary"):
        verify_files(tmp_path / "pairs.txt", tmp_path / "f.npz", reject=[0.1], detections=tmp_path / "det.json")
    r = subprocess.run([sys.executable, "-m", "faceembed", "verify", "--pairs", str(tmp_path / "pairs.txt"),
                        "--features", str(tmp_path / "f.npz"), "--reject", "0,x"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--reject takes" in r.stderr
