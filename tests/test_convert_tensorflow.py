"""TensorFlow frozen graphs and SavedModels -> ONNX with a model card (``faceembed.convert.tensorflow``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
tf = pytest.importorskip("tensorflow", reason="tensorflow not installed: pip install -e '.[tensorflow]'")
pytest.importorskip("tf2onnx", reason="tf2onnx not installed: pip install -e '.[tensorflow]'")

from faceembed.convert.tensorflow import import_tensorflow, parse_tf_outputs  # noqa: E402
from faceembed.data.mnist import default_mnist_root, load_mnist  # noqa: E402
from faceembed.errors import InputFormatError, MissingInputError, ParityError  # noqa: E402
from faceembed.models.card_io import read_card  # noqa: E402
from faceembed.models.checkpoint import MNIST_INPUT  # noqa: E402

N_DIGITS = 64


def _have_mnist() -> bool:
    try:
        load_mnist(default_mnist_root(), "test")
    except Exception:
        return False
    return True


needs_mnist = pytest.mark.skipif(not _have_mnist(), reason="MNIST test files not found (data/mnist or "
                                 "$FACEEMBED_MNIST): real-data test skipped")


class SmallConvNet(tf.Module):
    """conv 3x3 (8) - ReLU - max-pool 2 - conv 3x3 (16) - ReLU - flatten - dense 10, random weights."""

    def __init__(self, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)

        def var(*shape: int, std: float) -> tf.Variable:
            return tf.Variable(rng.normal(0.0, std, shape).astype(np.float32))

        self.w1, self.b1 = var(3, 3, 1, 8, std=0.3), var(8, std=0.1)
        self.w2, self.b2 = var(3, 3, 8, 16, std=0.15), var(16, std=0.1)
        self.w3, self.b3 = var(14 * 14 * 16, 10, std=0.02), var(10, std=0.1)

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32, name="input_x")])
    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        y = tf.nn.relu(tf.nn.conv2d(x, self.w1, 1, "SAME") + self.b1)
        y = tf.nn.max_pool2d(y, 2, 2, "VALID")
        y = tf.nn.relu(tf.nn.conv2d(y, self.w2, 1, "SAME") + self.b2)
        y = tf.matmul(tf.reshape(y, [-1, 14 * 14 * 16]), self.w3) + self.b3
        return tf.identity(y, name="output")


@pytest.fixture(scope="module")
def net() -> SmallConvNet:
    return SmallConvNet()


@pytest.fixture(scope="module")
def frozen_pb(net: SmallConvNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The network frozen (variables -> constants) into a GraphDef file, as the reference's .pb models."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(net.__call__.get_concrete_function())
    graph_def = frozen.graph.as_graph_def()
    assert {n.name for n in graph_def.node} >= {"input_x", "output"}
    path = tmp_path_factory.mktemp("tf") / "mnist_net.pb"
    path.write_bytes(graph_def.SerializeToString())
    return path


def _digits() -> np.ndarray:
    """64 MNIST test digits scaled as faceembed's MNIST input (``(pixel - 0) / 255``), NHWC float32."""
    images = load_mnist(default_mnist_root(), "test")[0][:N_DIGITS]
    return ((images.astype(np.float32) - MNIST_INPUT.mean) / MNIST_INPUT.scale)[..., None]


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_x"] and [o.name for o in sess.get_outputs()] == ["output"]
    return sess.run(["output"], {"input_x": x})[0]


@needs_mnist
def test_frozen_graph_matches_tensorflow_on_mnist(net: SmallConvNet, frozen_pb: Path, tmp_path: Path) -> None:
    dst = tmp_path / "mnist_net.onnx"
    card = import_tensorflow(frozen_pb, dst, inputs=[("input_x", [-1, 28, 28, 1])],
                             outputs=parse_tf_outputs("output:0"), mean=[0.0], std=[255.0])
    assert (card.input_name, card.layout, card.height, card.width, card.color) == ("input_x", "NHWC", 28, 28, "GRAY")
    assert (card.mean, card.std, card.template, card.batch, card.embedding_size) == ((0.0,), (255.0,), "none",
                                                                                     None, 10)
    assert card.source == "mnist_net.pb" and read_card(dst) == card
    x = _digits()
    want = net(tf.constant(x)).numpy()
    got = _ort(dst, x)
    assert got.shape == (N_DIGITS, 10)
    assert float(np.abs(got - want).max()) <= 1e-5
    assert float(np.abs(want).max()) > 0.1  # a real signal, not all zeros


