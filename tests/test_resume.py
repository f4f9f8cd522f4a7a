"""Kill ``infer``, ``train`` and ``tobin`` mid-run (SIGKILL), rerun them, and get outputs bit-identical to an
uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from faceembed import models
from faceembed.data.tensorfiles import write_bin, write_manifest
from faceembed.export.onnx_export import export_onnx
from faceembed.files import temp_prefix
from faceembed.models.checkpoint import save_checkpoint
from test_runtime import SPEC, TinyNet

N_FILES = 240
MNIST = Path(__file__).resolve().parents[1] / "data" / "mnist"


@pytest.fixture
def tiny_onnx(tmp_path, monkeypatch):
    monkeypatch.setitem(models.MODELS, "tiny_test", "test_runtime:TinyNet")
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "tiny.pt", "tiny_test", {"width": 4}, TinyNet(4), SPEC)
    x = np.random.default_rng(1).standard_normal((32, 8, 6, 3)).astype(np.float32)
    export_onnx(tmp_path / "tiny.pt", tmp_path / "tiny.onnx", x)
    return tmp_path / "tiny.onnx"


def _inputs(folder):
    rng = np.random.default_rng(2)
    files = []
    for i in range(N_FILES):
        write_bin(folder / f"{i}_image.bin", rng.standard_normal((4, 8, 6, 3)).astype(np.float32))
        files.append({"name": f"{i}_image.bin", "count": 4})
    write_manifest(folder, {"dtype": "float32", "item_shape": [8, 6, 3], "files": files})


def _cmd(model, inp, out):
    return [sys.executable, "-m", "faceembed", "infer", "--model", str(model), "--input", str(inp),
            "--output", str(out), "--loop", "40", "--threads", "1", "--no-progress"]


def _outputs(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("[!.]*_output_*.bin"))}


def test_killed_infer_resumes_to_identical_outputs(tiny_onnx, tmp_path):
    _inputs(tmp_path / "in")
    subprocess.run(_cmd(tiny_onnx, tmp_path / "in", tmp_path / "ref"), check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(_cmd(tiny_onnx, tmp_path / "in", tmp_path / "out"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600  # a loaded machine may take long to start the process: wait for its first file
    while time.time() < deadline and not list((tmp_path / "out").glob("*_output_0.bin")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = len(list((tmp_path / "out").glob("*_output_0.bin")))
    assert 0 < done_before < N_FILES, "the kill must land mid-run"
    rerun = subprocess.run(_cmd(tiny_onnx, tmp_path / "in", tmp_path / "out"), check=True, capture_output=True,
                           text=True, timeout=300)
    assert '"files_skipped"' in rerun.stdout
    assert _outputs(tmp_path / "out") == _outputs(tmp_path / "ref")
    assert not list((tmp_path / "out").glob(".*tmp*")), "the rerun sweeps the killed writer's temp file"
    assert len(_outputs(tmp_path / "out")) == 2 * N_FILES


# ---- train: SIGKILL after a state.pt exists, resume, and match an uninterrupted run bit for bit ---------------

TRAIN_EPOCHS = 5


def _train_cmd(out):
    return [sys.executable, "-m", "faceembed", "train", "--out", str(out), "--quick", "--epochs", str(TRAIN_EPOCHS),
            "--limit", "384", "--batch-size", "64", "--widths", "8,16,16", "--threads", "1", "--no-progress"]


def _metrics(folder):
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # wall time is the one honest difference


@pytest.mark.slow
def test_killed_train_resumes_bit_identical(tmp_path):
    from faceembed.models.checkpoint import read_checkpoint

    env = {**os.environ, "FACEEMBED_MNIST": str(MNIST)}
    ref = subprocess.Popen(_train_cmd(tmp_path / "ref"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cut = subprocess.Popen(_train_cmd(tmp_path / "cut"), env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    log = tmp_path / "cut" / "metrics.jsonl"
    while time.time() < deadline and cut.poll() is None and not (log.exists() and log.read_text().strip()):
        time.sleep(0.01)  # metrics.jsonl gets its first line right after state.pt of epoch 1 is in place
    cut.send_signal(signal.SIGKILL)
    cut.wait(timeout=30)
    state = torch.load(tmp_path / "cut" / "state.pt", weights_only=True)
    assert 1 <= state["epoch"] < TRAIN_EPOCHS, "the kill must land after a checkpoint and before the end"
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    resumed = subprocess.run([*_train_cmd(tmp_path / "cut"), "--resume"], env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a = read_checkpoint(tmp_path / "ref" / "checkpoint.pt")
    b = read_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert _metrics(tmp_path / "cut") == _metrics(tmp_path / "ref")
    assert [r["epoch"] for r in _metrics(tmp_path / "cut")] == list(range(1, TRAIN_EPOCHS + 1))
    assert not list((tmp_path / "cut").glob(".*tmp*"))


# ---- tobin: SIGKILL mid-run, rerun: byte-identical folder; partial files redone; bad images skipped ----------

def _tobin_cmd(out, *extra):
    return [sys.executable, "-m", "faceembed", "tobin", "mnist", "--out", str(out), "--limit", "1536",
            "--batch-size", "8", "--no-progress", *extra]


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _folder_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_killed_tobin_resumes_to_identical_files(tmp_path):
    env = {**os.environ, "FACEEMBED_MNIST": str(MNIST)}
    subprocess.run(_tobin_cmd(tmp_path / "ref"), env=env, check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(_tobin_cmd(tmp_path / "out"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600  # kill at the first file: the run cannot finish first on a slow machine either
    while time.time() < deadline and proc.poll() is None and not list((tmp_path / "out").glob("*_image.bin")):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = len(list((tmp_path / "out").glob("*_image.bin")))
    assert 0 < before < 192, "the kill must land mid-run"
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["complete"] is False
    rerun = subprocess.run(_tobin_cmd(tmp_path / "out"), env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["files_skipped"] >= before - 1 and summary["files_done"] + summary["files_skipped"] == 192
    assert _folder_bytes(tmp_path / "out") == _folder_bytes(tmp_path / "ref")


def test_tobin_redoes_partial_files_and_refuses_other_settings(tmp_path):
    from faceembed.batch.tobin import write_batches
    from faceembed.errors import FaceembedError

    x = np.random.default_rng(0).random((10, 4, 3, 1), dtype=np.float32)
    y = np.arange(10)
    first = write_batches(x, y, tmp_path, 3, extra={"dataset": "t"})
    assert (first.files, first.files_done, first.files_skipped) == (4, 4, 0)
    ref = _folder_bytes(tmp_path)
    (tmp_path / "1_image.bin").write_bytes(ref["1_image.bin"][:20])  # torn by another tool
    (tmp_path / "2_image.bin").unlink()
    dead = _dead_pid()
    (tmp_path / (temp_prefix(tmp_path / "3_image.bin", pid=dead) + "abcd.tmp.bin")).write_bytes(b"half")  # killed
    (tmp_path / ".3_image.bin.abcd.tmp.bin").write_bytes(b"other")  # another program's: kept
    again = write_batches(x, y, tmp_path, 3, extra={"dataset": "t"})
    assert (again.files_done, again.files_skipped) == (2, 2)
    assert (tmp_path / ".3_image.bin.abcd.tmp.bin").read_bytes() == b"other"
    (tmp_path / ".3_image.bin.abcd.tmp.bin").unlink()
    assert _folder_bytes(tmp_path) == ref
    with pytest.raises(FaceembedError, match="other settings"):
        write_batches(x[::-1].copy(), y, tmp_path, 3, extra={"dataset": "other"})


def _fake_lfw(root):
    from photo_trees import write_two_people

    write_two_people(root, "lfw_landmark.txt")
    (root / "pairs.txt").write_text("1\nAnn 1 2\nAnn 1 Bob 2\n")
    good = (root / "images" / "Bob" / "Bob_0002.jpg").read_bytes()
    (root / "images" / "Bob" / "Bob_0002.jpg").write_bytes(good[: len(good) // 2])  # truncated JPEG


def test_tobin_lfw_on_error_skip(tmp_path):
    from faceembed.batch.tobin import tobin_lfw
    from faceembed.errors import InputFormatError

    _fake_lfw(tmp_path / "lfw")
    with pytest.raises(InputFormatError, match="Bob_0002.jpg"):
        tobin_lfw(tmp_path / "lfw", tmp_path / "stop", workers=1, progress=False)
    summary = tobin_lfw(tmp_path / "lfw", tmp_path / "bins", workers=1, progress=False, on_error="skip")
    assert (summary.files, summary.files_done, summary.images, summary.images_failed) == (2, 2, 2, 1)
    skipped = (tmp_path / "bins" / "skipped.txt").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith("Bob/Bob_0002.jpg\t") and "truncated JPEG" in skipped[0]
    manifest = json.loads((tmp_path / "bins" / "manifest.json").read_text())
    assert [f["items"] for f in manifest["files"]] == [["Ann/Ann_0001.jpg"], ["Ann/Ann_0002.jpg"]]
    rerun = tobin_lfw(tmp_path / "lfw", tmp_path / "bins", workers=1, progress=False, on_error="skip")
    assert (rerun.files_done, rerun.files_skipped, rerun.images_failed) == (0, 2, 1)
