"""Kill ``infer`` mid-run (SIGKILL), rerun it, and get outputs bit-identical to an uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from faceembed import models
from faceembed.data.tensorfiles import write_bin, write_manifest
from faceembed.export.onnx_export import export_onnx
from faceembed.models.checkpoint import save_checkpoint
from test_runtime import SPEC, TinyNet

N_FILES = 240


@pytest.fixture
def tiny_onnx(tmp_path, monkeypatch):
    monkeypatch.setitem(models.MODELS, "tiny_test", "test_runtime:TinyNet")
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "tiny.pt", "tiny_test", {"width": 4}, TinyNet(4), SPEC)
    x = np.random.default_rng(1).standard_normal((32, 8, 6, 3)).astype(np.float32)
    export_onnx(tmp_path / "tiny.pt", tmp_path / "tiny.onnx", x)
    return tmp_path / "tiny.onnx"


def _inputs(folder):
    rng = np.random.default_rng(2)
    files = []
    for i in range(N_FILES):
        write_bin(folder / f"{i}_image.bin", rng.standard_normal((4, 8, 6, 3)).astype(np.float32))
        files.append({"name": f"{i}_image.bin", "count": 4})
    write_manifest(folder, {"dtype": "float32", "item_shape": [8, 6, 3], "files": files})


def _cmd(model, inp, out):
    return [sys.executable, "-m", "faceembed", "infer", "--model", str(model), "--input", str(inp),
            "--output", str(out), "--loop", "40", "--threads", "1", "--no-progress"]


def _outputs(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("[!.]*_output_*.bin"))}


def test_killed_infer_resumes_to_identical_outputs(tiny_onnx, tmp_path):
    _inputs(tmp_path / "in")
    subprocess.run(_cmd(tiny_onnx, tmp_path / "in", tmp_path / "ref"), check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(_cmd(tiny_onnx, tmp_path / "in", tmp_path / "out"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((tmp_path / "out").glob("*_output_0.bin"))) < 20:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = len(list((tmp_path / "out").glob("*_output_0.bin")))
    assert 0 < done_before < N_FILES, "the kill must land mid-run"
    rerun = subprocess.run(_cmd(tiny_onnx, tmp_path / "in", tmp_path / "out"), check=True, capture_output=True,
                           text=True, timeout=300)
    assert '"files_skipped"' in rerun.stdout
    assert _outputs(tmp_path / "out") == _outputs(tmp_path / "ref")
    assert not list((tmp_path / "out").glob(".*tmp*")), "the rerun sweeps the killed writer's temp file"
    assert len(_outputs(tmp_path / "out")) == 2 * N_FILES
