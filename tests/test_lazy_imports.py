"""torch (1-2.4 s to import) is loaded only where a network runs on PyTorch or is converted: not by ``import
faceembed``, the CLI's start-up and help, nor, once the built-in models' checkpoints are in the cache, by the
ONNX Runtime / OpenVINO paths of the photo commands (reading a checkpoint's card, finding the built-in model,
MTCNN on ``ort`` / ``auto``). Each check runs in a fresh interpreter."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LFW = SHARED / "lfw" / "images"
NO_TORCH = "\nassert 'torch' not in sys.modules, 'torch was imported'\n"


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """The session's shared temporary cache (the converted checkpoints of other test files), never ~/.cache."""
    monkeypatch.setenv("FACEEMBED_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _fresh(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` (then the no-torch assertion) in a new interpreter with this test's environment."""
    r = subprocess.run([sys.executable, "-c", "import sys\n" + code + NO_TORCH], capture_output=True, text=True,
                       timeout=300, env=dict(os.environ))
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_cli_start_up_and_help_import_no_torch():
    modules = ["faceembed", "faceembed.cli", "faceembed.models", "faceembed.models.checkpoint",
               "faceembed.models.card_io", "faceembed.models.registry", "faceembed.models.dlib_weights",
               "faceembed.models.mtcnn_weights", "faceembed.models.to_onnx", "faceembed.faces.quality",
               "faceembed.faces.enrollment", "faceembed.faces.embed", "faceembed.faces.pipeline",
               "faceembed.faces.detect", "faceembed.faces.detect_files", "faceembed.inference.backends",
               "faceembed.inference.autoselect"]
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    for argv in (["--help"], ["enroll", "--help"], ["detect", "--help"]):
        code += (f"sys.argv = ['faceembed', *{argv!r}]\nfrom faceembed.cli import main\n"
                 "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n")
    assert "--model" in _fresh(code).stdout


def test_a_checkpoint_card_is_read_without_torch_once_read(tmp_path):
    import torch

    from faceembed.errors import CheckpointError
    from faceembed.models.card_io import read_card
    from faceembed.models.checkpoint import MNIST_INPUT, read_checkpoint, read_header, save_checkpoint
    from faceembed.models.dlib_weights import dlib_card

    path = tmp_path / "m.pt"
    card = dlib_card().replace(name="tiny")
    save_checkpoint(path, "mnist_classifier", {"embedding_size": 2}, torch.nn.Linear(2, 2), MNIST_INPUT,
                    extra={"card": card.to_dict()})
    assert read_card(path) == card  # the first read validates the file with torch and caches its header
    header = read_header(path)
    assert header == json.loads(json.dumps({k: v for k, v in read_checkpoint(path).items() if k != "state_dict"}))
    r = _fresh(f"from faceembed.models.card_io import read_card\nprint(read_card({str(path)!r}).name)")
    assert r.stdout.strip() == "tiny"
    # other bytes at the same path are read again (the header is keyed by content), junk is still refused
    save_checkpoint(path, "mnist_classifier", {"embedding_size": 2}, torch.nn.Linear(2, 2), MNIST_INPUT,
                    extra={"card": card.replace(name="other").to_dict()})
    assert read_card(path).name == "other"
    path.write_bytes(b"junk")
    with pytest.raises(CheckpointError):
        read_header(path)


@pytest.mark.skipif(importlib.util.find_spec("face_recognition_models") is None,
                    reason="the 'face_recognition_models' package (dlib's model files) is not installed")
def test_the_builtin_model_is_found_without_torch_and_not_rewritten():
    from faceembed.models.dlib_weights import dlib_resnet_checkpoint

    path = dlib_resnet_checkpoint()  # converted (torch) on first use
    stamp = path.stat().st_mtime_ns
    r = _fresh("from faceembed.models.card_io import read_card\nfrom faceembed.models.registry import resolve_model\n"
               "print(resolve_model('dlib-resnet'), read_card('dlib-resnet').name)")
    assert r.stdout.split() == [str(path), "dlib-resnet"]
    assert path.stat().st_mtime_ns == stamp  # the card matched: the checkpoint was not written again


@pytest.mark.realdata
@pytest.mark.skipif(not LFW.is_dir(), reason="../shared/data not found: real-data test skipped")
@pytest.mark.skipif(importlib.util.find_spec("mtcnn") is None, reason="the 'mtcnn' package (weights) is not installed")
def test_mtcnn_on_onnx_runtime_and_openvino_needs_no_torch_once_exported():
    from faceembed.faces.detect import prepare_onnx
    from faceembed.models.mtcnn_weights import mtcnn_checkpoint

    prepare_onnx(mtcnn_checkpoint())  # convert and export (torch) on first use
    photo = LFW / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    r = _fresh("from faceembed.data.images import read_image_rgb\nfrom faceembed.faces.detect import MTCNNDetector\n"
               f"img = read_image_rgb({str(photo)!r})\n"
               "print(*(len(MTCNNDetector(backend=b).detect(img)) for b in ('ort', 'auto')))")
    counts = [int(n) for n in r.stdout.split()]
    assert len(counts) == 2 and min(counts) >= 1, counts
