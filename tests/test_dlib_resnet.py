"""dlib's face-recognition ResNet: the serialization reader on synthetic bytes, the module's layout, the
conversion of the real ``.dat`` file, and parity with dlib itself on real LFW face chips."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from faceembed.errors import CheckpointError
from faceembed.models import build
from faceembed.models.checkpoint import load_checkpoint, read_checkpoint
from faceembed.models.dlib_format import (
    DlibReader,
    encode_float,
    encode_int,
    encode_string,
    encode_tensor,
    parse_dlib_net,
)
from faceembed.models.dlib_resnet import DlibResNet, add_zero_padded, dlib_layer_plan
from faceembed.models.dlib_weights import (
    DLIB_RESNET_INPUT,
    dlib_resnet_checkpoint,
    load_dlib_resnet,
    state_dict_from_dlib,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LFW = SHARED / "lfw"
HAS_LFW = (LFW / "pairs.txt").is_file() and (LFW / "images").is_dir()
HAS_MODELS = importlib.util.find_spec("face_recognition_models") is not None
HAS_DLIB = importlib.util.find_spec("dlib") is not None
needs_models = pytest.mark.skipif(not HAS_MODELS, reason="the 'face_recognition_models' package (dlib's model "
                                  "files) is not installed")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Every test shares one converted checkpoint in a temporary cache (never the user's ~/.cache)."""
    monkeypatch.setenv("FACEEMBED_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


# ---- primitive encoding -----------------------------------------------------------------------------------

def _dlib_pack_int(item: int) -> bytes:
    """A line-by-line port of dlib's ``ser_helper::pack_int`` for a signed 64-bit ``T``."""
    buf = [0] * 9
    size = 8
    neg = 0
    if item < 0:
        neg = 0x80
        item *= -1
    for i in range(1, 9):
        buf[i] = item & 0xFF
        item >>= 8
        if item == 0:
            size = i
            break
    buf[0] = size | neg
    return bytes(buf[: size + 1])


INTS = [0, 1, -1, 127, 128, 255, 256, -256, 300, 65535, 65536, 2**31 - 1, -(2**31), 2**40 + 7, 2**63 - 1,
        -(2**63 - 1)]


def test_int_encoding_matches_dlib_and_round_trips():
    rng = random.Random(0)
    values = INTS + [rng.randrange(-(2**63) + 1, 2**63) for _ in range(500)]
    for v in values:
        raw = _dlib_pack_int(v)
        assert encode_int(v) == raw, v
        r = DlibReader(raw + b"tail")
        assert r.int() == v
        assert r.pos == len(raw)
    assert encode_int(0) == b"\x01\x00" and encode_int(300) == b"\x02\x2c\x01" and encode_int(-1) == b"\x81\x01"


def test_string_bool_float_tensor_round_trip():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) - 7.5
    raw = (encode_string("con_4") + b"1" + b"0" + encode_float(0.04) + encode_float(-122.782) + encode_float(0.0)
           + encode_float(float("inf")) + encode_tensor(a) + encode_tensor(np.zeros((0, 0, 0, 0))))
    r = DlibReader(raw)
    assert r.string() == "con_4"
    assert r.bool() is True and r.bool() is False
    assert r.float() == pytest.approx(0.04, abs=0) and r.float() == -122.782 and r.float() == 0.0
    assert r.float() == float("inf")
    np.testing.assert_array_equal(r.tensor(), a)
    assert r.tensor().shape == (0, 0, 0, 0)
    assert r.pos == len(raw)


def test_float_details_layout():
    # 0.04f as dlib writes it: mantissa 0xa3d70a (3 bytes), exponent -28: mantissa first, then exponent.
    r = DlibReader(bytes.fromhex("030ad7a3811c"))
    assert r.float() == pytest.approx(0.04, rel=1e-7)


def test_bad_bytes_give_one_line_errors():
    with pytest.raises(CheckpointError, match="bool"):
        DlibReader(b"x").bool()
    with pytest.raises(CheckpointError, match="control byte"):
        DlibReader(b"\x7f").int()
    with pytest.raises(CheckpointError, match="truncated"):
        DlibReader(b"\x04\x01\x02").int()


# ---- a synthetic dlib file --------------------------------------------------------------------------------

