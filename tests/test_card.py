"""Model cards (JSON round trip, validation, ONNX metadata, reading cards from files), the one preprocessing
function against a direct float64 computation, and the alignment templates."""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from faceembed.data.preprocess import GRAY_WEIGHTS, preprocess, resize_to_card
from faceembed.data.templates import TEMPLATE_NAMES, TEMPLATES, template_points
from faceembed.errors import InputFormatError, ShapeMismatchError
from faceembed.models.card import (
    ROLES,
    ModelCard,
    OutputSpec,
    Thresholds,
    card_from_input_spec,
)
from faceembed.models.card_io import card_from_onnx, card_to_onnx, read_card
from faceembed.models.checkpoint import MNIST_INPUT, FACE_INPUT_112x96, save_checkpoint
from faceembed.models.mnist_net import MnistClassifier

REFERENCE_112x96 = np.array(
    [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655], [62.7299, 92.2041]])


def face_card(**kw) -> ModelCard:
    base = dict(input_name="input.1", layout="NCHW", height=112, width=112, color="BGR", mean=(127.5,),
                std=(127.5,), template="arcface", batch=None, outputs=(OutputSpec("683", "embedding"),),
                embedding_size=512, similarity="cosine")
    return ModelCard(**{**base, **kw})


# ---- JSON form -------------------------------------------------------------------------------------------

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
nonzero = finite.filter(lambda v: abs(v) > 1e-6)
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
thresholds = st.builds(
    Thresholds, metric=st.sampled_from(["cosine", "mls"]), dataset=st.sampled_from(["lfw", "cfp-fp"]),
    protocol=st.sampled_from(["10-fold", "view2"]),
    far=st.dictionaries(st.sampled_from(["1e-2", "1e-3", "1e-4", "0.05"]), finite, max_size=3),
    best_accuracy=st.none() | finite, accuracy=st.none() | st.floats(0, 1))


@st.composite
def cards(draw) -> ModelCard:
    color = draw(st.sampled_from(["RGB", "BGR", "GRAY"]))
    n = 1 if color == "GRAY" else draw(st.sampled_from([1, 3]))
    outs = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    other_roles = st.sampled_from([r for r in ROLES if r not in ("embedding", "mu")])
    roles = [draw(st.sampled_from(["embedding", "mu"]))] + [draw(other_roles) for _ in outs[1:]]
    similarity = draw(st.sampled_from(["cosine", "mls"])) if "sigma_sq" in roles else "cosine"
    outputs = tuple(OutputSpec(o, r) for o, r in zip(outs, roles, strict=True))
    return ModelCard(
        input_name=draw(names), layout=draw(st.sampled_from(["NCHW", "NHWC"])), height=draw(st.integers(1, 4096)),
        width=draw(st.integers(1, 4096)), color=color, mean=tuple(draw(st.lists(finite, min_size=n, max_size=n))),
        std=tuple(draw(st.lists(nonzero, min_size=n, max_size=n))), template=draw(st.sampled_from(TEMPLATE_NAMES)),
        batch=draw(st.none() | st.integers(1, 64)), outputs=outputs,
        embedding_size=draw(st.integers(1, 4096)), similarity=similarity, thresholds=draw(st.none() | thresholds),
        arch=draw(st.none() | names), name=draw(st.none() | names), source=draw(st.none() | names))


@settings(max_examples=150, deadline=None)
@given(cards())
def test_card_json_round_trip(card: ModelCard) -> None:
    text = card.to_json()
    assert ModelCard.from_json(text) == card
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card
    assert card.embedding_output in [o.name for o in card.outputs]
    assert card.channels == (1 if card.color == "GRAY" else 3)


def test_card_accessors_and_replace() -> None:
    card = face_card(outputs=(OutputSpec("mu", "mu"), OutputSpec("sigma_sq", "sigma_sq")), similarity="mls")
    assert card.embedding_output == "mu" and card.output("sigma_sq") == "sigma_sq" and card.output("logits") is None
    assert card.replace(batch=4).batch == 4 and card.batch is None
    assert card.to_dict()["format"] == "faceembed-card" and card.to_dict()["version"] == 1
    with pytest.raises(InputFormatError, match="role"):
        card.output("nope")
    with pytest.raises(InputFormatError, match="'layout'"):
        card.replace(layout="CHW")


