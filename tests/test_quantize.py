"""``faceembed quantize``: the two int8 schemes, the float residual paths and the float-layer search, on a
tiny residual CNN with synthetic inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from faceembed.errors import FaceembedError  # noqa: E402
from faceembed.export.qdq_graph import quantized_layers, restore_float  # noqa: E402
from faceembed.export.quantize import quantize_model  # noqa: E402
from faceembed.models.to_onnx import torch_to_onnx  # noqa: E402


class TinyResNet(nn.Module):
    """conv -> PReLU -> one residual unit -> fc: the shape of a SphereFace stage."""

    def __init__(self):
        super().__init__()
        self.stem, self.act = nn.Conv2d(3, 8, 3, 2, 1), nn.PReLU(8)
        self.c1, self.a1 = nn.Conv2d(8, 8, 3, 1, 1), nn.PReLU(8)
        self.c2, self.a2 = nn.Conv2d(8, 8, 3, 1, 1), nn.PReLU(8)
        self.fc = nn.Linear(8 * 8 * 6, 16)

    def forward(self, x):
        x = self.act(self.stem(x))
        x = x + self.a2(self.c2(self.a1(self.c1(x))))
        return self.fc(torch.flatten(x, 1))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, np.ndarray]:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("q") / "tiny.onnx"
    torch_to_onnx(TinyResNet().eval(), torch.randn(1, 3, 16, 12), path, "input", ["embedding"], {0: "batch"}, opset=17)
    x = np.random.default_rng(0).standard_normal((96, 3, 16, 12)).astype(np.float32)
    return path, x


def _adds_read_int8(path: Path) -> bool:
    model = onnx.load(str(path))
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    return any(producer.get(t) == "DequantizeLinear" for n in model.graph.node if n.op_type == "Add" for t in n.input)


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_residual_float_keeps_skip_path_float(tiny, tmp_path):
    path, x = tiny
    report = quantize_model(path, x, tmp_path / "rf.onnx", scheme="residual-float", min_cosine=None)
    model = onnx.load(str(tmp_path / "rf.onnx"))
    assert len(quantized_layers(model)) == 4, "stem, both unit convs and fc read int8"
    assert not _adds_read_int8(tmp_path / "rf.onnx"), "the residual Add reads the float tensor"
    assert {p.key: p.value for p in model.metadata_props}["faceembed.precision"] == "int8"
    assert report["scheme"] == "residual-float" and report["holdout_images"] == 0 and "float_layers" not in report
    cos = report["agreement"]["embedding"]["min_cosine"]
    assert 0.98 < cos < 1.0, "int8, and close to fp32"


def test_full_scheme_quantizes_the_add(tiny, tmp_path):
    path, x = tiny
    quantize_model(path, x, tmp_path / "full.onnx", scheme="full")
    assert _adds_read_int8(tmp_path / "full.onnx")


def test_restore_float_puts_layers_back(tiny, tmp_path):
    path, x = tiny
    quantize_model(path, x, tmp_path / "rf.onnx", min_cosine=None)
    qmodel, fmodel = onnx.load(str(tmp_path / "rf.onnx")), onnx.load(str(path))
    layers = quantized_layers(qmodel)
    one = restore_float(qmodel, fmodel, layers[:1])
    assert quantized_layers(one) == layers[1:]
    assert len(one.graph.node) < len(qmodel.graph.node), "the restored layer's Q/DQ nodes are pruned"
    everything = restore_float(qmodel, fmodel, layers)
    onnx.save(everything, str(tmp_path / "all_float.onnx"))
    got, ref = _run(tmp_path / "all_float.onnx", x[:8]), _run(path, x[:8])
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)  # only the int32 biases remain rounded


def test_search_keeps_layers_float_until_target(tiny, tmp_path):
    path, x = tiny
    loose = quantize_model(path, x, tmp_path / "a.onnx", min_cosine=0.5)
    assert loose["float_layers"] == [] and loose["int8_layers"] == 4 and loose["holdout_images"] == 24
    strict = quantize_model(path, x, tmp_path / "b.onnx", min_cosine=0.999999)
    assert strict["float_layers"], "a near-exact target needs float layers"
    assert strict["int8_layers"] + len(strict["float_layers"]) == 4
    assert strict["search_min_cosine"] >= 0.999999 or strict["int8_layers"] == 0
    assert len(quantized_layers(onnx.load(str(tmp_path / "b.onnx")))) == strict["int8_layers"]


def test_bad_scheme_is_one_error(tiny, tmp_path):
    path, x = tiny
    with pytest.raises(FaceembedError, match="--scheme"):
        quantize_model(path, x, tmp_path / "x.onnx", scheme="fast")
    assert not (tmp_path / "x.onnx").exists()


def test_calibration_of_the_wrong_shape_is_one_error(tiny, tmp_path):
    from faceembed.errors import ShapeMismatchError

    path, _ = tiny
    np.save(tmp_path / "calib.npy", np.zeros((20, 28, 28, 1), np.float32))
    with pytest.raises(ShapeMismatchError, match=r"calib.npy.*items of shape \[28, 28, 1\]"):
        quantize_model(path, tmp_path / "calib.npy", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
