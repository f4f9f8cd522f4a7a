"""Every choice-type option of every command, given a bad value, is refused before any work: exit code 2,
exactly one ``faceembed: error:`` line on stderr naming the option, no traceback. Options given to a dataset or
mode they do not apply to are refused the same way. ``import`` of a pickle-only checkpoint needs --trust-pickle.

Path arguments point at empty placeholder files: a command that read them before checking its options would
fail with another message (naming the file), so each case also proves the check comes first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_cli_errors import assert_one_line_error


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faceembed", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> Path:
    """Placeholders: empty model files, an input folder, a one-person photo folder, empty pairs / gallery."""
    from PIL import Image

    t = tmp_path_factory.mktemp("choices")
    for name in ("model.onnx", "model.pt", "pairs.txt", "gallery.npz", "src.ckpt"):
        (t / name).write_bytes(b"")
    (t / "in").mkdir()
    (t / "in" / "0.bin").write_bytes(np.zeros(4, np.float32).tobytes())
    (t / "photos" / "Ann").mkdir(parents=True)
    Image.new("RGB", (40, 40), (120, 90, 60)).save(t / "photos" / "Ann" / "a.png")
    (t / "feats").mkdir()
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 192])
    graph = helper.make_graph([helper.make_node("Flatten", ["x"], ["y"])], "tiny", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), t / "tiny.onnx")
    return t


BAD = "bogus"
INFER = ["infer", "--model", "model.onnx", "--input", "in", "--output", "out"]
ENROLL = ["enroll", "--images", "photos", "--model", "model.pt", "--out", "g.npz"]
IDENTIFY = ["identify", "--gallery", "gallery.npz", "--images", "photos"]
EVALID = ["evaluate-identification", "photos", "--model", "model.pt"]
DETECT = ["detect", "photos", "--out", "lm.txt"]
ALIGN = ["align", "--images", "photos", "--out", "aligned"]
VERIFY = ["verify", "--pairs", "pairs.txt", "--features", "feats"]
QUANT = ["quantize", "model.onnx", "--calibrate", "in", "--out", "q.onnx"]
# a valid one-input graph: import reads the graph before it checks the card flags (cheap on a tiny file)
IMPORT = ["import", "tiny.onnx", "--out", "m.onnx", "--color", "RGB", "--mean", "127.5", "--std", "128",
          "--template", "none"]  # the bad option comes last and wins
PHOTOS = ["tobin", "photos", "--images", "photos", "--out", "bins"]

# (command line without the bad option, the option, the text the error must contain)
CASES = [
    (["train", "--out", "run"], "--dataset", "dataset"),
    (["train", "--out", "run"], "--loss", "--loss"),
    (QUANT, "--method", "--method"),
    (QUANT, "--scheme", "--scheme"),
    (["bench"], "--models", "--models"),
    (["bench"], "--backends", "--backends"),
    (["bench"], "--precision", "--precision"),
    (["bench"], "--batch", "--batch"),
    (["tobin", "mnist", "--out", "bins"], "--split", "--split"),
    (["tobin", "lfw", "--data", "feats", "--out", "bins"], "--on-error", "--on-error"),
    (PHOTOS, "--on-error", "--on-error"),
    (PHOTOS, "--detector", "--detector"),
    (PHOTOS, "--no-face", "--no-face"),
    (PHOTOS, "--keep", "--keep"),
    (INFER, "--outfmt", "--outfmt"),
    (INFER, "--backend", "--backend"),
    (INFER, "--precision", "--precision"),
    (INFER, "--provider", "--provider"),
    (INFER, "--on-error", "--on-error"),
    (INFER, "--engine", "--engine"),
    (ALIGN, "--size", "--size"),
    (ALIGN, "--on-error", "--on-error"),
    (ALIGN, "--engine", "--engine"),
    (VERIFY, "--metric", "--metric"),
    (VERIFY, "--flip-mode", "--flip-mode"),
    (DETECT, "--keep", "--keep"),
    (DETECT, "--on-error", "--on-error"),
    (DETECT, "--format", "--format"),
    (DETECT, "--backend", "--backend"),
    (ENROLL, "--keep", "--keep"),
    (ENROLL, "--on-error", "--on-error"),
    (ENROLL, "--detector", "--detector"),
    (ENROLL, "--no-face", "--no-face"),
    (ENROLL, "--engine", "--engine"),
    (IDENTIFY, "--method", "--method"),
    (IDENTIFY, "--metric", "--metric"),
    (IDENTIFY, "--keep", "--keep"),
    (IDENTIFY, "--detector", "--detector"),
    (IDENTIFY, "--no-face", "--no-face"),
    (EVALID, "--keep", "--keep"),
    (EVALID, "--detector", "--detector"),
    (EVALID, "--no-face", "--no-face"),
    (IMPORT, "--layout", "--layout"),
    (IMPORT, "--color", "--color"),
    (IMPORT, "--template", "--template"),
    (IMPORT, "--size", "size"),
    (["import", "src.ckpt", "--out", "m.pt"], "--arch", "arch"),
    (["compare", "photos/Ann/a.png", "photos/Ann/a.png", "--model", "model.pt"], "--detector", "detector"),
    (["calibrate", "--model", "model.pt", "--data", "feats"], "--far", "--far"),
    (["cluster", "photos", "--out", "p.json"], "--detector", "--detector"),
    (["cluster", "photos", "--out", "p.json"], "--no-face", "--no-face"),
    (["cluster", "photos", "--out", "p.json"], "--algorithm", "--algorithm"),
]


def _id(case) -> str:
    args, option, _ = case
    return f"{args[0]}{'-' + args[1] if args[0] == 'tobin' else ''}{option}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_bad_choice_is_one_line_exit_2(places, case):
    args, option, needle = case
    proc = run_cli(*args, option, BAD, cwd=places)
    assert_one_line_error(proc, needle, BAD)
    assert not (places / "out").exists() and not (places / "lm.txt.parts").exists(), "refused before any work"


def test_every_command_with_a_choice_is_covered():
    proc = subprocess.run([sys.executable, "-m", "faceembed", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    import re

    listed = set(re.findall(r"│ ([a-z][a-z0-9-]+) {2,}", proc.stdout))
    covered = {args[0] for args, _, _ in CASES}
    no_choices = {"export", "accuracy", "train-pfe", "card", "demo", "models", "serve", "collection",
                  "people", "evaluate-clustering"}
    assert listed - covered - no_choices == set(), f"commands with no case here: {listed - covered - no_choices}"


@pytest.mark.parametrize("args, needle", [
    (["tobin", "mnist", "--out", "bins", "--flip"], "--flip"),
    (["tobin", "mnist", "--out", "bins", "--model", "model.pt"], "--model"),
    (["tobin", "lfw", "--out", "bins", "--shuffle-seed", "1"], "--shuffle-seed"),
    (["tobin", "lfw", "--out", "bins", "--detector", "none"], "--detector"),
    (["tobin", "photos", "--images", "photos", "--out", "bins", "--flip"], "--flip"),
    (["tobin", "photos", "--images", "photos", "--out", "bins", "--split", "train"], "--split"),
    (["demo", BAD], "unknown"),
    (["tobin", BAD, "--out", "bins"], "unknown"),
], ids=lambda v: "-".join(v) if isinstance(v, list) else None)
def test_option_that_does_not_apply_is_refused(places, args, needle):
    proc = run_cli(*args, cwd=places)
    assert_one_line_error(proc, needle)
    assert not (places / "bins").exists()


def test_bench_limit_options_refused_before_work(places):
    proc = run_cli("bench", "--batch", "0", cwd=places)
    assert_one_line_error(proc, "--batch")
    proc = run_cli("bench", "--models", "", cwd=places)
    assert_one_line_error(proc, "--models")


# ---- import: a pickle-only checkpoint needs --trust-pickle --------------------------------------------------

def test_import_pickle_only_checkpoint_needs_trust(tmp_path):
    import argparse

    import torch

    from faceembed.models.mobilefacenet import MobileFaceNet

    torch.manual_seed(0)
    src = tmp_path / "pickled.ckpt"
    # argparse.Namespace is importable everywhere but outside torch's weights-only allow-list
    torch.save({"epoch": 2, "args": argparse.Namespace(lr=0.1), "net_state_dict": MobileFaceNet().state_dict()}, src)
    refused = run_cli("import", str(src), "--out", str(tmp_path / "m.pt"), cwd=tmp_path)
    assert_one_line_error(refused, "--trust-pickle", "pickled.ckpt")
    assert not (tmp_path / "m.pt").exists()
    ok = run_cli("import", str(src), "--out", str(tmp_path / "m.pt"), "--trust-pickle", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "m.pt").is_file() and '"mobilefacenet"' in ok.stdout
