"""``faceembed quantize --method nncf``: NNCF int8 (with accuracy control) of a small MNIST classifier calibrated
on real digits; the file's report, and that both int8 backends load and run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nncf")
pytest.importorskip("openvino")

from faceembed.batch.tobin import mnist_tensors  # noqa: E402
from faceembed.export.onnx_export import export_onnx  # noqa: E402
from faceembed.inference.backends import OpenVinoBackend, OrtBackend  # noqa: E402
from faceembed.models import build  # noqa: E402
from faceembed.models.checkpoint import MNIST_INPUT, save_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """A narrow MNIST classifier (random init) exported to fp32 ONNX, and 96 real train digits as .npy."""
    torch.manual_seed(0)
    work = tmp_path_factory.mktemp("nncf")
    config = {"embedding_size": 16, "widths": [8, 16, 16]}
    save_checkpoint(work / "m.pt", "mnist_classifier", config, build("mnist_classifier", **config).eval(),
                    MNIST_INPUT)
    digits = mnist_tensors("train", limit=96)[0]
    export_onnx(work / "m.pt", work / "m.onnx", digits[:8], batches=(1, 8))
    np.save(work / "calib.npy", digits)
    return work / "m.onnx", work / "calib.npy", mnist_tensors("test", limit=16)[0]


def test_quantize_method_nncf(small_mnist, tmp_path):
    model, calib, test_digits = small_mnist
    out = tmp_path / "m.nncf.onnx"
    done = subprocess.run([sys.executable, "-m", "faceembed", "quantize", str(model), "--calibrate", str(calib),
                           "--out", str(out), "--method", "nncf", "--min-cosine", "0.99", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    for key in ("int8_layers", "float_layers", "holdout_min_cosine", "reached", "seconds", "overflow_fix",
                "calibration_images", "holdout_images", "agreement"):
        assert key in report, key
    assert report["method"] == "nncf" and report["accuracy_control"] is True
    assert (report["calibration_images"], report["holdout_images"]) == (72, 24)  # a quarter held out
    assert report["int8_layers"] > 0
    assert len(report["float_layers"]) == report["float_layer_count"]
    assert report["holdout_min_cosine"] >= 0.98
    assert report["overflow_fix"] in ("disable", "first_layer_only")
    for backend in (OrtBackend(out, threads=2, precision="int8"), OpenVinoBackend(out, threads=2, precision="int8")):
        assert backend.precision == "int8"
        outputs = backend.run(test_digits)
        assert [o.shape[0] for o in outputs] == [16, 16]
        assert all(np.isfinite(o).all() for o in outputs)
