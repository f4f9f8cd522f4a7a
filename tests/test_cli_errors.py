"""Bad input gives one clear line on stderr, exit code 2, no traceback and no partial output."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys

import numpy as np
import pytest

from faceembed.data.tensorfiles import write_bin, write_labels


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faceembed", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("faceembed: error: ")
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_help_lists_every_command():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for cmd in ("train", "export", "tobin", "infer", "accuracy", "demo", "import", "align", "verify", "train-pfe"):
        assert cmd in proc.stdout


def test_missing_model_file(tmp_path):
    proc = run_cli("infer", "--model", str(tmp_path / "none.onnx"), "--input", str(tmp_path),
                   "--output", str(tmp_path / "out"))
    assert_one_line_error(proc, "none.onnx", "not found")


def test_corrupt_onnx_model(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"this is not a protobuf" * 10)
    write_bin(tmp_path / "in" / "0.bin", np.zeros((1, 4), np.float32))
    proc = run_cli("infer", "--model", str(tmp_path / "bad.onnx"), "--input", str(tmp_path / "in"),
                   "--output", str(tmp_path / "out"))
    assert_one_line_error(proc, "bad.onnx", "ONNX")


def test_checkpoint_of_another_kind(tmp_path):
    import torch

    torch.save({"net_state_dict": {}}, tmp_path / "foreign.pt")
    proc = run_cli("export", str(tmp_path / "foreign.pt"), "--out", str(tmp_path / "m.onnx"))
    assert_one_line_error(proc, "foreign.pt", "not a faceembed checkpoint")
    assert not (tmp_path / "m.onnx").exists()


def test_accuracy_files_do_not_pair(tmp_path):
    write_labels(tmp_path / "lab" / "0_label.txt", np.array([1, 2]))
    write_labels(tmp_path / "lab" / "1_label.txt", np.array([1, 2]))
    write_bin(tmp_path / "pred" / "0_image_output_0.bin", np.eye(2, 10, dtype=np.float32))
    proc = run_cli("accuracy", "--labels", str(tmp_path / "lab"), "--predictions", str(tmp_path / "pred"))
    assert_one_line_error(proc, "do not pair up")


def test_accuracy_missing_label_folder(tmp_path):
    proc = run_cli("accuracy", "--labels", str(tmp_path / "nope"), "--predictions", str(tmp_path))
    assert_one_line_error(proc, "nope", "not found")


def test_corrupt_idx_file(tmp_path):
    root = tmp_path / "mnist"
    root.mkdir()
    with gzip.open(root / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, 10, 28, 28) + b"\0" * 100)  # truncated
    with gzip.open(root / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, 10) + b"\0" * 10)
    proc = subprocess.run([sys.executable, "-m", "faceembed", "tobin", "mnist", "--out", str(tmp_path / "bins")],
                          capture_output=True, text=True, timeout=120, env={**_env(), "FACEEMBED_MNIST": str(root)})
    assert_one_line_error(proc, "t10k-images-idx3-ubyte.gz")
    assert not (tmp_path / "bins" / "manifest.json").exists()


def _env() -> dict:
    import os

    return dict(os.environ)


@pytest.mark.parametrize("args", [["tobin", "cifar", "--out", "x"], ["demo", "nothing"]])
def test_unknown_names(tmp_path, args):
    assert_one_line_error(run_cli(*args, cwd=tmp_path), "unknown")


def test_train_resume_from_corrupt_state(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "state.pt").write_bytes(b"PK\x03\x04 torn by a full disk")
    proc = subprocess.run([sys.executable, "-m", "faceembed", "train", "--out", str(tmp_path / "run"), "--resume",
                           "--quick", "--limit", "64", "--widths", "4,4", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert_one_line_error(proc, "state.pt", "cannot read the training state")


def test_tobin_lfw_truncated_jpeg(tmp_path):
    from test_resume import _fake_lfw

    _fake_lfw(tmp_path / "lfw")
    proc = run_cli("tobin", "lfw", "--data", str(tmp_path / "lfw"), "--out", str(tmp_path / "bins"), "--no-progress")
    assert_one_line_error(proc, "Bob_0002.jpg", "truncated JPEG")  # and no libjpeg warning on stderr
    skip = run_cli("tobin", "lfw", "--data", str(tmp_path / "lfw"), "--out", str(tmp_path / "bins"),
                   "--on-error", "skip", "--no-progress")
    assert skip.returncode == 0 and '"images_failed": 1' in skip.stdout, skip.stderr
