"""``faceembed bench`` on one small model for a few iterations: report structure and sanity only
(no timing thresholds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from faceembed.bench.accuracy import TASK_GATE, accuracy_gates, compare_to_fp32, tar_at_far_all_pairs
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
    for r in rows:  # both gates on every row; MNIST without a trained checkpoint has no task figures
        assert r["min_cosine_gate"] in ("pass", "fail") and r["task_gate"] == "n/a"
        assert r["accuracy_ok"] == (r["accurate_by"] == "min_cosine") == (r["min_cosine_gate"] == "pass")
    assert (tmp_path / "b.png").stat().st_size > 1000
    cache = json.loads((tmp_path / "cache" / "auto_backend.json").read_text())
    assert {c["source"] for c in cache.values()} == {"faceembed bench"}, "bench records --backend auto choices"


def test_best_is_fastest_accurate_row():
    rows = [{"model": "m", "batch": 1, "images_per_s": 10.0, "accuracy_ok": True, "peer_default": True},
            {"model": "m", "batch": 1, "images_per_s": 50.0, "accuracy_ok": False, "peer_default": False},
            {"model": "m", "batch": 1, "images_per_s": 20.0, "accuracy_ok": True, "peer_default": False}]
    assert best_rows(rows) == {"m": {"1": 2}}
    assert speedups(rows, best_rows(rows)) == {"m": {"1": 2.0}}


def _task(delta: float, tar_delta: float | None, loss_limit: float = 0.003) -> dict:
    """compare_to_fp32's output for synthetic accuracies / TARs (fp32: 0.99 and 0.95)."""
    result = {"task": "LFW 10-fold cosine, single features", "accuracy": 0.99 + delta, "outputs": [np.zeros(1)]}
    reference = {"task": result["task"], "accuracy": 0.99, "outputs": [np.zeros(1)]}
    if tar_delta is not None:
        result["tar_at_far"] = {"far_target": 1e-3, "tar": 0.95 + tar_delta}
        reference["tar_at_far"] = {"far_target": 1e-3, "tar": 0.95}
    task = compare_to_fp32(result, reference, "int8")
    assert task["limit"] == loss_limit and task["delta"] == pytest.approx(delta)
    return task


@pytest.mark.parametrize("cos_ok,delta,tar_delta,precision,want", [
    (True, 0.0, 0.0, "int8", ("pass", "pass", "min_cosine+task")),
    (False, -0.0005, 0.004, "int8", ("fail", "pass", "task")),  # the task gate accepts what min-cosine rejects
    (False, 6 / 6000, -0.005, "int8", ("fail", "pass", "task")),  # exactly at both tolerances
    (False, -7 / 6000, 0.0, "int8", ("fail", "fail", None)),  # accuracy moved by more than 0.001
    (False, 0.0, -0.0051, "int8", ("fail", "fail", None)),  # TAR fell by more than 0.005
    (False, 0.0, 0.0051, "bf16", ("fail", "fail", None)),  # ... or rose: "unchanged" either way
    (True, -0.002, 0.0, "int8", ("pass", "fail", "min_cosine")),  # within int8's loss limit: min-cosine accepts
    (True, -0.004, 0.0, "int8", ("pass", "fail", None)),  # beyond int8's loss limit: neither
    (False, 0.0, 0.0, "fp32", ("fail", "n/a", None)),  # fp32 has no task gate: a cosine failure is a bug
    (False, 0.0, None, "int8", ("fail", "n/a", None)),  # no TAR (MNIST): no task gate
])
def test_accuracy_gates(cos_ok, delta, tar_delta, precision, want):
    task = _task(delta, tar_delta)
    g = accuracy_gates(cos_ok, task, precision)
    assert (g["min_cosine_gate"], g["task_gate"], g["accurate_by"]) == want
    assert g["accuracy_ok"] == (want[2] is not None)
    assert accuracy_gates(True, None, "int8") == {"min_cosine_gate": "pass", "task_gate": "n/a",
                                                  "accuracy_ok": True, "accurate_by": "min_cosine"}
    assert TASK_GATE == {"accuracy": 0.001, "tar_at_far": 0.005}


@pytest.mark.parametrize("far", [1e-2, 1e-3])
def test_tar_at_far_all_pairs_matches_a_direct_float64_count(far):
    rng = np.random.default_rng(7)
    people = [f"p{i % 60}" for i in range(420)]
    centers = rng.standard_normal((60, 16))
    emb = (centers[[int(p[1:]) for p in people]] + 1.1 * rng.standard_normal((420, 16))).astype(np.float32)
    got = tar_at_far_all_pairs(emb, people, far)
    e = emb.astype(np.float64) / np.linalg.norm(emb.astype(np.float64), axis=1, keepdims=True)
    same_, imp = [], []
    for i in range(len(e)):  # every pair i < j, one at a time
        for j in range(i + 1, len(e)):
            (same_ if people[i] == people[j] else imp).append(float(e[i] @ e[j]))
    imp_desc = np.sort(imp)[::-1]
    allowed = int(np.floor(far * len(imp)))  # impostor pairs that may be accepted
    tar = float(np.mean(np.asarray(same_) > imp_desc[allowed]))  # accept above the first impostor kept out
    assert (got["genuine_pairs"], got["impostor_pairs"]) == (len(same_), len(imp))
    assert got["tar"] == pytest.approx(tar, abs=1e-12) and 0 < got["tar"] < 1
    assert got["far"] <= far and got["far"] == pytest.approx(allowed / len(imp), abs=1e-12)
