"""Reruns never mix stale results: running twice into one folder with another model or other settings is refused
in one line naming what differs (exit 2 for the CLI) and leaves the folder as it was; ``--overwrite`` redoes the
run and the folder then holds only the new run's outputs; a rerun of the same resumes. ``detect`` killed
mid-run and rerun writes the same landmark file as an uninterrupted run, and removes ``OUT.parts``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from faceembed.errors import FaceembedError
from faceembed.fingerprint import RECORD
from test_cli_errors import assert_one_line_error
from test_mtcnn import HAS_MTCNN, LFW, needs_lfw
from test_resume import MNIST, tiny_onnx  # noqa: F401  (a fixture)
from test_train_pfe import CONFIG, tiny_lfw  # noqa: F401  (a fixture)


def run_cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faceembed", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "FACEEMBED_MNIST": str(MNIST), **(env or {})})


def tree(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """{relpath: bytes} of every file under ``folder`` but those named in ``skip``."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in skip}


def names(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


# ---- infer --------------------------------------------------------------------------------------------------

@pytest.fixture
def two_onnx(tiny_onnx, tmp_path):  # noqa: F811
    """Two models with the same input: the tiny ONNX and a copy with other weights."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(tiny_onnx)
    for init in m.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32 and a.size > 1:
            init.CopyFrom(numpy_helper.from_array((a * 1.5).astype(np.float32), init.name))
    other = tmp_path / "other.onnx"
    onnx.save(m, other)
    return tiny_onnx, other


def _infer_inputs(folder: Path, n: int = 6) -> None:
    from faceembed.data.tensorfiles import write_bin, write_manifest

    rng = np.random.default_rng(3)
    files = []
    for i in range(n):
        write_bin(folder / f"{i}_image.bin", rng.standard_normal((2, 8, 6, 3)).astype(np.float32))
        files.append({"name": f"{i}_image.bin", "count": 2})
    write_manifest(folder, {"dtype": "float32", "item_shape": [8, 6, 3], "files": files})


def _infer(model, inp, out, *extra):
    return run_cli("infer", "--model", str(model), "--input", str(inp), "--output", str(out), "--threads", "1",
                   "--no-progress", *extra)


STATS = ("infer_summary.json", "outputs.json")  # latency figures differ between runs


def test_infer_rerun_other_model_refused_overwrite_redoes_same_resumes(two_onnx, tmp_path):
    a, b = two_onnx
    _infer_inputs(tmp_path / "in")
    assert _infer(a, tmp_path / "in", tmp_path / "out").returncode == 0
    before = tree(tmp_path / "out")
    refused = _infer(b, tmp_path / "in", tmp_path / "out")
    assert_one_line_error(refused, "model.", "--overwrite")
    assert tree(tmp_path / "out") == before, "a refused run leaves the folder as it was"
    other_fmt = _infer(a, tmp_path / "in", tmp_path / "out", "--outfmt", "TXT")
    assert_one_line_error(other_fmt, "outfmt")
    assert tree(tmp_path / "out") == before

    redo = _infer(b, tmp_path / "in", tmp_path / "out", "--overwrite")
    assert redo.returncode == 0, redo.stderr
    assert _infer(b, tmp_path / "in", tmp_path / "fresh").returncode == 0
    assert names(tmp_path / "out") == names(tmp_path / "fresh")
    assert tree(tmp_path / "out", STATS + (RECORD,)) == tree(tmp_path / "fresh", STATS + (RECORD,)), \
        "only the new model's outputs"
    again = _infer(b, tmp_path / "in", tmp_path / "out")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["files_skipped"] == 6


# ---- align --------------------------------------------------------------------------------------------------

def _random_backbone(path: Path, seed: int) -> Path:
    """A MobileFaceNet checkpoint with random weights: another backbone than the test's."""
    from faceembed.models import build
    from faceembed.models.checkpoint import FACE_INPUT_112x96, save_checkpoint

    torch.manual_seed(seed)
    save_checkpoint(path, "mobilefacenet", {"embedding_size": 128}, build("mobilefacenet", embedding_size=128),
                    FACE_INPUT_112x96)
    return path


def _photos(root: Path) -> Path:
    from photo_trees import write_two_people

    write_two_people(root, "marks.txt")
    return root


def _align(root, out, *extra):
    return run_cli("align", "--images", str(root / "images"), "--landmarks", str(root / "marks.txt"), "--out",
                   str(out), "--workers", "1", "--no-progress", *extra)


def test_align_rerun_other_size_refused_overwrite_redoes_same_resumes(tmp_path):
    root = _photos(tmp_path / "lfw")
    assert _align(root, tmp_path / "out").returncode == 0
    before = tree(tmp_path / "out")
    refused = _align(root, tmp_path / "out", "--size", "112x112")
    assert_one_line_error(refused, "size", "--overwrite")
    assert tree(tmp_path / "out") == before
    redo = _align(root, tmp_path / "out", "--size", "112x112", "--overwrite")
    assert redo.returncode == 0, redo.stderr
    assert _align(root, tmp_path / "fresh", "--size", "112x112").returncode == 0
    assert tree(tmp_path / "out") == tree(tmp_path / "fresh"), "only the 112x112 faces"
    for png in (tmp_path / "out").rglob("*_0001.png"):
        assert cv2.imread(str(png)).shape[:2] == (112, 112)
    again = _align(root, tmp_path / "out", "--size", "112x112")
    assert again.returncode == 0 and json.loads(again.stdout)["skipped"] == 4, again.stdout


# ---- train-pfe ----------------------------------------------------------------------------------------------

def test_train_pfe_rerun_other_backbone_refused_overwrite_redoes_same_resumes(tiny_lfw, tmp_path):  # noqa: F811
    from faceembed.models.checkpoint import read_checkpoint
    from faceembed.training.train_pfe import train_pfe_crossfold

    root, backbone = tiny_lfw
    other = _random_backbone(tmp_path / "other_mfn.pt", seed=7)
    out = tmp_path / "pfe"
    kw = {"progress": False, "workers": 1}
    train_pfe_crossfold(backbone, root, root / "lfw_landmark.txt", out, CONFIG, **kw)
    before = tree(out)
    with pytest.raises(FaceembedError, match="backbone") as exc:
        train_pfe_crossfold(other, root, root / "lfw_landmark.txt", out, CONFIG, **kw)
    assert "\n" not in exc.value.one_line()
    assert tree(out) == before, "a refused run adds nothing (no feature cache of the other backbone)"

    train_pfe_crossfold(other, root, root / "lfw_landmark.txt", out, CONFIG, overwrite=True, **kw)
    fresh = tmp_path / "fresh"
    train_pfe_crossfold(other, root, root / "lfw_landmark.txt", fresh, CONFIG, **kw)
    assert names(out) == names(fresh), "only the new run's heads and feature cache"
    for head in (out / "heads").iterdir():
        assert read_checkpoint(head)["extra"]["made_by"]["backbone"]["name"] == "other_mfn.pt"
    again = train_pfe_crossfold(other, root, root / "lfw_landmark.txt", out, CONFIG, **kw)
    assert all(f.get("reused") for f in again["folds"])


def test_train_pfe_cli_refuses_other_backbone(tiny_lfw, tmp_path):  # noqa: F811
    from faceembed.training.train_pfe import train_pfe_crossfold

    root, backbone = tiny_lfw
    out = tmp_path / "pfe"
    train_pfe_crossfold(backbone, root, root / "lfw_landmark.txt", out, CONFIG, progress=False, workers=1)

    before = tree(out)
    other = _random_backbone(tmp_path / "other.pt", seed=8)
    proc = run_cli("train-pfe", "--backbone", str(other), "--lfw", str(root), "--out", str(out), "--no-progress")
    assert_one_line_error(proc, "backbone", "--overwrite")
    assert tree(out) == before


# ---- bench --------------------------------------------------------------------------------------------------

def test_bench_work_folder_other_weights_refused_overwrite_redoes_same_resumes(tmp_path, monkeypatch):
    from faceembed.bench.models import prepare_model
    from faceembed.models import build
    from faceembed.models.checkpoint import MNIST_INPUT, save_checkpoint

    monkeypatch.chdir(tmp_path)  # MNIST_TRAINED paths are relative: none here, so random weights from seed 0
    monkeypatch.setenv("FACEEMBED_MNIST", str(MNIST))
    torch.set_num_threads(1)
    work = tmp_path / "bench"
    first = prepare_model("mnist", work)
    before = tree(work)
    (tmp_path / "runs" / "bench").mkdir(parents=True)
    torch.manual_seed(5)
    save_checkpoint(tmp_path / "runs" / "bench" / "mnist_trained.pt", "mnist_classifier", {"embedding_size": 64},
                    build("mnist_classifier", embedding_size=64), MNIST_INPUT)
    with pytest.raises(FaceembedError, match="weights") as exc:
        prepare_model("mnist", work)
    assert "\n" not in exc.value.one_line()
    assert tree(work) == before
    redone = prepare_model("mnist", work, overwrite=True)
    assert redone.checkpoint.read_bytes() == (tmp_path / "runs" / "bench" / "mnist_trained.pt").read_bytes()
    assert names(work) == {f"mnist/{n}" for n in ("mnist.pt", "mnist.onnx", "mnist.int8.onnx",
                                                  "mnist.int8-full.onnx", RECORD)} | (names(work) - {
        n for n in names(work) if n.startswith("mnist/")}), names(work)
    stamp = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()}
    again = prepare_model("mnist", work)
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()} == stamp, "resumed: nothing redone"
    assert again.onnx_fp32 == first.onnx_fp32