@pytest.mark.parametrize("field,value,allowed", [
    ("layout", "NCWH", "NCHW, NHWC"), ("color", "YUV", "RGB, BGR, GRAY"), ("template", "mtcnn", "sphereface"),
    ("similarity", "l2", "cosine, mls"), ("height", 0, "positive integer"), ("width", "96", "positive integer"),
    ("batch", 0, "positive integer or null"), ("mean", [1, 2], "1 or 3"), ("std", [0.0], "non-zero"),
    ("embedding_size", True, "positive integer"), ("arch", 5, "text or null"),
])
def test_card_validation_names_field_and_allowed(field: str, value, allowed: str) -> None:
    d = face_card().to_dict()
    d[field] = value
    with pytest.raises(InputFormatError) as err:
        ModelCard.from_dict(d)
    assert f"'{field}'" in err.value.message and allowed in err.value.message
    assert "\n" not in str(err.value)


def test_card_validation_structure() -> None:
    d = face_card().to_dict()
    with pytest.raises(InputFormatError, match="unknown 'colour'"):
        ModelCard.from_dict({**d, "colour": "RGB"})
    with pytest.raises(InputFormatError, match="lacks 'layout'"):
        ModelCard.from_dict({k: v for k, v in d.items() if k != "layout"})
    with pytest.raises(InputFormatError, match="version"):
        ModelCard.from_dict({**d, "version": 2})
    with pytest.raises(InputFormatError, match="'role'.*allowed: embedding, mu"):
        ModelCard.from_dict({**d, "outputs": [{"name": "x", "role": "emb"}]})
    with pytest.raises(InputFormatError, match="exactly one output of role"):
        ModelCard.from_dict({**d, "outputs": [{"name": "x", "role": "other"}]})
    with pytest.raises(InputFormatError, match="no output has role 'sigma_sq'"):
        ModelCard.from_dict({**d, "similarity": "mls"})
    with pytest.raises(InputFormatError, match="'far' entry"):
        ModelCard.from_dict({**d, "thresholds": {"metric": "cosine", "dataset": "lfw", "protocol": "10-fold",
                                                 "far": {"0.5x": 0.3}}})
    with pytest.raises(InputFormatError, match="not JSON"):
        ModelCard.from_json("{")
    with pytest.raises(InputFormatError, match="'mean'"):  # GRAY takes one number
        face_card(color="GRAY", mean=(1.0, 2.0, 3.0), std=(1.0,))


def test_card_from_input_spec() -> None:
    face = card_from_input_spec(FACE_INPUT_112x96, "mobilefacenet", 128)
    assert (face.layout, face.height, face.width, face.color, face.template) == ("NHWC", 112, 96, "RGB", "sphereface")
    assert (face.mean, face.std, face.batch, face.embedding_output) == ((127.5,), (128.0,), None, "embedding")
    mnist = card_from_input_spec(MNIST_INPUT, embedding_size=64)
    assert (mnist.template, mnist.channels, [o.role for o in mnist.outputs]) == ("none", 1, ["logits", "embedding"])
    square = card_from_input_spec(FACE_INPUT_112x96.__class__(112, 112, 3, 127.5, 128.0), embedding_size=512)
    assert square.template == "arcface"
    pfe = card_from_input_spec(FACE_INPUT_112x96.__class__(112, 96, 3, 127.5, 128.0, output_names=(
        "mu", "sigma_sq")), "pfe", 512)
    assert pfe.similarity == "mls" and pfe.embedding_output == "mu"


# ---- cards in files --------------------------------------------------------------------------------------

def tiny_onnx(meta: dict[str, str] | None = None) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 112, 112])
    y = helper.make_tensor_value_info("683", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["683"], axes=[2, 3], keepdims=0)], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    return model


def test_onnx_metadata_round_trip(tmp_path) -> None:
    model = tiny_onnx({"other": "kept"})
    assert card_from_onnx(model) is None
    card = face_card(thresholds=Thresholds("cosine", "lfw", "10-fold", {"1e-3": 0.31}, 0.25, 0.995))
    card_to_onnx(model, card)
    card_to_onnx(model, card.replace(name="again"))  # replaces, never duplicates
    keys = [p.key for p in model.metadata_props]
    assert keys.count("faceembed.card") == 1 and "other" in keys
    onnx.save(model, tmp_path / "m.onnx")
    assert card_from_onnx(tmp_path / "m.onnx") == card.replace(name="again") == read_card(tmp_path / "m.onnx")


