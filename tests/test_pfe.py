"""PFE: uncertainty head, full model, ONNX export, P x K sampler, head training."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from faceembed.models.checkpoint import FACE_INPUT_112x96, load_checkpoint, save_checkpoint
from faceembed.models.pfe_head import PFEModel, UncertaintyHead
from faceembed.models.to_onnx import torch_to_onnx
from faceembed.training.pfe_fit import PFETrainConfig, PKSampler, make_validation_pairs, train_head


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_head_init_values() -> None:
    head = UncertaintyHead(32, 8)
    assert head.gamma.item() == pytest.approx(1e-4)
    assert head.beta.item() == pytest.approx(-7.0)
    assert head.bn2.weight is None and head.bn2.bias is None  # affine=False
    assert head.fc1.bias is None and head.fc2.bias is None
    head.train()
    out = head(torch.randn(16, 32))
    assert out.shape == (16, 8)
    # gamma * (BN output ~ N(0,1)) is ~1e-4, so log sigma^2 ~ log(exp(-7) + 1e-6)
    assert torch.allclose(out, torch.full_like(out, math.log(math.exp(-7.0) + 1e-6)), atol=1e-3)


def test_head_log_epsilon_is_stable() -> None:
    head = UncertaintyHead(4, 3)
    with torch.no_grad():
        head.beta.fill_(-100.0)
        low = head.eval()(torch.randn(5, 4))
        head.beta.fill_(100.0)
        high = head(torch.randn(5, 4))
    assert torch.allclose(low, torch.full_like(low, math.log(1e-6)), atol=1e-4)
    assert torch.isfinite(high).all() and torch.allclose(high, torch.full_like(high, 100.0), atol=1e-3)


def test_pfe_model_outputs_and_checkpoint(tmp_path: Path) -> None:
    model = PFEModel().eval()
    assert model.output_names == ("mu", "sigma_sq")
    assert model.head.fc1.in_features == 512 * 7 * 6
    keys = model.state_dict().keys()
    assert any(k.startswith("backbone.") for k in keys) and any(k.startswith("head.") for k in keys)
    x = torch.randn(3, 3, 112, 96)
    with torch.no_grad():
        mu, sigma_sq = model(x)
    assert mu.shape == sigma_sq.shape == (3, 128)
    assert torch.allclose(mu.norm(dim=1), torch.ones(3), atol=1e-5)
    assert (sigma_sq > 0).all()
    config = {"backbone": "mobilefacenet", "backbone_config": {"embedding_size": 128},
              "head_in_features": 21504}
    spec = dataclasses.replace(FACE_INPUT_112x96, output_names=model.output_names)
    save_checkpoint(tmp_path / "pfe.pt", "pfe", config, model, spec, extra={"fold": 0})
    loaded, spec2, extra = load_checkpoint(tmp_path / "pfe.pt", expect_arch="pfe")
    assert spec2.output_names == ("mu", "sigma_sq") and extra == {"fold": 0}
    with torch.no_grad():
        mu2, s2 = loaded(x)
    assert torch.equal(mu, mu2) and torch.equal(sigma_sq, s2)


def test_pfe_model_other_backbone() -> None:
    model = PFEModel(backbone="sphere20", backbone_config={"embedding_size": 64}).eval()
    with torch.no_grad():
        mu, sigma_sq = model(torch.randn(2, 3, 112, 96))
    assert mu.shape == sigma_sq.shape == (2, 64)


def test_pfe_onnx_export_dynamic_batch(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = PFEModel().eval()
    path = tmp_path / "pfe.onnx"
    torch_to_onnx(model, torch.randn(1, 3, 112, 96), path, "input", model.output_names, {0: "batch"}, opset=17)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["mu", "sigma_sq"]
    x = torch.randn(3, 3, 112, 96)
    mu, sigma_sq = sess.run(None, {"input": x.numpy()})
    with torch.no_grad():
        tmu, ts = model(x)
    assert mu.shape == (3, 128) and sigma_sq.shape == (3, 128)
    np.testing.assert_allclose(mu, tmu.numpy(), atol=1e-4)
    np.testing.assert_allclose(sigma_sq, ts.numpy(), rtol=1e-3)


def test_pk_sampler_properties() -> None:
    counts = [1, 2, 3, 4, 5, 9, 2, 1, 7, 3]  # people 0 and 7 have one image: never sampled
    labels = np.repeat(np.arange(len(counts)), counts)
    sampler = PKSampler(labels, people_per_batch=4, images_per_person=4, seed=1)
    seen: set[int] = set()
    for _ in range(2):  # 8 eligible people, 4 per batch: two batches make one epoch
        batch = next(sampler)
        assert len(set(batch.tolist())) == len(batch)  # no duplicate images
        people, per = np.unique(labels[batch], return_counts=True)
        assert len(people) == 4 and (per >= 2).all() and (per <= 4).all()
        for p, n in zip(people, per, strict=True):
            assert n == min(4, counts[p])
        seen |= set(people.tolist())
    assert seen == {p for p, c in enumerate(counts) if c >= 2}
    with pytest.raises(ValueError):
        PKSampler(np.array([0, 1, 2]), 2, 2)


def test_validation_pairs() -> None:
    labels = np.repeat(np.arange(5), [2, 3, 10, 2, 4])
    rows = make_validation_pairs(labels, max_genuine_per_person=5, seed=0)
    gen, imp = rows[rows[:, 2] == 1], rows[rows[:, 2] == 0]
    assert len(gen) == 1 + 3 + 5 + 1 + 5 and len(imp) == len(gen)
    assert (labels[gen[:, 0]] == labels[gen[:, 1]]).all()
    assert (labels[imp[:, 0]] != labels[imp[:, 1]]).all()


def _synthetic(n_people: int, per: int, dim: int, d: int, seed: int) -> tuple[np.ndarray, ...]:
    """mu = normalised(centre + noise); the feature map carries the noise level (so sigma is learnable)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_people, d))
    labels = np.repeat(np.arange(n_people), per)
    noise = rng.uniform(0.1, 1.5, size=len(labels))
    mu = centres[labels] + noise[:, None] * rng.standard_normal((len(labels), d))
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    fmaps = rng.standard_normal((len(labels), dim))
    fmaps[:, :4] = noise[:, None] * 3
    return fmaps.astype(np.float16), labels, mu.astype(np.float32)