def test_bench_cli_bad_settings_refused_before_work(tmp_path):
    proc = run_cli("bench", "--models", "mnist", "--precision", "fp64", "--work-dir", str(tmp_path / "w"))
    assert_one_line_error(proc, "--precision")
    assert not (tmp_path / "w").exists()


# ---- tobin --------------------------------------------------------------------------------------------------

def _tobin(out, *extra):
    return run_cli("tobin", "mnist", "--out", str(out), "--batch-size", "16", "--no-progress", *extra)


@pytest.mark.parametrize("first, second, needle", [
    (["--limit", "64"], ["--limit", "96"], "count"),
    (["--limit", "64", "--shuffle-seed", "1"], ["--limit", "64", "--shuffle-seed", "2"], "shuffle_seed"),
])
def test_tobin_mnist_other_settings_refused_same_resumes(tmp_path, first, second, needle):
    assert _tobin(tmp_path / "bins", *first).returncode == 0
    before = tree(tmp_path / "bins")
    refused = _tobin(tmp_path / "bins", *second)
    assert_one_line_error(refused, needle)
    assert tree(tmp_path / "bins") == before, "never mixed"
    again = _tobin(tmp_path / "bins", *first)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["files_skipped"] == summary["files"] and summary["files_done"] == 0
    assert tree(tmp_path / "bins") == before