@needs_mnist
def test_saved_model_folder(net: SmallConvNet, tmp_path: Path) -> None:
    folder = tmp_path / "saved"
    tf.saved_model.save(net, str(folder), signatures=net.__call__)
    dst = tmp_path / "from_saved.onnx"
    card = import_tensorflow(folder, dst, inputs=[("input_x", [-1, 28, 28, 1])], outputs=[], mean=[0.0],
                             std=[255.0])
    assert card.input_name == "input_x" and card.embedding_size == 10
    import onnxruntime as ort

    sess = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    x = _digits()
    got = sess.run(None, {"input_x": x})[0]
    assert float(np.abs(got - net(tf.constant(x)).numpy()).max()) <= 1e-5


def test_parity_failure_raises_and_writes_nothing(frozen_pb: Path, tmp_path: Path) -> None:
    dst = tmp_path / "never.onnx"
    x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32) * 100.0  # large inputs, tiny tolerance
    with pytest.raises(ParityError, match="disagrees with TensorFlow"):
        import_tensorflow(frozen_pb, dst, inputs=[("input_x", [-1, 28, 28, 1])], outputs=["output:0"],
                          mean=[0.0], std=[255.0], parity_inputs=x, atol=0.0)
    assert not dst.exists() and list(tmp_path.iterdir()) == []


def test_bad_names_and_files_one_line(frozen_pb: Path, tmp_path: Path) -> None:
    kw = {"mean": [0.0], "std": [255.0], "parity_inputs": np.zeros((2, 28, 28, 1), np.float32)}
    with pytest.raises(InputFormatError, match="--inputs: no node 'images'.*placeholders: input_x") as exc:
        import_tensorflow(frozen_pb, tmp_path / "a.onnx", inputs=[("images", [-1, 28, 28, 1])], outputs=["output"],
                          **kw)
    assert "\n" not in str(exc.value)
    with pytest.raises(InputFormatError, match="--outputs: no node 'logits'"):
        import_tensorflow(frozen_pb, tmp_path / "a.onnx", inputs=[("input_x", [-1, 28, 28, 1])],
                          outputs=["logits:0"], **kw)
    junk = tmp_path / "junk.pb"
    junk.write_bytes(b"\xff\xfenot a graph")
    with pytest.raises(InputFormatError, match="not a frozen TensorFlow graph"):
        import_tensorflow(junk, tmp_path / "a.onnx", inputs=[("input_x", [-1, 28, 28, 1])], outputs=["output"], **kw)
    with pytest.raises(MissingInputError):
        import_tensorflow(tmp_path / "absent.pb", tmp_path / "a.onnx", inputs=[("input_x", [-1, 28, 28, 1])],
                          outputs=["output"], **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.pb"]


@pytest.mark.realdata
def test_nchw_colour_graph_checked_on_real_faces(tmp_path: Path) -> None:
    from faceembed.export.parity_inputs import lfw_root

    if lfw_root() is None:
        pytest.skip("../shared/data/lfw not found: real-data test skipped")
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    w = tf.constant(np.random.default_rng(1).normal(0.0, 0.1, (3, 3, 3, 8)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 3, 112, 96], tf.float32, name="data")])
    def face_net(x: tf.Tensor) -> tf.Tensor:
        y = tf.nn.conv2d(tf.transpose(x, [0, 2, 3, 1]), w, 2, "SAME")
        return tf.identity(tf.reduce_mean(tf.nn.relu(y), axis=[1, 2]), name="fc1")

    graph_def = convert_variables_to_constants_v2(face_net.get_concrete_function()).graph.as_graph_def()
    (tmp_path / "face.pb").write_bytes(graph_def.SerializeToString())
    card = import_tensorflow(tmp_path / "face.pb", tmp_path / "face.onnx", inputs=[("data", [-1, 3, 112, 96])],
                             outputs=["fc1:0"], color="BGR", mean="127.5", std="128", template="sphereface")
    assert (card.layout, card.color, card.template, card.embedding_size) == ("NCHW", "BGR", "sphereface", 8)
    assert read_card(tmp_path / "face.onnx") == card
