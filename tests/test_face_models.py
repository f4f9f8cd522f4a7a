"""Face backbones (MobileFaceNet, SphereFace) and the foreign-checkpoint importer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from faceembed.convert.torch_state import import_checkpoint
from faceembed.errors import CheckpointError
from faceembed.models import build
from faceembed.models.checkpoint import load_checkpoint, save_checkpoint
from faceembed.models.mobilefacenet import MobileFaceNet
from faceembed.models.sphere import SphereNet

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
MFN_CKPT = DATA / "weights" / "mobilefacenet_casia_112x96.ckpt"
MFN_KEYS = DATA / "weights" / "mobilefacenet_casia_112x96.keys.txt"


def need_data() -> None:
    if not MFN_CKPT.is_file():
        pytest.skip("../shared/data not found: real-data test skipped")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_mobilefacenet_shapes_and_split() -> None:
    m = MobileFaceNet().eval()
    x = torch.randn(2, 3, 112, 96)
    with torch.no_grad():
        fmap = m.feature_map(x)
        (emb,) = m(x)
        again = m.embed_from_feature_map(fmap)
    assert fmap.shape == (2, 512, 7, 6) == (2, *m.feature_map_shape)
    assert emb.shape == (2, 128)
    assert torch.allclose(emb, again)
    assert m.output_names == ("embedding",)
    assert MobileFaceNet(embedding_size=256).eval()(x)[0].shape == (2, 256)


@pytest.mark.parametrize("name,units", [("sphere20", 8), ("sphere64", 30)])
def test_sphere_shapes(name: str, units: int) -> None:
    m = build(name).eval()
    assert isinstance(m, SphereNet)
    n_convs = sum(1 for k in m.state_dict() if k.startswith("conv") and k.endswith(".weight"))
    assert n_convs == 4 + 2 * units  # one strided conv per stage + two per residual unit
    x = torch.randn(1, 3, 112, 96)
    with torch.no_grad():
        fmap = m.feature_map(x)
        (emb,) = m(x)
    assert fmap.shape == (1, 512, 7, 6)
    assert emb.shape == (1, 512)
    assert torch.allclose(emb, m.embed_from_feature_map(fmap))


def test_sphere20_layer_names_match_the_port() -> None:
    names = {k.split(".")[0] for k in build("sphere20").state_dict()}
    expected = {f"conv1_{i}" for i in range(1, 4)} | {f"conv2_{i}" for i in range(1, 6)} \
        | {f"conv3_{i}" for i in range(1, 10)} | {f"conv4_{i}" for i in range(1, 4)}
    assert expected <= names and "fc5" in names
    with pytest.raises(ValueError):
        SphereNet(depth=21)


@pytest.mark.realdata
def test_real_checkpoint_loads_strict() -> None:
    need_data()
    payload = torch.load(MFN_CKPT, map_location="cpu", weights_only=True)
    sd = payload["net_state_dict"]
    m = MobileFaceNet()
    m.load_state_dict(sd, strict=True)
    listed = [ln.split(" ")[0] for ln in MFN_KEYS.read_text().splitlines() if ln.strip()]
    assert listed == list(m.state_dict())
    assert sum(v.numel() for v in sd.values()) == 1_019_186  # parameters + BN buffers, as published


def _raw_output(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    m = MobileFaceNet()
    m.load_state_dict(sd, strict=True)
    with torch.no_grad():
        return m.eval()(x)[0]


def test_import_round_trip_synthetic(tmp_path: Path) -> None:
    src_model = MobileFaceNet()
    for mod in src_model.modules():  # non-trivial BN statistics
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    sd = src_model.state_dict()
    src = tmp_path / "foreign.ckpt"
    torch.save({"epoch": 3, "net_state_dict": {f"module.{k}": v for k, v in sd.items()}}, src)
    summary = import_checkpoint(src, tmp_path / "mfn.pt")
    assert summary["epoch"] == 3 and summary["arch"] == "mobilefacenet"
    model, spec, extra = load_checkpoint(tmp_path / "mfn.pt", expect_arch="mobilefacenet")
    assert (spec.height, spec.width, spec.channels, spec.color) == (112, 96, 3, "RGB")
    assert (spec.mean, spec.scale) == (127.5, 128.0)
    assert {k: v for k, v in extra.items() if k != "card"} == {"source": "foreign.ckpt", "epoch": 3}
    assert extra["card"]["template"] == "sphereface" and extra["card"]["std"] == [128.0]  # the checkpoint's card
    x = torch.randn(2, 3, 112, 96)
    with torch.no_grad():
        assert torch.equal(model(x)[0], _raw_output(sd, x))


@pytest.mark.realdata
def test_import_round_trip_real(tmp_path: Path) -> None:
    need_data()
    summary = import_checkpoint(MFN_CKPT, tmp_path / "mfn.pt")
    assert summary["epoch"] == 68 and summary["parameters"] == 999_552
    model, spec, _ = load_checkpoint(tmp_path / "mfn.pt")
    sd = torch.load(MFN_CKPT, map_location="cpu", weights_only=True)["net_state_dict"]
    x = torch.randn(2, 3, 112, 96)
    with torch.no_grad():
        assert torch.equal(model(x)[0], _raw_output(sd, x))


def test_import_rejects_other_models(tmp_path: Path) -> None:
    other = tmp_path / "sphere.ckpt"
    torch.save({"epoch": 1, "net_state_dict": build("sphere20").state_dict()}, other)
    with pytest.raises(CheckpointError, match="missing.*unexpected"):
        import_checkpoint(other, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()

    sd = MobileFaceNet(embedding_size=64).state_dict()  # same names, other shapes
    torch.save(sd, tmp_path / "bare.ckpt")
    with pytest.raises(CheckpointError, match="other shapes"):
        import_checkpoint(tmp_path / "bare.ckpt", tmp_path / "out.pt")

    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError):
        import_checkpoint(junk, tmp_path / "out.pt")

    torch.save({"epoch": 1, "net_state_dict": {}}, tmp_path / "empty.ckpt")
    with pytest.raises(CheckpointError, match="no state dict"):
        import_checkpoint(tmp_path / "empty.ckpt", tmp_path / "out.pt")


def test_faceembed_checkpoint_of_other_arch_is_rejected(tmp_path: Path) -> None:
    from faceembed.models.checkpoint import FACE_INPUT_112x96

    path = tmp_path / "mfn.pt"
    save_checkpoint(path, "mobilefacenet", {"embedding_size": 128}, MobileFaceNet(), FACE_INPUT_112x96)
    with pytest.raises(CheckpointError, match="expected 'sphere20'"):
        load_checkpoint(path, expect_arch="sphere20")
    with pytest.raises(CheckpointError, match="already a faceembed checkpoint"):
        import_checkpoint(path, tmp_path / "again.pt")
