"""``faceembed bench`` on one small model for a few iterations: report structure and sanity only
(no timing thresholds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from faceembed.bench.run import best_rows, speedups


def test_bench_mnist_report_structure(tmp_path):
    env = {**os.environ, "FACEEMBED_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "faceembed", "bench", "--models", "mnist", "--batch", "1,4",
                           "--min-seconds", "0.02", "--threads", "1", "--work-dir", "w", "--json", "b.json",
                           "--plot", "b.png", "--no-progress", "--no-data-path"],
                          cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "b.json").read_text())
    assert set(report["peak_gflops"]) == {"fp32", "bf16"} and report["peak_gflops"]["fp32"] > 0
    assert report["threads"] == 1
    keys = {"model", "backend", "precision", "batch", "config", "ms_per_batch_median", "ms_per_batch_p90",
            "images_per_s", "gflop_per_image", "fraction_of_peak", "accuracy_ok", "peer_default"}
    rows = report["rows"]
    assert rows and all(keys <= set(r) for r in rows)
    assert {r["backend"] for r in rows} >= {"torch", "ort", "openvino"}
    assert sum(r["peer_default"] for r in rows) == 3 * 2, "three peer defaults at two batch sizes"
    for r in rows:
        assert r["ms_per_batch_p90"] >= r["ms_per_batch_median"] > 0
        peak = report["peak_gflops"]["bf16" if r["precision"] in ("bf16", "int8") else "fp32"]
        # a ratio within this run (the peak is the GEMM measured beside the rows), not a bound on the machine
        assert r["gflop_per_image"] > 0 and r["fraction_of_peak"] == pytest.approx(
            r["gflop_per_image"] * r["images_per_s"] / peak)
    fp32_ort = [r for r in rows if r["backend"] == "ort" and r["precision"] == "fp32"]
    assert all(r["accuracy_ok"] for r in fp32_ort), "fp32 ONNX Runtime matches PyTorch"
    best = report["best"]["mnist"]
    assert set(best) == {"1", "4"} and all(rows[i]["accuracy_ok"] for i in best.values())
    assert (tmp_path / "b.png").stat().st_size > 1000
    cache = json.loads((tmp_path / "cache" / "auto_backend.json").read_text())
    assert {c["source"] for c in cache.values()} == {"faceembed bench"}, "bench records --backend auto choices"


def test_best_is_fastest_accurate_row():
    rows = [{"model": "m", "batch": 1, "images_per_s": 10.0, "accuracy_ok": True, "peer_default": True},
            {"model": "m", "batch": 1, "images_per_s": 50.0, "accuracy_ok": False, "peer_default": False},
            {"model": "m", "batch": 1, "images_per_s": 20.0, "accuracy_ok": True, "peer_default": False}]
    assert best_rows(rows) == {"m": {"1": 2}}
    assert speedups(rows, best_rows(rows)) == {"m": {"1": 2.0}}