def test_tobin_lfw_other_model_refused(tiny_lfw, tmp_path):  # noqa: F811

    root, backbone = tiny_lfw
    other = _random_backbone(tmp_path / "other.pt", seed=3)

    def tobin(model):
        return run_cli("tobin", "lfw", "--data", str(root), "--out", str(tmp_path / "bins"), "--model", str(model),
                       "--no-progress")

    assert tobin(backbone).returncode == 0
    before = tree(tmp_path / "bins")
    assert_one_line_error(tobin(other), "model")
    assert tree(tmp_path / "bins") == before
    again = tobin(backbone)
    assert again.returncode == 0 and json.loads(again.stdout)["files_done"] == 0, again.stderr


# ---- detect: killed mid-run, rerun, same landmarks; other settings refused ----------------------------------

needs_mtcnn = pytest.mark.skipif(not HAS_MTCNN, reason="the 'mtcnn' package (weights) is not installed")


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    return {"FACEEMBED_CACHE": str(tmp_path_factory.getbasetemp() / "cache")}


def _lfw_links(folder: Path, n: int) -> Path:
    """``n`` real LFW photos (the first people alphabetically) as symlinks in a fresh folder."""
    people = sorted(p for p in (LFW / "images").iterdir() if p.is_dir())
    count = 0
    for person in people:
        for src in sorted(person.glob("*.jpg")):
            (folder / person.name).mkdir(parents=True, exist_ok=True)
            (folder / person.name / src.name).symlink_to(src)
            count += 1
            if count == n:
                return folder
    return folder


