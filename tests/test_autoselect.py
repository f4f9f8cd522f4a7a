"""``--backend auto``: candidates per file, fastest accurate choice, cache per file and machine."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from faceembed import models
from faceembed.errors import BackendUnavailableError
from faceembed.export.onnx_export import export_onnx
from faceembed.inference import autoselect
from faceembed.inference.backends import load_backend
from faceembed.models.checkpoint import InputSpec, save_checkpoint

SPEC = InputSpec(8, 6, 3, mean=127.5, scale=128.0, input_name="input", output_names=("embedding",))


class SmallNet(nn.Module):
    output_names = ("embedding",)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 6, 5)

    def forward(self, x):
        return (self.fc(torch.relu(self.conv(x)).flatten(1)),)


@pytest.fixture
def small_onnx(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEEMBED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(models.MODELS, "small_auto_test", f"{__name__}:SmallNet")
    torch.manual_seed(0)
    ckpt = tmp_path / "small.pt"
    save_checkpoint(ckpt, "small_auto_test", {}, SmallNet(), SPEC)
    onnx_path = tmp_path / "small.onnx"
    x = np.random.default_rng(0).uniform(-1, 1, (32, 8, 6, 3)).astype(np.float32)
    export_onnx(ckpt, onnx_path, x)
    return ckpt, onnx_path


def test_candidates_follow_the_file(small_onnx):
    ckpt, onnx_path = small_onnx
    assert autoselect.candidates(ckpt) == [("torch", "fp32"), ("torch", "bf16")]
    assert ("ort", "fp32") in autoselect.candidates(onnx_path)
    assert ("openvino", "bf16") in autoselect.candidates(onnx_path)
    assert all(p == "bf16" for _, p in autoselect.candidates(onnx_path, "bf16"))


def test_choice_is_fastest_accurate_and_cached(small_onnx, monkeypatch):
    _, onnx_path = small_onnx
    choice = autoselect.choose_backend(onnx_path, threads=1, batch=4)
    ok = [c for c in choice["candidates"] if c.get("accuracy_ok")]
    assert ok and choice["ms_per_image"] == min(c["ms_per_image"] for c in ok)
    assert all(c["min_cosine"] >= autoselect.COSINE_MIN for c in ok)
    cache = json.loads(autoselect.cache_path().read_text())
    assert len(cache) == 1 and next(iter(cache)).startswith(autoselect.file_hash(onnx_path))

    def no_measuring(*args, **kwargs):
        raise AssertionError("a cached choice must not be measured again")

    monkeypatch.setattr(autoselect, "measure_choice", no_measuring)
    assert autoselect.choose_backend(onnx_path, threads=1, batch=4)["backend"] == choice["backend"]
    with pytest.raises(AssertionError, match="measured again"):
        autoselect.choose_backend(onnx_path, threads=1, batch=8)  # another batch size is another choice


def test_auto_backend_runs_and_matches_fp32(small_onnx):
    _, onnx_path = small_onnx
    x = np.random.default_rng(1).uniform(-1, 1, (4, 8, 6, 3)).astype(np.float32)
    auto = autoselect.load_auto(onnx_path, threads=1)
    ref = load_backend(onnx_path, "ort", threads=1)
    a, b = auto.run(x)[0], ref.run(x)[0]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= autoselect.COSINE_MIN


def test_no_accurate_candidate_is_an_error(small_onnx, monkeypatch):
    _, onnx_path = small_onnx
    monkeypatch.setattr(autoselect, "_min_cosine", lambda a, b: 0.5)
    with pytest.raises(BackendUnavailableError, match="no candidate"):
        autoselect.measure_choice(onnx_path, threads=1, batch=2)


def test_damaged_cache_is_ignored(small_onnx):
    _, onnx_path = small_onnx
    autoselect.cache_path().parent.mkdir(parents=True, exist_ok=True)
    autoselect.cache_path().write_text("{not json")
    assert autoselect.cached_choice(onnx_path, 1, 4) is None


def test_infer_auto_measures_on_its_first_input_file(small_onnx, tmp_path):
    from faceembed.batch.infer import infer_files

    _, onnx_path = small_onnx
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    x = np.random.default_rng(2).uniform(0, 255, (6, 8, 6, 3)).astype(np.float32)
    np.save(inputs / "0_image.npy", x)
    summary = infer_files(onnx_path, inputs, tmp_path / "out", outfmt="NPY", backend="auto", threads=1,
                          progress=False)
    assert summary.backend in ("ort", "openvino")
    (entry,) = json.loads(autoselect.cache_path().read_text()).values()
    assert entry["inputs"] == "given", "the user's own rows, not the pseudo-random batch"
    got = np.load(tmp_path / "out" / "0_image_output_0.npy")
    ref = load_backend(onnx_path, "ort", threads=1).run(x)[0]
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= autoselect.COSINE_MIN
