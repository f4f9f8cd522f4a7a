"""The Ray engine (``--engine ray``): helper logic (no Ray needed), then real LFW faces through ``infer`` and
``align`` on a local 2-worker Ray instance, byte-identical to the local engine, with resume and failures.

One Ray session serves the whole module (Ray's start-up is the slow part) and is shut down at the end; the CLI
test joins it with ``--address`` instead of starting another.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faceembed.engines import check_engine
from faceembed.engines.ray import session as ray_engine
from faceembed.engines.ray.session import plan_blocks, plan_workers, raise_record
from faceembed.errors import BackendUnavailableError, FaceembedError, ShapeMismatchError

# Ray Data's own DataContext warns about its deprecated settings when it copies the context; not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HAVE_DATA = (SHARED / "lfw" / "lfw_landmark.txt").is_file() and (SHARED / "weights").is_dir()
try:
    import ray  # noqa: F401

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False


def real_ray(test):
    """Mark a test as needing ../shared/data and Ray, skipping it with a clear reason when either is absent."""
    test = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install 'faceembed[ray]')")(test)
    test = pytest.mark.skipif(not HAVE_DATA, reason="../shared/data not found: real-data Ray test skipped")(test)
    return pytest.mark.realdata(test)


# ---- helper logic, no Ray needed ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("cpus", "workers", "threads", "expected"),
    [
        (2, None, None, (2, 1.0, 1)),  # default: one worker per CPU, one thread each
        (2, 1, None, (1, 2.0, 2)),  # one worker gets every CPU as intra-op threads
        (2, 2, None, (2, 1.0, 1)),
        (2, 4, None, (4, 0.5, 1)),  # more workers than CPUs: fractional reservations, all scheduled
        (16, None, 4, (4, 4.0, 4)),  # --threads 4: one worker per 4 CPUs
        (64, 8, None, (8, 8.0, 8)),
    ],
)
def test_plan_workers(cpus, workers, threads, expected):
    assert plan_workers(cpus, workers, threads) == expected


def test_plan_blocks_balances_and_bounds():
    assert plan_blocks(1, 2) == 1
    assert plan_blocks(10, 2) == 8  # at least 4 blocks per worker when there are enough items
    assert plan_blocks(13233, 2, 16) == 828
    assert plan_blocks(414, 2, 16) == 26


def test_check_engine_refuses_bad_options():
    check_engine("local")
    check_engine("ray", "auto", 3)
    with pytest.raises(FaceembedError, match="--engine"):
        check_engine("spark")
    with pytest.raises(FaceembedError, match="need --engine ray"):
        check_engine("local", None, 2)
    with pytest.raises(FaceembedError, match="--num-workers"):
        check_engine("ray", None, 0)


def test_missing_ray_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(BackendUnavailableError, match=r"pip install 'faceembed\[ray\]'") as info:
        ray_engine.import_ray()
    assert "\n" not in info.value.one_line()


def test_worker_errors_come_back_typed():
    record = {"input": "3.bin", **ray_engine.error_record(ShapeMismatchError("holds 2 items", "x/3.bin"))}
    with pytest.raises(ShapeMismatchError, match="x/3.bin: holds 2 items"):
        raise_record(json.loads(json.dumps(record)))
    with pytest.raises(FaceembedError, match="odd"):
        raise_record({"error": "odd", "kind": "NotAnErrorClass"})


# ---- real data on a shared local Ray instance ---------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster():
    with ray_engine.ray_session(num_cpus=2) as ray:
        yield ray


@pytest.fixture(scope="module")
def lfw_work(tmp_path_factory):
    """MobileFaceNet as ONNX and 320 real LFW faces in 20 tensor files of 16."""
    from faceembed.batch.tobin import tobin_lfw
    from faceembed.convert.torch_state import import_checkpoint
    from faceembed.export.onnx_export import export_onnx

    work = tmp_path_factory.mktemp("ray")
    import_checkpoint(SHARED / "weights" / "mobilefacenet_casia_112x96.ckpt", work / "mfn.pt")
    tobin_lfw(SHARED / "lfw", work / "bins", batch_size=16, limit=320, progress=False)
    x = np.fromfile(work / "bins" / "0.bin", dtype=np.float32).reshape(-1, 112, 96, 3)
    export_onnx(work / "mfn.pt", work / "mfn.onnx", x)
    return work


def _files(folder: Path, pattern: str = "*") -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob(pattern))
            if p.is_file() and not p.name.startswith(".")}


@real_ray
def test_infer_ray_matches_local_resumes_and_skips(ray_cluster, lfw_work):
    from faceembed.batch.infer import infer_files
    from faceembed.engines.ray.infer import infer_files_ray

    w = lfw_work
    local = infer_files(w / "mfn.onnx", w / "bins", w / "local", progress=False)
    ray_run = infer_files_ray(w / "mfn.onnx", w / "bins", w / "ray", progress=False, num_workers=2)
    assert (ray_run.engine, ray_run.workers, ray_run.files_done, ray_run.images) == ("ray", 2, 20, 320)
    assert ray_run.images == local.images and ray_run.calls == local.calls
    assert set(ray_run.stage_seconds) == {"read", "model", "write"} and ray_run.wall_images_per_s > 0
    outputs = _files(w / "local", "*_output_*.bin")
    assert len(outputs) == 20 and outputs == _files(w / "ray", "*_output_*.bin"), "byte-identical outputs"
    assert (w / "ray" / "outputs.json").read_bytes() == (w / "local" / "outputs.json").read_bytes()

    # resume: only the missing outputs are redone, to the same bytes
    for name in ("3_output_0.bin", "17_output_0.bin"):
        (w / "ray" / name).unlink()
    again = infer_files_ray(w / "mfn.onnx", w / "bins", w / "ray", progress=False, num_workers=2)
    assert (again.files_done, again.files_skipped) == (2, 18)
    assert _files(w / "ray", "*_output_*.bin") == outputs

    # a bad input: stop raises its typed error, skip lists it like the local engine
    bad = w / "bad"
    shutil.copytree(w / "bins", bad)
    (bad / "5.bin").write_bytes(b"\0" * 100)
    with pytest.raises(ShapeMismatchError, match="5.bin"):
        infer_files_ray(w / "mfn.onnx", bad, w / "bad_stop", progress=False, num_workers=2)
    skip_ray = infer_files_ray(w / "mfn.onnx", bad, w / "bad_ray", on_error="skip", progress=False, num_workers=2)
    infer_files(w / "mfn.onnx", bad, w / "bad_local", on_error="skip", progress=False)
    assert (skip_ray.files_done, skip_ray.files_failed) == (19, 1)
    assert (w / "bad_ray" / "skipped.txt").read_text() == (w / "bad_local" / "skipped.txt").read_text()
    assert _files(w / "bad_ray", "*_output_*.bin") == _files(w / "bad_local", "*_output_*.bin")


@real_ray
def test_align_ray_matches_local_resumes_and_skips(ray_cluster, tmp_path):
    from faceembed.data.images import list_images
    from faceembed.data.lfw import read_landmarks
    from faceembed.engines.ray.align import align_dataset_ray
    from faceembed.faces.align_files import align_dataset

    subset = tmp_path / "images"
    subset.mkdir()
    for person in ("Aaron_Eckhart", "Abdullah_Gul", "Zico", "Colin_Powell"):
        (subset / person).symlink_to(SHARED / "lfw" / "images" / person)
    bad = subset / "Zz_Broken"
    bad.mkdir()
    (bad / "Zz_Broken_0001.jpg").write_bytes(b"not a jpeg")
    marks = read_landmarks(SHARED / "lfw" / "lfw_landmark.txt")
    rels = list_images(subset)
    assert len(rels) > 200
    with pytest.raises(FaceembedError, match="Zz_Broken_0001.jpg"):
        align_dataset_ray(subset, marks, rels, tmp_path / "stop", workers=2, progress=False)
    local = align_dataset(subset, marks, rels, tmp_path / "local", workers=1, progress=False, on_error="skip")
    got = align_dataset_ray(subset, marks, rels, tmp_path / "ray", workers=2, progress=False, on_error="skip")
    assert (got.aligned, got.fallback, len(got.failed)) == (local.aligned, local.fallback, 1)
    assert _files(tmp_path / "ray") == _files(tmp_path / "local"), "PNGs, skipped.txt, contact sheet identical"
    (tmp_path / "ray" / "Zico" / "Zico_0002.png").unlink()
    again = align_dataset_ray(subset, marks, rels, tmp_path / "ray", workers=2, progress=False, on_error="skip")
    assert (again.aligned, again.skipped) == (1, len(rels) - 2)
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")


@real_ray
def test_cli_joins_a_running_cluster(ray_cluster, lfw_work):
    from faceembed.batch.infer import infer_files

    if not (lfw_work / "local" / "outputs.json").is_file():
        infer_files(lfw_work / "mfn.onnx", lfw_work / "bins", lfw_work / "local", progress=False)
    address = ray_cluster.get_runtime_context().gcs_address
    out = lfw_work / "cli"
    proc = subprocess.run([sys.executable, "-m", "faceembed", "infer", "--model", str(lfw_work / "mfn.onnx"),
                           "--input", str(lfw_work / "bins"), "--output", str(out), "--engine", "ray",
                           "--address", address, "--num-workers", "2", "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert (summary["engine"], summary["files_done"]) == ("ray", 20)
    assert _files(out, "*_output_*.bin") == _files(lfw_work / "local", "*_output_*.bin")
    refused = subprocess.run([sys.executable, "-m", "faceembed", "infer", "--model", "m.onnx", "--input", "x",
                              "--output", "o", "--num-workers", "2"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "need --engine ray" in refused.stderr


@real_ray
def test_embed_ray_matches_local(ray_cluster, lfw_work, tmp_path):
    from faceembed.data.images import list_images
    from faceembed.data.lfw import read_landmarks
    from faceembed.engines.ray.embed import embed_images_ray
    from faceembed.faces.embed import FaceModel, embed_images

    subset = tmp_path / "images"
    subset.mkdir()
    for person in ("Aaron_Eckhart", "Abdullah_Gul", "Zico", "Colin_Powell"):
        (subset / person).symlink_to(SHARED / "lfw" / "images" / person)
    rels = list_images(subset)[:150]
    marks = {r: m for r, m in read_landmarks(SHARED / "lfw" / "lfw_landmark.txt").items() if r in set(rels)}
    del marks[rels[3]]  # no landmarks: fails on both engines, shifting the model batches after it
    local = embed_images(subset, rels, FaceModel.load(lfw_work / "mfn.onnx", threads=2), marks, workers=1)
    got = embed_images_ray(subset, rels, lfw_work / "mfn.onnx", marks, num_workers=2)
    assert got.relpaths == local.relpaths and got.failed == local.failed == [(rels[3], "no landmarks")]
    assert got.embeddings.dtype == np.float32 and np.array_equal(got.embeddings, local.embeddings)
