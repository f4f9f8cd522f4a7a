"""IResNet backbones and the weights-only PyTorch state-dict importer (``faceembed.convert.torch_state``)."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from faceembed.convert.torch_state import TRUST_HINT, import_state_dict
from faceembed.errors import CheckpointError, MissingInputError
from faceembed.models import build
from faceembed.models.card import ModelCard
from faceembed.models.card_io import read_card
from faceembed.models.checkpoint import load_checkpoint
from faceembed.models.iresnet import IResNet

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MFN_CKPT = SHARED / "weights" / "mobilefacenet_casia_112x96.ckpt"


class NotAllowListed:
    """A class torch's weights-only unpickler refuses (only reachable by a full unpickle)."""

    def __init__(self) -> None:
        self.note = "hello"


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial running statistics, so a key mix-up would change the outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def iresnet18() -> IResNet:
    torch.manual_seed(0)
    return _randomise_bn(build("iresnet18"))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def test_iresnet_shapes_and_split(iresnet18: IResNet) -> None:
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        fmap = iresnet18.forward_features(x)
        (emb,) = iresnet18(x)
    assert fmap.shape == (2, 512, 7, 7) == (2, *iresnet18.feature_map_shape)
    assert emb.shape == (2, 512)
    assert torch.allclose(emb, iresnet18.embed_from_feature_map(fmap))
    assert iresnet18.output_names == ("embedding",)


@pytest.mark.parametrize("name,blocks", [("iresnet18", (2, 2, 2, 2)), ("iresnet34", (3, 4, 6, 3)),
                                         ("iresnet50", (3, 4, 14, 3)), ("iresnet100", (3, 13, 30, 3))])
def test_iresnet_depths_and_arcface_key_names(name: str, blocks: tuple[int, ...]) -> None:
    sd = build(name).state_dict()
    for stage, n in enumerate(blocks, start=1):
        assert f"layer{stage}.{n - 1}.bn3.running_var" in sd and f"layer{stage}.{n}.bn1.weight" not in sd
        assert f"layer{stage}.0.downsample.0.weight" in sd and f"layer{stage}.0.downsample.1.num_batches_tracked" in sd
    assert tuple(sd["fc.weight"].shape) == (512, 512 * 7 * 7)
    assert {"conv1.weight", "bn1.running_mean", "prelu.weight", "bn2.weight", "features.weight"} <= set(sd)


def test_iresnet18_state_dict_round_trip(iresnet18: IResNet, tmp_path: Path) -> None:
    src, dst = tmp_path / "backbone.pth", tmp_path / "r18.ckpt"
    # as arcface_torch saves it after DataParallel training: "module." prefixes
    torch.save(OrderedDict(("module." + k, v) for k, v in iresnet18.state_dict().items()), src)
    assert import_state_dict(src, dst, "iresnet18") == dst
    model, spec, extra = load_checkpoint(dst, expect_arch="iresnet18")
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(model(x)[0], iresnet18(x)[0])
    assert (spec.height, spec.width, spec.mean, spec.scale, spec.color) == (112, 112, 127.5, 127.5, "RGB")
    card = ModelCard.from_dict(extra["card"])
    assert (card.template, card.layout, card.height, card.width, card.embedding_size) == ("arcface", "NHWC", 112,
                                                                                          112, 512)
    assert card.mean == (127.5,) and card.std == (127.5,) and card.arch == "iresnet18"
    assert read_card(dst) == card


