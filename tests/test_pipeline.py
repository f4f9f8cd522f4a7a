"""The overlapped photo pipeline gives what the stage-by-stage path gives; reduced JPEG decoding; greedy NMS;
MTCNN on OpenVINO; the photo paths' auto-selected embedding configuration (ONNX twin of a checkpoint)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from faceembed import models
from faceembed.faces import nms as B
from faceembed.models.checkpoint import InputSpec, save_checkpoint

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LFW = SHARED / "lfw" / "images"
needs_lfw = pytest.mark.skipif(not LFW.is_dir(), reason="../shared/data not found: real-data test skipped")
SPEC = InputSpec(28, 24, 3, mean=127.5, scale=128.0, input_name="input", output_names=("embedding",))


class SmallFaceNet(nn.Module):
    output_names = ("embedding",)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 28 * 24, 16)

    def forward(self, x):
        return (self.fc(torch.relu(self.conv(x)).flatten(1)),)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One temporary cache (MTCNN conversion, ONNX twins, auto choices) and a small face model checkpoint."""
    mp = pytest.MonkeyPatch()
    base = tmp_path_factory.mktemp("pipeline")
    mp.setenv("FACEEMBED_CACHE", str(base / "cache"))
    mp.setitem(models.MODELS, "small_pipeline_test", f"{__name__}:SmallFaceNet")
    torch.manual_seed(0)
    ckpt = base / "small.pt"
    save_checkpoint(ckpt, "small_pipeline_test", {}, SmallFaceNet(), SPEC)
    yield base, ckpt
    mp.undo()


# ---- units ---------------------------------------------------------------------------------------------------

def _nms_reference(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str) -> list[int]:
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(int(i))
        order = [j for j in order if B.overlap(boxes[i], boxes[[j]], method)[0] <= threshold]
    return keep


@pytest.mark.parametrize("method", ["union", "min"])
def test_nms_is_the_greedy_reference(method):
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (300, 2))], axis=1)
    boxes[7] = boxes[8]  # exact duplicates and an empty box too
    boxes[9, 2:] = boxes[9, :2]
    scores = rng.uniform(0, 1, 300)
    for threshold in (0.3, 0.5, 0.7):
        assert B.nms(boxes, scores, threshold, method).tolist() == _nms_reference(boxes, scores, threshold, method)