def test_train_head_loss_decreases() -> None:
    fmaps, labels, mu = _synthetic(40, 4, 64, 16, seed=0)
    vf, vl, vm = _synthetic(12, 4, 64, 16, seed=1)
    cfg = PFETrainConfig(people_per_batch=16, images_per_person=4, lr=1e-2, max_steps=60, eval_every=20,
                         patience=10)
    state, hist = train_head(fmaps, labels, mu, cfg, val=(vf, vl, vm), seed=0)
    losses = hist["loss"]
    assert len(losses) == 60 and all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    assert [r["step"] for r in hist["val"]] == [0, 20, 40, 60]
    assert hist["best_metric"] == max(r["auc"] for r in hist["val"])
    head = UncertaintyHead(64, 16)
    head.load_state_dict(state)
    assert head.beta.item() > -7.0  # sigma grew from its tiny initial value


def test_flip_augment_draws_mirror_rows() -> None:
    """Identical mirror rows change nothing (the coin has its own generator); different ones do; without
    ``flip_augment`` the mirror rows are ignored."""
    fmaps, labels, mu = _synthetic(20, 4, 32, 8, seed=0)
    other_f, _, other_mu = _synthetic(20, 4, 32, 8, seed=5)
    on = PFETrainConfig(people_per_batch=8, images_per_person=4, lr=1e-2, max_steps=15, flip_augment=True)
    off = PFETrainConfig(people_per_batch=8, images_per_person=4, lr=1e-2, max_steps=15)
    plain = train_head(fmaps, labels, mu, off, seed=0)[1]["loss"]
    assert train_head(fmaps, labels, mu, on, seed=0, mirrored=(fmaps, mu))[1]["loss"] == plain
    assert train_head(fmaps, labels, mu, off, seed=0, mirrored=(other_f, other_mu))[1]["loss"] == plain
    assert train_head(fmaps, labels, mu, on, seed=0, mirrored=(other_f, other_mu))[1]["loss"] != plain


def test_head_ensemble_is_the_mean_log_sigma_of_its_members(tmp_path: Path) -> None:
    from faceembed.models.pfe_head import HeadEnsemble

    ens = HeadEnsemble(32, 8, heads=2).eval()
    with torch.no_grad():
        for i, head in enumerate(ens.heads):
            head.gamma.fill_(0.5 * (i + 1))
            head.beta.fill_(-3.0 - i)
    x = torch.randn(6, 32)
    members = torch.stack([h(x) for h in ens.heads]).double()
    assert torch.allclose(ens(x).double(), members.mean(0), atol=1e-6)
    assert not torch.allclose(members[0], members[1])
    model = PFEModel(heads=2).eval()
    path = tmp_path / "pfe2.pt"
    spec = dataclasses.replace(FACE_INPUT_112x96, output_names=PFEModel.output_names)
    save_checkpoint(path, "pfe", {"heads": 2}, model, spec)
    loaded, _, _ = load_checkpoint(path, expect_arch="pfe")
    assert isinstance(loaded.head, HeadEnsemble) and len(loaded.head.heads) == 2