def test_read_card_without_card_is_one_clear_error(tmp_path) -> None:
    onnx.save(tiny_onnx(), tmp_path / "foreign.onnx")
    with pytest.raises(InputFormatError, match="no model card: run 'faceembed import MODEL --out DST'"):
        read_card(tmp_path / "foreign.onnx")
    bad = tiny_onnx({"faceembed.card": '{"layout": "NCHW"}'})
    onnx.save(bad, tmp_path / "bad.onnx")
    with pytest.raises(InputFormatError, match="faceembed.card.*lacks"):
        read_card(tmp_path / "bad.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf \xff\xff")
    with pytest.raises(InputFormatError):
        read_card(tmp_path / "junk.onnx")


def test_read_card_from_faceembed_export_metadata(tmp_path) -> None:
    spec = FACE_INPUT_112x96
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 112, 96, 3])
    y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["input"], ["embedding"], axes=[1, 2], keepdims=0)],
                              "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    for k, v in {"faceembed.arch": "mobilefacenet", "faceembed.input": json.dumps(spec.to_dict())}.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, tmp_path / "export.onnx")
    card = read_card(tmp_path / "export.onnx")
    assert card == card_from_input_spec(spec, "mobilefacenet", 3, name="export", source="export.onnx")


def test_read_card_from_checkpoints(tmp_path) -> None:
    model = MnistClassifier(embedding_size=16)
    save_checkpoint(tmp_path / "plain.pt", "mnist_classifier", {"embedding_size": 16}, model, MNIST_INPUT)
    card = read_card(tmp_path / "plain.pt")
    assert (card.embedding_size, card.arch, card.template, card.color) == (16, "mnist_classifier", "none", "GRAY")
    save_checkpoint(tmp_path / "default.pt", "mnist_classifier", {}, MnistClassifier(), MNIST_INPUT)
    assert read_card(tmp_path / "default.pt").embedding_size == 64  # not in the config: measured by running
    carded = card.replace(name="with card", source="elsewhere")
    save_checkpoint(tmp_path / "card.pt", "mnist_classifier", {"embedding_size": 16}, model, MNIST_INPUT,
                    extra={"card": carded.to_dict()})
    assert read_card(tmp_path / "card.pt") == carded
    torch.save({"net_state_dict": model.state_dict()}, tmp_path / "foreign.pt")
    with pytest.raises(InputFormatError, match="no model card"):
        read_card(tmp_path / "foreign.pt")


# ---- preprocess ------------------------------------------------------------------------------------------

def reference_preprocess(images: np.ndarray, card: ModelCard) -> np.ndarray:
    """The card's formula, written out in float64 pixel by pixel channel."""
    x = images.astype(np.float64)
    if x.ndim == 3:
        x = x[..., None]
    if card.color == "GRAY" and x.shape[3] == 3:
        x = (GRAY_WEIGHTS[0] * x[..., 0] + GRAY_WEIGHTS[1] * x[..., 1] + GRAY_WEIGHTS[2] * x[..., 2])[..., None]
    elif card.color != "GRAY" and x.shape[3] == 1:
        x = np.concatenate([x] * 3, axis=3)
    if card.color == "BGR":
        x = np.stack([x[..., 2], x[..., 1], x[..., 0]], axis=3)
    out = np.empty_like(x)
    for c in range(x.shape[3]):
        m = card.mean[c if len(card.mean) > 1 else 0]
        s = card.std[c if len(card.std) > 1 else 0]
        out[..., c] = (x[..., c] - m) / s
    return out.transpose(0, 3, 1, 2) if card.layout == "NCHW" else out


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["RGB", "BGR", "GRAY"]), st.sampled_from(["NCHW", "NHWC"]), st.booleans(),
       st.sampled_from([0, 1, 3]), st.integers(0, 2**31 - 1))
