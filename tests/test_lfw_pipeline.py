"""Real data: import -> export -> tobin lfw -> infer -> verify through the CLI, on LFW View 1 (DevTest)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = [pytest.mark.realdata, pytest.mark.slow,
              pytest.mark.skipif(not (SHARED / "lfw" / "pairs.txt").is_file(),
                                 reason="../shared/data not found: real-data test skipped")]


def cli(*args: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "faceembed", *args, ], capture_output=True, text=True, cwd=cwd,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("lfw")


def test_import_export_infer_verify_view1(work):
    lfw = SHARED / "lfw"
    cli("import", str(SHARED / "weights" / "mobilefacenet_casia_112x96.ckpt"), "--out", "mfn.pt", cwd=work)
    out = cli("export", "mfn.pt", "--out", "mfn.onnx", cwd=work)
    assert "parity OK" in out
    cli("tobin", "lfw", "--data", str(lfw), "--pairs", str(lfw / "pairsDevTest.txt"), "--batch-size", "16",
        "--out", "bins", "--no-progress", cwd=work)
    manifest = json.loads((work / "bins" / "manifest.json").read_text())
    assert manifest["item_shape"] == [112, 96, 3] and manifest["count"] > 1500
    summary = json.loads(cli("infer", "--model", "mfn.onnx", "--input", "bins", "--output", "feats",
                             "--no-progress", cwd=work))
    assert summary["images"] == manifest["count"] and summary["files_failed"] == 0
    cli("verify", "--pairs", str(lfw / "pairsDevTest.txt"), "--features", "feats", "--json", "v.json", cwd=work)
    result = json.loads((work / "v.json").read_text())
    assert result["pairs"] == 1000
    # The published checkpoint scores about 0.99 on LFW; View 1 is a sanity bar, not a reported figure.
    assert result["accuracy"] > 0.97 and result["auc"] > 0.99


def test_align_cli_on_a_subset(work):
    lfw = SHARED / "lfw"
    subset = work / "subset"
    subset.mkdir()
    for person in ("Aaron_Eckhart", "Abdullah_Gul", "Zico"):
        (subset / person).symlink_to(lfw / "images" / person)
    out = json.loads(cli("align", "--images", "subset", "--landmarks", str(lfw / "lfw_landmark.txt"),
                         "--out", "aligned", "--no-progress", cwd=work))
    n = sum(1 for p in subset.glob("*/*.jpg"))
    assert out["aligned"] + out["fallback_center_crop"] == n and out["failed"] == 0
    assert (work / "aligned" / "contact_sheet.png").is_file()
    again = json.loads(cli("align", "--images", "subset", "--landmarks", str(lfw / "lfw_landmark.txt"),
                           "--out", "aligned", "--no-progress", cwd=work))
    assert again["skipped"] == n, "a rerun resumes"