@pytest.mark.parametrize("arch", ["mobilefacenet", "sphere20"])
def test_sphereface_family_round_trip(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = _randomise_bn(build(arch))
    torch.save({"epoch": 3, "net_state_dict": net.state_dict()}, tmp_path / "port.ckpt")
    dst = import_state_dict(tmp_path / "port.ckpt", tmp_path / "out.ckpt", arch)
    model, spec, extra = load_checkpoint(dst, expect_arch=arch)
    x = torch.randn(2, 3, 112, 96)
    with torch.no_grad():
        assert torch.equal(model(x)[0], net(x)[0])
    card = ModelCard.from_dict(extra["card"])
    assert (card.height, card.width, card.template, card.std, card.layout) == (112, 96, "sphereface", (128.0,),
                                                                                 "NHWC")
    assert (spec.nhwc, spec.scale, extra["epoch"]) == ((112, 96, 3), 128.0, 3)


def test_pickle_only_file_needs_trust(iresnet18: IResNet, tmp_path: Path) -> None:
    src = tmp_path / "with_object.pt"
    torch.save({"state_dict": iresnet18.state_dict(), "args": NotAllowListed()}, src)
    with pytest.raises(CheckpointError) as exc:
        import_state_dict(src, tmp_path / "no.ckpt", "iresnet18")
    line = _one_line(exc)
    assert TRUST_HINT in line and "NotAllowListed" in line and "\x1b" not in line
    assert not (tmp_path / "no.ckpt").exists()
    import_state_dict(src, tmp_path / "yes.ckpt", "iresnet18", trust_pickle=True)
    assert load_checkpoint(tmp_path / "yes.ckpt")[0].fc.weight.shape == (512, 25088)


def test_plain_pickle_with_foreign_global_refused(tmp_path: Path) -> None:
    src = tmp_path / "evil.pkl"
    with open(src, "wb") as f:  # pickle protocol 2, what torch.load's legacy reader also takes
        pickle.dump({"w": NotAllowListed()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="--trust-pickle") as exc:
        import_state_dict(src, tmp_path / "out.ckpt", "mobilefacenet")
    _one_line(exc)


@pytest.mark.parametrize("content,match", [(b"not a checkpoint at all", "not a torch.save file"),
                                           (b"", "cannot read checkpoint")])
def test_foreign_bytes_one_line(tmp_path: Path, content: bytes, match: str) -> None:
    src = tmp_path / "junk.pth"
    src.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as exc:
        import_state_dict(src, tmp_path / "out.ckpt", "iresnet18")
    _one_line(exc)


def test_wrong_arch_one_line(iresnet18: IResNet, tmp_path: Path) -> None:
    src = tmp_path / "r18.pth"
    torch.save(iresnet18.state_dict(), src)
    with pytest.raises(CheckpointError, match="weights do not fit 'iresnet34'") as exc:
        import_state_dict(src, tmp_path / "out.ckpt", "iresnet34")
    assert "missing" in _one_line(exc)
    with pytest.raises(CheckpointError, match="weights do not fit 'mobilefacenet'") as exc:
        import_state_dict(src, tmp_path / "out.ckpt", "mobilefacenet")
    assert "unexpected" in _one_line(exc)
    with pytest.raises(CheckpointError, match="cannot import arch 'resnet18'"):
        import_state_dict(src, tmp_path / "out.ckpt", "resnet18")
    with pytest.raises(MissingInputError):
        import_state_dict(tmp_path / "absent.pth", tmp_path / "out.ckpt", "iresnet18")


def test_reshaped_tensor_one_line(iresnet18: IResNet, tmp_path: Path) -> None:
    sd = dict(iresnet18.state_dict())
    sd["fc.weight"] = sd["fc.weight"][:256]
    torch.save(sd, tmp_path / "bad.pth")
    shape = r"1 of other shapes: 'fc.weight \[256, 25088\] vs \[512, 25088\]'"
    with pytest.raises(CheckpointError, match=shape) as exc:
        import_state_dict(tmp_path / "bad.pth", tmp_path / "out.ckpt", "iresnet18")
    _one_line(exc)


@pytest.mark.realdata
def test_real_mobilefacenet_checkpoint_imports_weights_only(tmp_path: Path) -> None:
    if not MFN_CKPT.is_file():
        pytest.skip("../shared/data not found: real-data test skipped")
    # the legacy pickle holds only an OrderedDict of tensors and an int: the weights-only reader takes it
    payload = torch.load(MFN_CKPT, map_location="cpu", weights_only=True)
    assert payload["epoch"] == 68
    dst = import_state_dict(MFN_CKPT, tmp_path / "mfn.ckpt", "mobilefacenet")
    model, spec, extra = load_checkpoint(dst, expect_arch="mobilefacenet")
    assert extra["epoch"] == 68 and extra["source"] == MFN_CKPT.name
    card = ModelCard.from_dict(extra["card"])
    assert (card.height, card.width, card.template, card.mean, card.std) == (112, 96, "sphereface", (127.5,),
                                                                              (128.0,))
    assert sum(v.numel() for v in model.state_dict().values()) == 1_019_186  # parameters + BN buffers
    sd = payload["net_state_dict"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    with torch.no_grad():
        (emb,) = model(torch.zeros(1, 3, 112, 96))
    assert emb.shape == (1, 128) and torch.isfinite(emb).all()
