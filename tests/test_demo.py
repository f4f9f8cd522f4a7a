"""End to end: ``faceembed demo mnist --quick`` through the CLI on the repository's MNIST files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_mnist_quick(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "faceembed", "demo", "mnist", "--quick", "--out", "run",
                           "--json", "r.json", "--no-progress"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["test_images"] == 10000
    assert set(r["accuracy"]) == {"pytorch", "onnx_fp32", "onnx_fp16"} == set(r["accuracy_5120"])
    assert r["accuracy"]["pytorch"] >= 0.98
    assert abs(r["accuracy"]["onnx_fp32"] - r["accuracy"]["pytorch"]) <= 0.0005
    assert abs(r["accuracy"]["onnx_fp16"] - r["accuracy"]["onnx_fp32"]) <= 0.001
    assert set(r["latency_ms_per_image"]["onnx_fp32"]) == {"1", "4", "8", "16", "32"}
    assert all(v > 0 for v in r["latency_ms_per_image"]["onnx_fp16"].values())
    assert r["train_seconds"] > 0
    # rerunning resumes: nothing is retrained, results are the same
    again = subprocess.run([sys.executable, "-m", "faceembed", "demo", "mnist", "--quick", "--out", "run",
                            "--json", "r2.json", "--no-progress"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "r2.json").read_text())["accuracy"] == r["accuracy"]
