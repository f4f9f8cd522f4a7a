"""Backends, export parity and infer over files, on a tiny synthetic network (unit level)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from faceembed import models
from faceembed.batch.infer import infer_files
from faceembed.data.tensorfiles import read_bin, write_bin, write_manifest
from faceembed.errors import NonFiniteError, ParityError, ShapeMismatchError
from faceembed.export.onnx_export import export_onnx
from faceembed.inference.backends import load_backend, onnx_info
from faceembed.models.checkpoint import InputSpec, save_checkpoint

SPEC = InputSpec(8, 6, 3, mean=127.5, scale=128.0, input_name="input", output_names=("embedding", "score"))


class TinyNet(nn.Module):
    """A two-output conv net standing in for a face model."""

    output_names = ("embedding", "score")

    def __init__(self, width: int = 4, poison: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.act = nn.PReLU(width)
        self.fc = nn.Linear(width * 8 * 6, 5)
        self.poison = poison

    def forward(self, x):
        e = self.fc(self.act(self.conv(x)).flatten(1))
        if self.poison:
            e = e / 0.0 * 0.0  # NaN everywhere
        return e, e.sum(dim=1, keepdim=True)


@pytest.fixture
def tiny_ckpt(tmp_path, monkeypatch):
    monkeypatch.setitem(models.MODELS, "tiny_test", f"{__name__}:TinyNet")

    def make(poison: bool = False):
        torch.manual_seed(0)
        path = tmp_path / f"tiny{int(poison)}.pt"
        save_checkpoint(path, "tiny_test", {"width": 4, "poison": poison}, TinyNet(4, poison), SPEC)
        return path

    return make


def _inputs(n: int = 32) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 8, 6, 3)).astype(np.float32)


def test_export_parity_and_metadata(tiny_ckpt, tmp_path):
    onnx_path = tmp_path / "tiny.onnx"
    report = export_onnx(tiny_ckpt(), onnx_path, _inputs())
    assert report.ok and report.batches == [1, 4, 8, 16, 32]
    assert max(report.max_abs_diff.values()) < 1e-5
    info = onnx_info(onnx_path)
    assert info.input_name == "input" and info.item_shape == (8, 6, 3)
    assert info.output_names == ["embedding", "score"] and info.precision == "fp32"


def test_export_fp16_keeps_float32_io(tiny_ckpt, tmp_path):
    path = tmp_path / "tiny16.onnx"
    report = export_onnx(tiny_ckpt(), path, _inputs(), fp16=True)
    assert report.precision == "fp16" and report.ok
    be = load_backend(path, "ort")
    assert be.precision == "fp16"
    out = be.run(_inputs(4))
    assert out[0].dtype == np.float32 and out[0].shape == (4, 5)


def test_parity_failure_leaves_no_file(tiny_ckpt, tmp_path, monkeypatch):
    import faceembed.export.onnx_export as ex

    monkeypatch.setitem(ex.ABS_TOL, "fp32", -1.0)
    path = tmp_path / "bad.onnx"
    with pytest.raises(ParityError):
        export_onnx(tiny_ckpt(), path, _inputs())
    assert not path.exists() and not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("backend", ["ort", "openvino", "torch"])
def test_backends_agree(tiny_ckpt, tmp_path, backend):
    ckpt = tiny_ckpt()
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(ckpt, onnx_path, _inputs())
    ref = load_backend(ckpt, "torch").run(_inputs(8))
    be = load_backend(ckpt if backend == "torch" else onnx_path, backend, threads=1)
    assert be.precision == "fp32"
    for a, b in zip(be.run(_inputs(8)), ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_shape_mismatch_is_caught_before_running(tiny_ckpt, tmp_path):
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(tiny_ckpt(), onnx_path, _inputs())
    be = load_backend(onnx_path, "ort")
    with pytest.raises(ShapeMismatchError, match=r"\[8, 6, 3\]"):
        be.run(np.zeros((2, 6, 8, 3), np.float32))


def _bin_folder(folder, n_files=3, per_file=4):
    x = _inputs(n_files * per_file)
    files = []
    for i in range(n_files):
        write_bin(folder / f"{i}_image.bin", x[i * per_file:(i + 1) * per_file])
        files.append({"name": f"{i}_image.bin", "count": per_file})
    write_manifest(folder, {"dtype": "float32", "item_shape": [8, 6, 3], "files": files})
    return x


@pytest.mark.parametrize("outfmt", ["BIN", "TXT", "NPY"])
def test_infer_writes_one_file_per_output(tiny_ckpt, tmp_path, outfmt):
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(tiny_ckpt(), onnx_path, _inputs())
    x = _bin_folder(tmp_path / "in")
    summary = infer_files(onnx_path, tmp_path / "in", tmp_path / "out", outfmt=outfmt, progress=False)
    assert summary.files_done == 3 and summary.images == 12
    assert set(summary.latency_ms_per_batch) >= {"mean", "median", "p90", "p99"}
    ext = outfmt.lower()
    names = sorted(p.name for p in (tmp_path / "out").glob(f"*.{ext}"))
    assert names == sorted(f"{i}_image_output_{k}.{ext}" for i in range(3) for k in range(2))
    if outfmt == "BIN":
        got = read_bin(tmp_path / "out" / "1_image_output_0.bin", "float32", (5,))
        ref = load_backend(onnx_path).run(x[4:8])[0]
        np.testing.assert_array_equal(got, ref)
    meta = json.loads((tmp_path / "out" / "outputs.json").read_text())
    assert [o["name"] for o in meta["outputs"]] == ["embedding", "score"]


def test_infer_resumes_and_skips_done(tiny_ckpt, tmp_path):
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(tiny_ckpt(), onnx_path, _inputs())
    _bin_folder(tmp_path / "in")
    infer_files(onnx_path, tmp_path / "in", tmp_path / "out", progress=False)
    first = (tmp_path / "out" / "2_image_output_0.bin").read_bytes()
    (tmp_path / "out" / "2_image_output_0.bin").unlink()
    summary = infer_files(onnx_path, tmp_path / "in", tmp_path / "out", progress=False)
    assert (summary.files_done, summary.files_skipped) == (1, 2)
    assert (tmp_path / "out" / "2_image_output_0.bin").read_bytes() == first


def test_infer_bad_file_stop_or_skip(tiny_ckpt, tmp_path):
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(tiny_ckpt(), onnx_path, _inputs())
    _bin_folder(tmp_path / "in")
    (tmp_path / "in" / "1_image.bin").write_bytes(b"\0" * 10)
    with pytest.raises(ShapeMismatchError):
        infer_files(onnx_path, tmp_path / "in", tmp_path / "out", progress=False)
    summary = infer_files(onnx_path, tmp_path / "in", tmp_path / "out2", on_error="skip", progress=False)
    assert (summary.files_done, summary.files_failed) == (2, 1)
    assert "1_image.bin" in (tmp_path / "out2" / "skipped.txt").read_text()
    assert not list((tmp_path / "out2").glob("1_image_output_*"))


def test_nan_outputs_are_refused(tiny_ckpt, tmp_path):
    _bin_folder(tmp_path / "in", n_files=1)
    with pytest.raises(NonFiniteError, match="NaN"):
        infer_files(tiny_ckpt(poison=True), tmp_path / "in", tmp_path / "out", backend="torch", progress=False)