def test_decode_photo_reduces_only_large_jpegs(tmp_path):
    from faceembed.data.images import read_image_rgb
    from faceembed.faces.pipeline import decode_photo

    yy, xx = np.mgrid[0:2000, 0:3300]
    big = np.stack([(xx // 13) % 256, (yy // 7) % 256, ((xx + yy) // 29) % 256], axis=2).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "big.jpg"), big[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    img, scale = decode_photo(tmp_path / "big.jpg", max_side=1600)
    assert img.shape == (1000, 1650, 3) and scale == pytest.approx(0.5)
    full = read_image_rgb(tmp_path / "big.jpg")
    half = cv2.resize(full, (1650, 1000), interpolation=cv2.INTER_AREA)
    assert np.abs(img.astype(float) - half).mean() < 3.0  # libjpeg's DCT scaling ~ an area resize
    small, s1 = decode_photo(tmp_path / "big.jpg", max_side=0)
    assert s1 == 1.0 and np.array_equal(small, full)
    Image.fromarray(big[:400, :500]).save(tmp_path / "small.jpg")
    img, s2 = decode_photo(tmp_path / "small.jpg")
    assert s2 == 1.0 and np.array_equal(img, read_image_rgb(tmp_path / "small.jpg"))


def test_reduced_decoding_applies_exif_orientation(tmp_path):
    from faceembed.data.images import read_image_rgb
    from faceembed.faces.pipeline import decode_photo

    im = Image.fromarray(np.full((1800, 3400, 3), 120, np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    im.save(tmp_path / "rot.jpg", exif=exif)
    img, scale = decode_photo(tmp_path / "rot.jpg", max_side=1600)
    assert read_image_rgb(tmp_path / "rot.jpg").shape[:2] == (3400, 1800)
    assert img.shape[:2] == (1700, 900) and scale == pytest.approx(0.5)


# ---- real photos: the pipeline against the stage-by-stage path --------------------------------------------------

def _photos(tmp: Path) -> tuple[Path, list[str]]:
    """24 LFW photos in person folders, one corrupt file and one photo without a face."""
    import shutil

    root = tmp / "photos"
    rels = []
    for p in sorted(LFW.glob("*/*.jpg"))[::400][:24]:
        (root / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, root / p.parent.name / p.name)
        rels.append(f"{p.parent.name}/{p.name}")
    (root / "Broken").mkdir()
    (root / "Broken" / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cv2.imwrite(str(root / "Broken" / "blank.png"), np.full((200, 200, 3), 90, np.uint8))
    return root, rels[:12] + ["Broken/a.jpg", "Broken/blank.png"] + rels[12:]


@needs_lfw
@pytest.mark.realdata
def test_pipeline_equals_stage_by_stage_path(env):
    from faceembed.faces.detect_files import detect_files
    from faceembed.faces.embed import FaceModel, align_for_card, embed_images
    from faceembed.faces.pipeline import PhotoOptions, run_pipeline

    base, ckpt = env
    root, rels = _photos(base)
    model = FaceModel.load(ckpt, backend="torch", threads=1)
    det = detect_files(root, rels, backend="ort", workers=1)
    crops = align_for_card(root, det.landmarks, list(det.landmarks), model.card, 1, "skip", [])
    ref, _ = model.embed(crops)
    for workers in (1, 2):
        res = run_pipeline(root, rels, model, PhotoOptions(detector_backend="ort"), workers=workers, chunk=5)
        kept = [p for p in res.photos if p.ok]
        assert [p.rel for p in kept] == list(det.landmarks)
        assert [p.rel for p in res.photos] == rels
        for p in kept:
            assert np.array_equal(p.landmarks, det.landmarks[p.rel]) and np.array_equal(p.box, det.boxes[p.rel])
        np.testing.assert_allclose(res.embeddings, ref, rtol=0, atol=1e-5)
        assert {p.rel for p in res.photos if not p.ok} == {r for r, _ in det.failed}
    out = embed_images(root, rels, model, workers=2, detector_backend="ort")
    old = embed_images(root, out.relpaths, model, landmarks=det.landmarks, workers=1)
    assert out.relpaths == old.relpaths and sorted(out.failed) == sorted(det.failed)
    np.testing.assert_allclose(out.embeddings, old.embeddings, rtol=0, atol=1e-5)
    whole = embed_images(root, rels, model, workers=1, no_face="whole")
    assert whole.whole == ["Broken/blank.png"] and "Broken/a.jpg" in {r for r, _ in whole.failed}


@needs_lfw
@pytest.mark.realdata
def test_mtcnn_on_openvino_finds_the_same_faces(env):
    from faceembed.data.images import read_image_rgb
    from faceembed.faces.detect import MTCNNDetector

    images = [read_image_rgb(p) for p in sorted(LFW.glob("*/*.jpg"))[::300][:40]]
    ref = MTCNNDetector(backend="ort").detect_many(images)
    for backend in ("ort+openvino", "openvino"):
        got = MTCNNDetector(backend=backend).detect_many(images)
        assert [len(f) for f in got] == [len(f) for f in ref]
        for a, b in zip(got, ref, strict=True):
            for fa, fb in zip(a, b, strict=True):
                assert np.abs(fa.landmarks - fb.landmarks).max() < 0.05 and abs(fa.score - fb.score) < 1e-4


@needs_lfw
@pytest.mark.realdata
def test_faces_batch_equals_one_photo_at_a_time(env):
    from faceembed.faces.analyzer import FaceAnalyzer
    from faceembed.faces.embed import FaceModel

    base, ckpt = env
    fa = FaceAnalyzer(FaceModel.load(ckpt, backend="torch", threads=1))
    photos = [str(p) for p in sorted(LFW.glob("*/*.jpg"))[::700][:10]]
    batch = fa.faces_batch(photos, chunk=4)
    for photo, faces in zip(photos, batch, strict=True):
        one = fa.faces(photo)
        assert len(one) == len(faces) >= 1
        for a, b in zip(one, faces, strict=True):
            # OpenVINO's R-Net / O-Net outputs depend on the batch they ran in by float noise (1e-6)
            np.testing.assert_allclose(a.box, b.box, rtol=0, atol=1e-3)
            np.testing.assert_allclose(a.landmarks, b.landmarks, rtol=0, atol=1e-3)
            np.testing.assert_allclose(a.embedding, b.embedding, rtol=0, atol=1e-4)
    assert fa._mtcnn is not None  # the detector stays warm between calls


def test_photo_paths_choose_a_measured_cached_configuration(env, monkeypatch):
    from faceembed.faces.embed import FaceModel
    from faceembed.inference import autoselect
    from faceembed.inference.backends import load_backend

    _, ckpt = env
    model = FaceModel.load(ckpt, threads=1)
    assert model.config["source"] == "measured for the photo paths"
    choice = autoselect.choose_model_config(ckpt, 1, lambda: pytest.fail("a cached choice must not measure"))
    assert choice["file"] == model.config["file"] and choice["backend"] == model.config["backend"]
    files = {c["file"] for c in choice["candidates"]}
    twin = autoselect.onnx_twin(ckpt)
    assert files == {str(ckpt), str(twin)}
    ok = [c for c in choice["candidates"] if c.get("accuracy_ok")]
    assert choice["ms_per_image"] == min(c["ms_per_image"] for c in ok)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 28, 24, 3)).astype(np.float32)
    np.testing.assert_allclose(load_backend(twin, "ort").run(x)[0], load_backend(ckpt, "torch").run(x)[0],
                               rtol=1e-4, atol=1e-4)
    assert autoselect.cache_path().parent == Path(autoselect.cache_path().parent)  # under FACEEMBED_CACHE
    assert str(autoselect.cache_path()).startswith(str(env[0] / "cache"))
