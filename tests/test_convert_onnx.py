"""``import_onnx``: cards read from foreign graphs plus flags, dynamic batch rewrites, one-line flag errors, the
command-line parsers; and, on the real MobileFaceNet weights, an insightface-style NCHW BGR export whose
imported model gives the native model's embeddings on real LFW faces through ``preprocess``."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from faceembed.convert.onnx_model import import_onnx, parse_floats, parse_inputs, parse_outputs, parse_size
from faceembed.data.preprocess import preprocess
from faceembed.errors import InputFormatError
from faceembed.models.card import ROLES
from faceembed.models.card_io import card_from_onnx, read_card

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
MFN_CKPT = DATA / "weights" / "mobilefacenet_casia_112x96.ckpt"
LFW = DATA / "lfw"
FLAGS = dict(color="RGB", mean="127.5", std="128", template="sphereface")


# ---- small synthetic graphs ------------------------------------------------------------------------------

def conv_model(shape: list, nhwc: bool = False, tail: str = "flatten", outputs: int = 1,
               channels: int = 3) -> onnx.ModelProto:
    """x -> [Transpose] -> Conv 3->4 -> tail -> emb [N, 4] (+ a second output ``aux``).

    ``tail``: ``flatten`` (GlobalAveragePool + Flatten: batch-agnostic), ``reshape_1`` (Reshape to the constant
    [1, -1]: runs at batch 2 but mixes rows), ``reshape_14`` (Reshape to [1, 4]: refuses batch 2).
    """
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, channels, 3, 3)).astype(np.float32), "w")]
    nodes = []
    src = "x"
    if nhwc:
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]))
        src = "xt"
    nodes += [helper.make_node("Conv", [src, "w"], ["c"], pads=[1, 1, 1, 1]),
              helper.make_node("GlobalAveragePool", ["c"], ["p"])]
    if tail == "flatten":
        nodes.append(helper.make_node("Flatten", ["p"], ["emb"], axis=1))
    else:
        target = [1, -1] if tail == "reshape_1" else [1, 4]
        inits.append(numpy_helper.from_array(np.array(target, np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["p", "shape"], ["emb"]))
    outs = [helper.make_tensor_value_info("emb", TensorProto.FLOAT, [shape[0], 4])]
    if outputs == 2:
        nodes.append(helper.make_node("Relu", ["emb"], ["aux"]))
        outs.append(helper.make_tensor_value_info("aux", TensorProto.FLOAT, [shape[0], 4]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], outs,
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def ort_run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def test_import_fixed_nchw_becomes_dynamic(tmp_path) -> None:
    src = save(conv_model([1, 3, 8, 6]), tmp_path / "m.onnx")
    before = src.read_bytes()
    card = import_onnx(src, tmp_path / "out.onnx", **FLAGS)
    assert (card.layout, card.height, card.width, card.batch, card.embedding_size) == ("NCHW", 8, 6, None, 4)
    assert card.input_name == "x" and card.embedding_output == "emb" and card.mean == (127.5,)
    assert (card.name, card.source, card.similarity) == ("m", "m.onnx", "cosine")
    assert src.read_bytes() == before
    assert read_card(tmp_path / "out.onnx") == card == card_from_onnx(tmp_path / "out.onnx")
    x = np.random.default_rng(3).normal(size=(5, 3, 8, 6)).astype(np.float32)
    batched = ort_run(tmp_path / "out.onnx", x)[0]
    singles = np.concatenate([ort_run(src, x[i:i + 1])[0] for i in range(5)])
    np.testing.assert_allclose(batched, singles, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("declared", [1, "N"], ids=["fixed", "declared-dynamic"])
@pytest.mark.parametrize("tail", ["reshape_1", "reshape_14"])
def test_import_keeps_a_batch_the_graph_fixes(tmp_path, tail: str, declared, caplog) -> None:
    src = save(conv_model([declared, 3, 8, 6], tail=tail), tmp_path / "m.onnx")
    with caplog.at_level("INFO", logger="faceembed.convert.onnx_model"):
        card = import_onnx(src, tmp_path / "out.onnx", **FLAGS)
    assert card.batch == 1 and card.embedding_size == 4
    assert "kept the fixed batch 1" in caplog.text
    graph = onnx.load(str(tmp_path / "out.onnx")).graph
    assert graph.input[0] == onnx.load(str(src)).graph.input[0]  # left as it was


def test_import_nhwc_dynamic_gray_and_symbolic_size(tmp_path) -> None:
    card = import_onnx(save(conv_model(["N", 8, 6, 3], nhwc=True), tmp_path / "m.onnx"), tmp_path / "o.onnx",
                       color="BGR", mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0), template="arcface")
    assert (card.layout, card.height, card.width, card.batch, card.mean) == ("NHWC", 8, 6, None, (1.0, 2.0, 3.0))
    open_size = save(conv_model(["N", 3, "h", "w"]), tmp_path / "open.onnx")
    with pytest.raises(InputFormatError, match="pass --size HxW"):
        import_onnx(open_size, tmp_path / "o2.onnx", **FLAGS)
    card = import_onnx(open_size, tmp_path / "o2.onnx", size=(16, 12), color="RGB", mean=127.5, std=128,
                       template="none")
    assert (card.height, card.width, card.mean, card.std) == (16, 12, (127.5,), (128.0,))
    gray = save(conv_model([1, 1, 28, 28], channels=1), tmp_path / "gray.onnx")
    with pytest.raises(InputFormatError, match="pass --color GRAY"):
        import_onnx(gray, tmp_path / "g.onnx", **FLAGS)
    card = import_onnx(gray, tmp_path / "g.onnx", color="GRAY", mean="0", std="255", template="none")
    assert (card.layout, card.channels, card.height, card.batch) == ("NCHW", 1, 28, None)


def test_import_two_outputs_and_prior_card(tmp_path) -> None:
    src = save(conv_model([1, 3, 8, 6], outputs=2), tmp_path / "m.onnx")
    with pytest.raises(InputFormatError, match="--embedding NAME"):
        import_onnx(src, tmp_path / "o.onnx", **FLAGS)
    card = import_onnx(src, tmp_path / "o.onnx", embedding="aux", outputs="emb:feature_map", arch="toy", **FLAGS)
    assert [(o.name, o.role) for o in card.outputs] == [("emb", "feature_map"), ("aux", "embedding")]
    again = import_onnx(tmp_path / "o.onnx", tmp_path / "again.onnx")  # every flag from the card it carries
    assert again.replace(name="o", source="o.onnx") == again and again.replace(name=card.name,
                                                                             source=card.source) == card


@pytest.mark.parametrize("flags,needle", [
    (dict(FLAGS, layout="NHWC"), "pass --layout NCHW or leave it out"),
    (dict(FLAGS, size="112x96"), "pass --size 8x6 or leave it out"),
    (dict(FLAGS, color=None), "cannot tell the colour order from the graph: pass --color RGB|BGR|GRAY"),
    (dict(FLAGS, color="GRAY"), "--color"),
    (dict(FLAGS, mean=None), "--mean 127.5 --std 127.5"),
    (dict(FLAGS, std="1,2"), "--std with 1 or 3 numbers"),
    (dict(FLAGS, std="0"), "--std"),
    (dict(FLAGS, template=None), "pass --template sphereface|arcface|dlib|none"),
    (dict(FLAGS, embedding="nope"), "--embedding one of emb"),
    (dict(FLAGS, outputs="nope:mu"), "--outputs"),
    (dict(FLAGS, inputs="y:1,3,8,6"), "--inputs"),
])
def test_import_flag_errors_are_one_line_naming_the_flag(tmp_path, flags: dict, needle: str) -> None:
    src = save(conv_model([1, 3, 8, 6]), tmp_path / "m.onnx")
    with pytest.raises(InputFormatError) as err:
        import_onnx(src, tmp_path / "o.onnx", **flags)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "o.onnx").exists()


def test_import_ambiguous_layout_and_bad_inputs(tmp_path) -> None:
    src = save(conv_model(["N", 3, "h", 3]), tmp_path / "m.onnx")
    with pytest.raises(InputFormatError, match="cannot tell the layout.*pass --layout NCHW|NHWC"):
        import_onnx(src, tmp_path / "o.onnx", size="8x3", **FLAGS)
    assert import_onnx(src, tmp_path / "o.onnx", size="8x3", layout="NCHW", **FLAGS).layout == "NCHW"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])
    flat = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])]))
    with pytest.raises(InputFormatError, match="not a 4-D image batch: pass --inputs"):
        import_onnx(save(flat, tmp_path / "flat.onnx"), tmp_path / "o.onnx", **FLAGS)


# ---- parsers ---------------------------------------------------------------------------------------------

@given(st.integers(1, 10**6), st.integers(1, 10**6), st.sampled_from(["x", "X", " x "]))
def test_parse_size_round_trip(h: int, w: int, sep: str) -> None:
    assert parse_size(f"{h}{sep}{w}") == (h, w)


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=4))
def test_parse_floats_round_trip(values: list[float]) -> None:
    assert parse_floats(",".join(repr(v) for v in values)) == tuple(values)


name_text = st.text(st.characters(exclude_characters=";", exclude_categories=("Cs",)), min_size=1).filter(
    lambda s: s.strip() == s and s != "")


@given(st.lists(st.tuples(name_text, st.lists(st.integers(1, 4096) | st.just(-1), min_size=1, max_size=5)),
                min_size=1, max_size=3))
def test_parse_inputs_round_trip(entries: list) -> None:
    text = ";".join(f"{n}:{','.join(map(str, dims))}" for n, dims in entries)
    assert parse_inputs(text) == [(n, dims) for n, dims in entries]


@given(st.dictionaries(name_text.filter(lambda s: "," not in s), st.sampled_from(ROLES), min_size=1, max_size=4))
def test_parse_outputs_round_trip(roles: dict) -> None:
    assert parse_outputs(",".join(f"{n}:{r}" for n, r in roles.items())) == roles


@settings(max_examples=300)
@given(st.text(max_size=30))
def test_parsers_raise_only_input_format_errors(text: str) -> None:
    for parse in (parse_size, parse_floats, parse_inputs, parse_outputs):
        with contextlib.suppress(InputFormatError):
            parse(text)
    for bad, parse in (("112", parse_size), ("0x96", parse_size), ("a,1", parse_floats), ("nan", parse_floats),
                       ("x:1,0", parse_inputs), (":1", parse_inputs), ("x", parse_inputs), ("mu:emb", parse_outputs)):
        with pytest.raises(InputFormatError):
            parse(bad)


# ---- the real MobileFaceNet as an insightface-style model ------------------------------------------------

class InsightfaceStyle(nn.Module):
    """NCHW BGR pixels in; the channel swap (and optionally ``(x - 127.5) / 128``) inside the graph."""

    def __init__(self, model: nn.Module, normalise_inside: bool):
        super().__init__()
        self.model, self.normalise_inside = model, normalise_inside

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flip(1)  # BGR -> RGB, the order the weights expect
        if self.normalise_inside:
            x = (x - 127.5) / 128.0
        return self.model(x)[0]


@pytest.fixture(scope="module")
def mobilefacenet(tmp_path_factory):
    if not MFN_CKPT.is_file() or not (LFW / "lfw_landmark.txt").is_file():
        pytest.skip("../shared/data (MobileFaceNet weights, LFW) not found: real-data test skipped")
    from faceembed.convert.torch_state import import_checkpoint
    from faceembed.data.lfw import read_landmarks
    from faceembed.models.checkpoint import load_checkpoint
    try:
        from faceembed.faces.align_files import align_images_in_memory
    except ImportError:  # before the lead's move
        from faceembed.data.align import align_images_in_memory

    ckpt = tmp_path_factory.mktemp("mfn") / "mfn.pt"
    import_checkpoint(MFN_CKPT, ckpt)
    model = load_checkpoint(ckpt)[0].eval()
    landmarks = read_landmarks(LFW / "lfw_landmark.txt")
    rel = sorted(landmarks)[::800][:16]
    faces = align_images_in_memory(LFW / "images", landmarks, rel, size=(112, 96), workers=1)
    return model, faces


def export_insightface_style(model: nn.Module, inside: bool, path: Path) -> Path:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(InsightfaceStyle(model, inside).eval(), (torch.zeros(1, 3, 112, 96),), str(path),
                          input_names=["input.1"], output_names=["output0"], opset_version=17, dynamo=False)
    return path


@pytest.mark.realdata
@pytest.mark.parametrize("inside", [True, False], ids=["normalised-in-graph", "normalised-outside"])
def test_insightface_style_mobilefacenet_matches_native(mobilefacenet, tmp_path, inside: bool) -> None:
    model, faces = mobilefacenet
    src = export_insightface_style(model, inside, tmp_path / "foreign.onnx")
    norm = dict(mean="0", std="1") if inside else dict(mean="127.5", std="128")
    card = import_onnx(src, tmp_path / "imported.onnx", color="BGR", template="sphereface", arch="mobilefacenet",
                       **norm)
    assert (card.input_name, card.layout, card.height, card.width, card.color) == ("input.1", "NCHW", 112, 96, "BGR")
    assert card.outputs[0].name == "output0" and card.embedding_output == "output0" and card.embedding_size == 128
    assert card.batch is None  # the export fixed batch 1; the rewrite made it dynamic (MobileFaceNet flattens)
    sess = ort.InferenceSession(str(tmp_path / "imported.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[0] == "batch"
    got = sess.run(None, {card.input_name: preprocess(faces, card)})[0]
    with torch.inference_mode():
        native = model(torch.from_numpy(((faces.astype(np.float32) - 127.5) / 128.0).transpose(0, 3, 1, 2)))[0]
    native = native.numpy()
    cos = (got * native).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(native, axis=1)
    assert got.shape == (16, 128) and cos.min() >= 0.99999, cos.min()


@pytest.mark.realdata
def test_insightface_style_wrong_flags_name_the_flag(mobilefacenet, tmp_path) -> None:
    src = export_insightface_style(mobilefacenet[0], True, tmp_path / "foreign.onnx")
    for flags, needle in ((dict(layout="NHWC"), "--layout"), (dict(size="112x112"), "--size 112x96")):
        with pytest.raises(InputFormatError) as err:
            import_onnx(src, tmp_path / "o.onnx", color="BGR", mean="0", std="1", template="sphereface", **flags)
        line = str(err.value)
        assert "\n" not in line and needle in line, line
    assert not (tmp_path / "o.onnx").exists()