def _details(kind: str, hyper: dict, arrays: dict) -> bytes:
    """One layer's details in dlib's format (the versions the released model uses)."""
    mult = b"".join(encode_float(v) for v in (1.0, 1.0, 1.0, 0.0))
    if kind == "con":
        w, b = arrays["weight"], arrays["bias"]
        params = np.concatenate([w.reshape(-1), b.reshape(-1)]).reshape(-1, 1, 1, 1)
        ints = [hyper[k] for k in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")]
        return (encode_string("con_4") + encode_tensor(params) + b"".join(encode_int(v) for v in ints)
                + encode_int(1) + b"".join(encode_int(s) for s in w.shape)
                + encode_int(1) + b"".join(encode_int(s) for s in (1, w.shape[0], 1, 1)) + mult)
    if kind == "affine":
        g, b = arrays["gamma"], arrays["beta"]
        alias = encode_int(1) + b"".join(encode_int(s) for s in (1, g.size, 1, 1))
        return (encode_string("affine_") + encode_tensor(np.concatenate([g, b]).reshape(1, -1, 1, 1)) + alias + alias
                + encode_int(0))
    if kind in ("max_pool", "avg_pool"):
        ints = [hyper[k] for k in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")]
        return encode_string(f"{kind}_2") + b"".join(encode_int(v) for v in ints)
    if kind == "fc":
        w = arrays["weight"]  # [num_inputs, num_outputs]
        return (encode_string("fc_2") + encode_int(w.shape[1]) + encode_int(w.shape[0])
                + encode_tensor(w.reshape(w.shape[0], w.shape[1], 1, 1))
                + encode_int(1) + b"".join(encode_int(s) for s in (w.shape[0], w.shape[1], 1, 1))
                + encode_int(1) + b"".join(encode_int(s) for s in (0, 0, 0, 0)) + encode_int(1) + mult)
    return encode_string({"relu": "relu_", "add_prev": "add_prev_"}[kind])


def _state() -> bytes:
    """A layer's cached state: 3 bools and 3 empty tensors."""
    return b"110" + encode_tensor(np.zeros((0, 0, 0, 0))) * 3


def _synthetic_dat(model: DlibResNet) -> bytes:
    """Serialize ``model`` the way dlib serializes its anet_type (a loss_metric over add_layer/tag/skip)."""
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    plan = dlib_layer_plan()
    parts = [encode_int(1), encode_string("loss_metric_2"), encode_float(0.04), encode_float(0.6)]
    parts += [encode_int(1 if kind == "tag_or_skip" else 2) for kind, _, _ in reversed(plan[1:])]
    parts += [encode_int(3), encode_string("input_rgb_image_sized")]
    parts += [encode_float(v) for v in (122.782, 117.001, 104.298)] + [encode_int(150), encode_int(150)]
    for i, (kind, name, hyper) in enumerate(plan):
        if kind == "tag_or_skip":
            continue
        arrays: dict[str, np.ndarray] = {}
        if kind == "con":
            arrays = {"weight": sd[f"{name}.weight"], "bias": sd[f"{name}.bias"]}
        elif kind == "affine":
            arrays = {"gamma": sd[f"{name}.weight"], "beta": sd[f"{name}.bias"]}
        elif kind == "fc":
            arrays = {"weight": sd[f"{name}.weight"].T.copy()}
        parts += [_details(kind, hyper, arrays), _state()]
        if i == 0:
            parts.append(encode_int(1))  # the bottom layer's _sample_expansion_factor
    return b"".join(parts)


@pytest.fixture(scope="module")
def random_model() -> DlibResNet:
    torch.manual_seed(0)
    m = DlibResNet()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return m.eval()


def test_synthetic_file_parses_into_the_same_weights(random_model, tmp_path):
    raw = _synthetic_dat(random_model)
    net = parse_dlib_net(raw)
    assert net.loss["type"] == "loss_metric_2" and net.loss["distance_threshold"] == pytest.approx(0.6)
    assert net.input["avg_rgb"] == pytest.approx([122.782, 117.001, 104.298])
    assert [layer.kind for layer in net.layers] == [p[0] for p in dlib_layer_plan()]
    state = state_dict_from_dlib(net)
    ref = random_model.state_dict()
    assert state.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(state[k], ref[k], rtol=0, atol=1e-7 if k == "input_mean" else 0, msg=k)
    path = tmp_path / "synthetic.dat"
    path.write_bytes(raw)
    model, _ = load_dlib_resnet(path)
    x = torch.rand(2, 3, 150, 150)
    torch.testing.assert_close(model(x)[0], random_model(x)[0])


def test_truncated_file_is_a_one_line_checkpoint_error(random_model, tmp_path):
    raw = _synthetic_dat(random_model)
    for cut in (0, 3, 40, len(raw) // 3, len(raw) - 1):
        path = tmp_path / f"cut{cut}.dat"
        path.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError) as info:
            load_dlib_resnet(path)
        text = str(info.value)
        assert "\n" not in text and "truncated" in text and str(path) in text, text
    path = tmp_path / "extra.dat"
    path.write_bytes(raw + b"\x00")
    with pytest.raises(CheckpointError, match="unexpected bytes after the network"):
        load_dlib_resnet(path)


def test_wrong_network_is_rejected(random_model):
    raw = _synthetic_dat(random_model).replace(encode_string("max_pool_2"), encode_string("avg_pool_2"), 1)
    with pytest.raises(CheckpointError, match="layer 3 is avg_pool, expected max_pool"):
        state_dict_from_dlib(parse_dlib_net(raw))


# ---- the module -------------------------------------------------------------------------------------------

def test_module_shapes_and_registry():
    m = build("dlib_resnet").eval()
    assert isinstance(m, DlibResNet) and m.output_names == ("embedding",)
    x = torch.rand(2, 3, 150, 150)
    with torch.no_grad():
        fmap = m.forward_features(x)
        (emb,) = m(x)
    assert fmap.shape == (2, *m.feature_map_shape) == (2, 256, 2, 2)
    assert emb.shape == (2, 128)
    torch.testing.assert_close(m.embed_from_feature_map(fmap), emb)
    assert sum(isinstance(mod, torch.nn.Conv2d) for mod in m.modules()) == 29


def test_add_zero_padded_is_dlibs_add_prev():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 4, 4, 4), 10.0)
    out = add_zero_padded(a, b)
    assert out.shape == (1, 4, 4, 4)
    assert (out[:, :2, :3, :3] == 11).all() and (out[:, 2:] == 10).all() and (out[:, :, 3] == 10).all()