def _detect(images, out, env, *extra):
    return [sys.executable, "-m", "faceembed", "detect", str(images), "--out", str(out), "--workers", "1",
            "--no-progress", *extra], {**os.environ, **env}


@pytest.mark.slow
@pytest.mark.realdata
@needs_lfw
@needs_mtcnn
def test_killed_detect_resumes_to_identical_landmarks(tmp_path, cache_env):
    images = _lfw_links(tmp_path / "images", 320)  # 10 chunks of 32
    cmd, env = _detect(images, tmp_path / "ref.txt", cache_env)
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    assert not (tmp_path / "ref.txt.parts").exists()
    cmd, env = _detect(images, tmp_path / "cut.txt", cache_env)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "cut.txt.parts"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and len(list(parts.glob("chunk_*.json"))) < 2:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    saved = len(list(parts.glob("chunk_*.json")))
    assert 0 < saved < 10 and not (tmp_path / "cut.txt").exists(), "the kill must land mid-run"
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert (tmp_path / "cut.txt").read_bytes() == (tmp_path / "ref.txt").read_bytes()
    assert not parts.exists(), "OUT.parts is removed once OUT is written"
    summary = json.loads(rerun.stdout)
    assert summary["images"] == 320


@pytest.mark.slow  # converts the MTCNN weights into a fresh cache first (~30 s)
@pytest.mark.realdata
@needs_lfw
@needs_mtcnn
def test_detect_rerun_other_settings_refused_while_parts_exist(tmp_path, cache_env):
    images = _lfw_links(tmp_path / "images", 4)
    parts = tmp_path / "lm.txt.parts"
    parts.mkdir()
    from faceembed.faces.detect import DetectorConfig
    from faceembed.faces.detect_files import claim_parts

    claim_parts(tmp_path / "lm.txt", images, sorted(r.relative_to(images).as_posix()
                                                       for r in images.rglob("*.jpg")), DetectorConfig(),
                "largest", "ort")
    cmd, env = _detect(images, tmp_path / "lm.txt", cache_env, "--keep", "center")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert_one_line_error(proc, "keep", "--overwrite")
    cmd, env = _detect(images, tmp_path / "lm.txt", cache_env, "--keep", "center", "--overwrite")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not parts.exists() and json.loads(proc.stdout)["detected"] == 4


# ---- enroll: a gallery rewritten never keeps the skip list of an earlier enrollment --------------------------

def test_enroll_rerun_drops_stale_skip_list(tiny_lfw, tmp_path):  # noqa: F811
    import shutil

    from faceembed.faces.people import enroll_folder

    root, backbone = tiny_lfw
    people = tmp_path / "people"
    for person in ("P00", "P01"):
        shutil.copytree(root / "images" / person, people / person)
    (people / "P00" / "download.jpg").write_bytes(b"<html><body>sign in</body></html>")
    out = tmp_path / "gallery.npz"
    first = enroll_folder(people, backbone, out, workers=1, detector="none")
    assert first["failed"] == 1 and (tmp_path / "gallery.skipped.txt").is_file()
    (people / "P00" / "download.jpg").unlink()
    again = enroll_folder(people, backbone, out, workers=1, detector="none")
    assert again["failed"] == 0 and again["images"] == 6
    assert not (tmp_path / "gallery.skipped.txt").exists(), "no stale skip list beside the new gallery"
