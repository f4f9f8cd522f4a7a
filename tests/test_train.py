"""Training: a resumed run is bit-identical to an uninterrupted one; the quick config learns MNIST."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from faceembed.models.checkpoint import load_checkpoint, read_checkpoint
from faceembed.training.train import TrainConfig, train_mnist

TINY = replace(TrainConfig.quick(), epochs=2, limit_train=1024, batch_size=128, warmup_steps=2, widths=[8, 16, 16])


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    train_mnist(TINY, tmp_path / "full", progress=False)
    train_mnist(TINY, tmp_path / "cut", progress=False, stop_after_epoch=1)
    assert json.loads((tmp_path / "cut" / "metrics.jsonl").read_text())["epoch"] == 1
    train_mnist(TINY, tmp_path / "cut", progress=False, resume=True)
    a = read_checkpoint(tmp_path / "full" / "checkpoint.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "cut" / "checkpoint.pt")["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert (tmp_path / "cut" / "curves.png").stat().st_size > 1000


def test_resume_with_other_settings_is_refused(tmp_path):
    from faceembed.errors import CheckpointError

    train_mnist(TINY, tmp_path / "run", progress=False, stop_after_epoch=1)
    with pytest.raises(CheckpointError, match="different settings"):
        train_mnist(replace(TINY, lr=0.5), tmp_path / "run", progress=False, resume=True)


def test_two_d_embedding_plots_features(tmp_path):
    cfg = replace(TINY, epochs=1, embedding_size=2)
    train_mnist(cfg, tmp_path, progress=False)
    assert (tmp_path / "features.png").stat().st_size > 1000
    model, spec, extra = load_checkpoint(tmp_path / "checkpoint.pt", expect_arch="mnist_classifier")
    assert spec.output_names == ("logits", "embedding") and extra["epoch"] == 1


@pytest.mark.slow
def test_quick_config_reaches_098(tmp_path):
    metrics = train_mnist(TrainConfig.quick(), tmp_path, progress=False)
    assert metrics["test_acc"] >= 0.98