# ---- the real model file ----------------------------------------------------------------------------------

@needs_models
def test_real_file_converts_to_a_cached_checkpoint():
    path = dlib_resnet_checkpoint()
    assert path.name == "dlib_resnet.pt" and dlib_resnet_checkpoint() == path
    payload = read_checkpoint(path)
    assert payload["arch"] == "dlib_resnet"
    assert len(payload["extra"]["source_sha256"]) == 64
    assert payload["extra"]["dlib_input_avg_rgb"] == pytest.approx([122.782, 117.001, 104.298], abs=1e-4)
    model, spec, _ = load_checkpoint(path, expect_arch="dlib_resnet")
    assert spec == DLIB_RESNET_INPUT and (spec.height, spec.width, spec.mean, spec.scale) == (150, 150, 0.0, 256.0)
    torch.testing.assert_close(model.input_mean.reshape(-1) * 256,
                               torch.tensor([122.782, 117.001, 104.298]), atol=1e-4, rtol=0)
    # a corrupt cache entry is rebuilt
    path.write_bytes(b"junk")
    assert read_checkpoint(dlib_resnet_checkpoint())["arch"] == "dlib_resnet"


def _lfw_chips(n: int):
    """``n`` dlib face chips (HOG detector, 68-point predictor, 150 px, padding 0.25) of LFW View 2 images."""
    import dlib

    from faceembed.data.images import read_image_rgb
    from faceembed.data.lfw import read_pairs
    from faceembed.models.dlib_weights import dlib_model_path

    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat")))
    seen: list[str] = []
    for p in read_pairs(LFW / "pairs.txt"):
        for name, idx in ((p.name1, p.idx1), (p.name2, p.idx2)):
            rel = f"{name}/{name}_{idx:04d}.jpg"
            if rel not in seen:
                seen.append(rel)
    chips = []
    for rel in seen:
        img = read_image_rgb(LFW / "images" / rel)
        dets = det(img, 1)
        if not dets:
            continue
        h, w = img.shape[:2]
        best = min(dets, key=lambda d: (d.center().x - w / 2) ** 2 + (d.center().y - h / 2) ** 2)
        chips.append(dlib.get_face_chip(img, sp(img, best), size=150, padding=0.25))
        if len(chips) == n:
            break
    return np.stack(chips)


@pytest.mark.realdata
@pytest.mark.slow
def test_parity_with_dlib_on_real_lfw_chips():
    if not HAS_DLIB:
        pytest.skip("dlib is not installed (pip install dlib-bin): parity with dlib not checked")
    if not HAS_MODELS:
        pytest.skip("the 'face_recognition_models' package (dlib's model files) is not installed")
    if not HAS_LFW:
        pytest.skip("../shared/data not found: real-data test skipped")
    import os

    import dlib

    from faceembed.models.dlib_weights import dlib_model_path

    n = int(os.environ.get("FACEEMBED_DLIB_PARITY_CHIPS", "100"))  # README's all-chips figure: 7701
    chips = _lfw_chips(n)
    rec = dlib.face_recognition_model_v1(str(dlib_model_path()))
    ref = np.stack([np.array(rec.compute_face_descriptor(c)) for c in chips])
    model, spec, _ = load_checkpoint(dlib_resnet_checkpoint(), expect_arch="dlib_resnet")
    x = (torch.from_numpy(chips).permute(0, 3, 1, 2).float() - spec.mean) / spec.scale
    with torch.no_grad():
        ours = torch.cat([model(x[i:i + 50])[0] for i in range(0, len(x), 50)]).numpy()
    assert len(chips) == min(n, 7701) or n > len(chips) > 7000  # dlib's HOG finds a face in nearly every image
    diff = np.abs(ours - ref).max()
    print(f"max abs difference to dlib: {diff:.3g} over {len(chips)} chips")
    assert diff <= 1e-4, f"max abs difference {diff:.3g} over {len(chips)} chips"
    # dlib's descriptors are not L2-normalised
    assert not np.allclose(np.linalg.norm(ref, axis=1), 1.0, atol=1e-3)