def test_preprocess_matches_float64(color: str, layout: str, per_channel: bool, gray_in: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 1 if color == "GRAY" or not per_channel else 3
    card = face_card(color=color, layout=layout, height=7, width=5, mean=tuple(rng.uniform(0, 255, n)),
                     std=tuple(rng.uniform(0.5, 300, n)))
    shape = {0: (3, 7, 5, 3), 1: (3, 7, 5), 3: (3, 7, 5, 1)}[gray_in]
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    got = preprocess(images, card)
    want = reference_preprocess(images, card)
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


def test_preprocess_known_values_and_cv2_gray() -> None:
    rgb = np.zeros((1, 2, 2, 3), np.uint8)
    rgb[0, 0, 0] = (255, 0, 0)
    out = preprocess(rgb, face_card(height=2, width=2, color="BGR", mean=(0.0,), std=(1.0,)))
    assert out.shape == (1, 3, 2, 2) and out[0, 2, 0, 0] == 255 and out[0, 0, 0, 0] == 0  # R went last
    img = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    gray = preprocess(img, face_card(height=16, width=16, color="GRAY", mean=(0.0,), std=(1.0,), layout="NHWC"))
    assert np.abs(gray[0, ..., 0] - cv2.cvtColor(img[0], cv2.COLOR_RGB2GRAY)).max() <= 0.5 + 1e-4


def test_preprocess_shape_errors_name_both_shapes() -> None:
    card = face_card()
    with pytest.raises(ShapeMismatchError, match=r"\[2, 112, 96, 3\].*112, 112"):
        preprocess(np.zeros((2, 112, 96, 3), np.uint8), card)
    with pytest.raises(ShapeMismatchError, match="uint8"):
        preprocess(np.zeros((2, 112, 112, 3), np.float32), card)
    with pytest.raises(ShapeMismatchError):
        preprocess(np.zeros((2, 112, 112, 4), np.uint8), card)


def test_resize_to_card() -> None:
    card = face_card(height=28, width=20, template="none")
    img = np.random.default_rng(1).integers(0, 256, (100, 80, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_to_card(img, card), cv2.resize(img, (20, 28), interpolation=cv2.INTER_AREA))
    small = img[:10, :10]
    np.testing.assert_array_equal(resize_to_card(small, card),
                                  cv2.resize(small, (20, 28), interpolation=cv2.INTER_LINEAR))
    boxed = resize_to_card(img, card, box=(10.2, 20, 50, 90.5))
    np.testing.assert_array_equal(boxed, cv2.resize(img[20:91, 10:50], (20, 28), interpolation=cv2.INTER_AREA))
    assert resize_to_card(img[..., :1], card).shape == (28, 20, 1)
    with pytest.raises(ShapeMismatchError, match="empty"):
        resize_to_card(img, card, box=(90, 0, 95, 10))


# ---- templates -------------------------------------------------------------------------------------------

def test_templates() -> None:
    np.testing.assert_array_equal(template_points("sphereface", 112, 96), REFERENCE_112x96)
    np.testing.assert_array_equal(template_points("arcface", 112, 112), REFERENCE_112x96 + [8.0, 0.0])
    np.testing.assert_allclose(template_points("sphereface", 112, 112), template_points("arcface", 112, 112))
    np.testing.assert_allclose(template_points("sphereface", 224, 192), REFERENCE_112x96 * 2)
    from faceembed.data.templates import DLIB_150x150

    np.testing.assert_array_equal(template_points("dlib", 150, 150), DLIB_150x150)  # fitted: scripts/dlib_template.py
    assert template_points("dlib", 300, 300) == pytest.approx(DLIB_150x150 * 2)
    assert template_points("none", 112, 112) is None
    assert set(TEMPLATE_NAMES) == {"sphereface", "arcface", "dlib", "none"}
    for name, (points, (h, w)) in TEMPLATES.items():
        assert points.shape == (5, 2) and points.dtype == np.float64
        assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0], name  # left before right
        assert (points[:, 0] < w).all() and (points[:, 1] < h).all()
    with pytest.raises(InputFormatError, match="allowed: sphereface, arcface, dlib, none"):
        template_points("insightface", 112, 112)


def test_templates_agree_with_align() -> None:
    try:
        from faceembed.faces.align import reference_points
    except ImportError:  # before the move
        from faceembed.data.align import reference_points
    np.testing.assert_allclose(template_points("sphereface", 112, 96), reference_points((112, 96)))
    np.testing.assert_allclose(template_points("arcface", 112, 112), reference_points((112, 112)))
    np.testing.assert_allclose(template_points("sphereface", 56, 48), reference_points((56, 48)))
