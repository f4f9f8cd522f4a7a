"""MTCNN: box arithmetic, network layout, weight conversion, detection on real LFW photos, the detect CLI."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from faceembed.evaluation.landmarks import mean_normalised_distance
from faceembed.faces import nms as B
from faceembed.models.mtcnn import MTCNN, ONet, PNet, RNet, _same_pad

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LFW = SHARED / "lfw"
HAS_LFW = (LFW / "ldmark_lfw_mtcnncaffe.txt").is_file()
HAS_MTCNN = importlib.util.find_spec("mtcnn") is not None
needs_lfw = pytest.mark.skipif(not HAS_LFW, reason="../shared/data not found: real-data test skipped")
needs_weights = pytest.mark.skipif(not HAS_MTCNN, reason="the 'mtcnn' package (weights) is not installed")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Every test shares one converted checkpoint in a temporary cache (never the user's ~/.cache)."""
    monkeypatch.setenv("FACEEMBED_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


# ---- box arithmetic ---------------------------------------------------------------------------------------

def test_pyramid_scales():
    s = B.pyramid_scales(250, 250, min_face_size=40)
    assert s[0] == pytest.approx(12 / 40)
    assert all(b == pytest.approx(a * 0.709) for a, b in zip(s, s[1:], strict=False))
    assert 250 * s[-1] >= 12 > 250 * s[-1] * 0.709
    assert len(B.pyramid_scales(250, 250, 20)) > len(s)
    assert B.pyramid_scales(10, 300, 20) == []  # shorter side under 12 px at every scale
    with pytest.raises(ValueError):
        B.pyramid_scales(100, 100, 0)


@pytest.mark.parametrize("h,w,size,frac", [(250, 250, 40, 1 / 16), (1000, 1000, 40, 1 / 16), (3000, 4000, 40, 1 / 16),
                                           (1200, 1600, 20, 0.05), (700, 300, 40, 0.2), (1000, 1000, 40, 0.0)])
def test_pyramid_scales_with_a_relative_floor(h, w, size, frac):
    smallest = max(size, frac * min(h, w))  # the direct computation, float64
    first = 12.0 / smallest
    n = int(np.floor(np.log(12.0 / (min(h, w) * first)) / np.log(0.709))) + 1  # levels whose side stays >= 12
    want = [first * 0.709 ** k for k in range(n)]
    got = B.pyramid_scales(h, w, size, 0.709, min_face_fraction=frac)
    assert got == pytest.approx(want, rel=1e-12) and len(got) == n
    assert B.smallest_face(h, w, size, frac) == smallest
    if frac * min(h, w) <= size:  # the floor below min_face_size: exactly the scales without it
        assert got == B.pyramid_scales(h, w, size, 0.709)
    else:  # above it: fewer levels, and P-Net's largest input side at most 12 / frac
        assert len(got) < len(B.pyramid_scales(h, w, size, 0.709))
        assert min(h, w) * got[0] == pytest.approx(12 / frac)
    with pytest.raises(ValueError):
        B.pyramid_scales(h, w, size, 0.709, min_face_fraction=1.0)


def test_min_face_fraction_default_is_one_constant():
    import inspect

    from faceembed.cli import photos
    from faceembed.faces.detect import DetectorConfig
    from faceembed.faces.embed import EmbedOptions
    from faceembed.faces.pipeline import PhotoOptions

    assert B.MIN_FACE_FRACTION == 1 / 16
    for command in (photos.detect, photos.enroll, photos.identify, photos.evaluate_identification):
        assert inspect.signature(command).parameters["min_face_fraction"].default == B.MIN_FACE_FRACTION
    assert DetectorConfig().min_face_fraction == EmbedOptions().min_face_fraction == \
        PhotoOptions().min_face_fraction == B.MIN_FACE_FRACTION
    from faceembed.errors import FaceembedError

    with pytest.raises(FaceembedError, match="--min-face-fraction"):
        DetectorConfig(min_face_fraction=-0.1)


@pytest.mark.parametrize("command", [["detect", "missing", "--out", "lm.txt"],
                                     ["enroll", "--images", "missing", "--out", "g.npz"]])
def test_a_bad_min_face_fraction_is_refused_before_any_work(command, tmp_path):
    from test_cli_errors import assert_one_line_error

    assert_one_line_error(_cli(*command, "--min-face-fraction", "1.5", cwd=tmp_path), "--min-face-fraction")


def test_nms_greedy_union_and_min():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 8, 8]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    keep = B.nms(boxes, scores, 0.5, "union")
    assert keep.tolist() == [3, 0, 2]  # box 1 overlaps box 0 by IoU 0.68; box 3 (inside 0) has IoU 0.36
    keep_min = B.nms(boxes, scores, 0.5, "min")
    assert keep_min.tolist() == [3, 2]  # by intersection / smaller area box 3 suppresses 0 and 1
    assert B.nms(np.zeros((0, 4)), np.zeros(0), 0.5).size == 0


def test_nms_greedy_suppressed_boxes_do_not_suppress():
    # a > b > c in score; a suppresses b; b would suppress c but is gone, so c stays (greedy NMS)
    boxes = np.array([[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]], float)
    assert B.nms(boxes, np.array([3.0, 2.0, 1.0]), 0.3).tolist() == [0, 2]


def test_regress_square_landmarks():
    box = np.array([[10, 20, 29, 59, 0.9]], np.float32)  # 20 wide, 40 high (+1 convention)
    r = B.regress(box, np.array([[0.1, -0.1, 0.0, 0.5]]))
    np.testing.assert_allclose(r[0, :4], [12, 16, 29, 79])
    assert r[0, 4] == pytest.approx(0.9)
    sq = B.square(np.array([[0, 0, 10, 30]], np.float32))
    np.testing.assert_allclose(sq[0], [-10, 0, 20, 30])
    rel = np.array([[0, 0.5, 1, 0, 1, 0, 0.5, 1, 0, 1]], np.float32)
    pts = B.landmarks_to_image(rel, np.array([[10, 20, 29, 39]], np.float32))
    np.testing.assert_allclose(pts[0, :, 0], [9, 19, 29, 9, 29])
    np.testing.assert_allclose(pts[0, :, 1], [19, 29, 39, 19, 39])


def test_pnet_boxes_positions_and_scale():
    prob = np.zeros((5, 6), np.float32)
    prob[2, 3] = 0.9
    prob[4, 0] = 0.7
    reg = np.zeros((4, 5, 6), np.float32)
    reg[:, 2, 3] = [0.5, 0, 0, -0.5]
    out = B.pnet_boxes(reg, prob, scale=0.5, threshold=0.6)
    assert out.shape == (2, 5) and out[0, 4] == pytest.approx(0.9)
    # cell at (y=2, x=3): x1 = 3*2 + 0.5*12 = 12, y1 = 4, x2 = 18, y2 = 16 - 6 = 10; / 0.5
    np.testing.assert_allclose(out[0, :4], [24, 8, 36, 20])
    np.testing.assert_allclose(out[1, :4], [0, 16, 24, 40])
    assert B.pnet_boxes(reg, prob, 1.0, 0.95).shape == (0, 5)


def test_pick_face_and_distance():
    boxes = np.array([[0, 0, 50, 50], [90, 90, 130, 130]], float)
    assert B.pick_face(boxes, 220, 220, "largest") == 0
    assert B.pick_face(boxes, 220, 220, "center") == 1
    ref = np.array([[[0, 0], [10, 0], [5, 5], [0, 10], [10, 10]]], float)
    assert mean_normalised_distance(ref + [1.0, 0.0], ref)[0] == pytest.approx(0.1)


# ---- network layout -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [22, 23, 46, 8, 9])
def test_same_pad_matches_tensorflow_rule(size):
    top, bottom = _same_pad(size, 3, 2)
    out = -(-size // 2)
    assert (size + top + bottom - 3) // 2 + 1 == out and bottom >= top


def test_shapes_and_dynamic_pnet():
    torch.manual_seed(0)
    with torch.no_grad():
        reg, prob = PNet()(torch.randn(2, 3, 40, 52))
        assert reg.shape == (2, 4, 15, 21) and prob.shape == (2, 15, 21)
        assert [t.shape for t in RNet()(torch.randn(3, 3, 24, 24))] == [(3, 4), (3,)]
        assert [t.shape for t in ONet()(torch.randn(3, 3, 48, 48))] == [(3, 4), (3, 10), (3,)]


def test_keras_flatten_order():
    """Keras flattens NHWC after Permute((2, 1, 3)): NCHW -> NWHC here."""
    x = torch.arange(2 * 64 * 3 * 3, dtype=torch.float32).reshape(2, 64, 3, 3)
    nhwc = x.numpy().transpose(0, 2, 3, 1)
    keras = nhwc.transpose(0, 2, 1, 3).reshape(2, -1)
    np.testing.assert_array_equal(x.permute(0, 3, 2, 1).flatten(1).numpy(), keras)


def test_keras_to_torch_conv_and_dense():
    from faceembed.models.mtcnn_weights import keras_to_torch

    rng = np.random.default_rng(0)
    k = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)  # HWIO
    x = rng.standard_normal((1, 5, 5, 2)).astype(np.float32)  # NHWC
    ref = np.zeros((1, 3, 3, 4), np.float32)  # valid cross-correlation, as Keras computes it
    for i in range(3):
        for j in range(3):
            ref[0, i, j] = np.einsum("hwc,hwco->o", x[0, i:i + 3, j:j + 3], k)
    conv = torch.nn.functional.conv2d(torch.from_numpy(x.transpose(0, 3, 1, 2)), keras_to_torch("conv1.weight", k))
    np.testing.assert_allclose(conv.numpy().transpose(0, 2, 3, 1), ref, rtol=1e-5, atol=1e-5)
    w = rng.standard_normal((6, 3)).astype(np.float32)
    assert keras_to_torch("fc4.weight", w).shape == (3, 6)
    assert keras_to_torch("prelu1.weight", np.ones((1, 1, 10))).shape == (10,)


@needs_weights
def test_conversion_loads_strictly(tmp_path):
    from faceembed.models.checkpoint import load_checkpoint
    from faceembed.models.mtcnn_weights import convert_mtcnn_weights, load_keras_weights

    path = convert_mtcnn_weights(tmp_path / "mtcnn.pt")
    model, spec, extra = load_checkpoint(path, expect_arch="mtcnn")
    assert isinstance(model, MTCNN) and spec.height == 48 and len(extra["source_sha256"]) == 64
    keras = load_keras_weights()
    np.testing.assert_array_equal(model.pnet.conv1.weight.detach().numpy(), keras["pnet"][0].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(model.onet.fc5.weight.detach().numpy(), keras["onet"][12].T)


# ---- real photos --------------------------------------------------------------------------------------------

def _sample(n: int) -> list[str]:
    from faceembed.data.lfw import list_lfw_images

    names = list_lfw_images(LFW / "images")
    return names[:: max(1, len(names) // n)][:n]


@needs_lfw
@needs_weights
@pytest.mark.realdata
def test_landmarks_match_reference_on_lfw():
    from faceembed.data.lfw import read_landmarks
    from faceembed.faces.detect_files import detect_files

    names = _sample(120)
    res = detect_files(LFW / "images", names, workers=2, keep="center")
    assert len(res.landmarks) == len(names), res.failed
    ref = read_landmarks(LFW / "ldmark_lfw_mtcnncaffe.txt")
    pred = np.stack([res.landmarks[n] for n in names])
    r = np.stack([ref[n] for n in names])
    d = mean_normalised_distance(pred, r)
    assert d.mean() < 0.05 and np.median(d) < 0.04
    px = np.hypot(*(pred - r).transpose(2, 0, 1)).mean(axis=1)
    assert (px < 3.0).mean() > 0.8  # most faces: within 3 px on average over the 5 points


@needs_lfw
@needs_weights
@pytest.mark.realdata
def test_ort_and_torch_backends_agree():
    from faceembed.data.images import read_image_rgb
    from faceembed.faces.detect import MTCNNDetector

    imgs = [read_image_rgb(LFW / "images" / n) for n in _sample(6)]
    a = MTCNNDetector(backend="ort").detect_many(imgs)
    b = MTCNNDetector(backend="torch").detect_many(imgs)
    for fa, fb in zip(a, b, strict=True):
        assert len(fa) == len(fb) >= 1
        np.testing.assert_allclose(fa[0].landmarks, fb[0].landmarks, atol=0.05)
        np.testing.assert_allclose(fa[0].box, fb[0].box, atol=0.05)


@needs_lfw
@needs_weights
@pytest.mark.realdata
def test_the_relative_floor_leaves_lfw_detections_bit_for_bit():
    from faceembed.data.images import read_image_rgb
    from faceembed.faces.detect import DetectorConfig, MTCNNDetector

    imgs = [read_image_rgb(LFW / "images" / n) for n in _sample(24)]
    on = MTCNNDetector(backend="ort").detect_many(imgs)  # the default: 1/16 of 250 px < 40 px
    off = MTCNNDetector(config=DetectorConfig(min_face_fraction=0.0), backend="ort").detect_many(imgs)
    assert sum(map(len, on)) >= len(imgs)
    for a, b in zip(on, off, strict=True):
        assert len(a) == len(b)
        for fa, fb in zip(a, b, strict=True):
            assert np.array_equal(fa.box, fb.box) and np.array_equal(fa.landmarks, fb.landmarks)
            assert fa.score == fb.score


@needs_lfw
@needs_weights
@pytest.mark.realdata
def test_a_large_photo_skips_the_finest_levels_and_finds_the_same_face():
    import cv2

    from faceembed.data.images import read_image_rgb
    from faceembed.faces.detect import DetectorConfig, MTCNNDetector, choose_face

    det = MTCNNDetector(backend="ort")
    pnet, inputs = det.nets.pnet, []

    def counted(x):
        inputs.append(x.shape[2:])
        return pnet(x)

    det.nets.pnet = counted
    for name in _sample(2):
        small = read_image_rgb(LFW / "images" / name)
        ref = choose_face(det.detect(small), 250, 250)
        big = cv2.resize(small, (1000, 1000), interpolation=cv2.INTER_CUBIC)
        levels = {}
        for frac in (0.0, B.MIN_FACE_FRACTION):
            det.config = DetectorConfig(min_face_fraction=frac)
            inputs.clear()
            face = choose_face(det.detect(big), 1000, 1000)
            levels[frac] = list(inputs)
            d = mean_normalised_distance(face.landmarks[None], 4 * ref.landmarks[None])[0]
            assert d < 0.05, (name, frac, d)  # the 250 px face, 4 times larger, within 5% of the eye distance
        assert len(levels[B.MIN_FACE_FRACTION]) < len(levels[0.0])
        assert max(levels[B.MIN_FACE_FRACTION]) == (192, 192) and max(levels[0.0]) == (300, 300)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faceembed", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@needs_lfw
@needs_weights
@pytest.mark.realdata
def test_detect_cli_backend_auto_matches_ort_and_names_the_backend_that_ran(tmp_path):
    from faceembed.data.lfw import read_landmarks
    from faceembed.faces.detect import resolve_detect_backend

    src = tmp_path / "photos"
    src.mkdir()
    for n in _sample(3):
        (src / Path(n).name).write_bytes((LFW / "images" / n).read_bytes())
    marks, ran = {}, {}
    for backend in ("auto", "ort"):
        out = tmp_path / f"{backend}.txt"
        r = _cli("detect", str(src), "--out", str(out), "--backend", backend, "--workers", "1", "--no-progress",
                 cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        summary = json.loads(r.stdout)
        assert summary["detected"] == 3
        ran[backend] = summary["backend"]
        assert json.loads(out.with_suffix(".json").read_text())["backend"] == ran[backend]
        marks[backend] = read_landmarks(out)
    assert ran == {"auto": resolve_detect_backend("auto"), "ort": "ort"}
    if importlib.util.find_spec("openvino") is not None:
        assert ran["auto"] == "ort+openvino"  # auto resolved, and the resolved backend is what ran
    assert sorted(marks["auto"]) == sorted(marks["ort"])
    for name, lm in marks["ort"].items():
        np.testing.assert_allclose(marks["auto"][name], lm, rtol=0, atol=0.01)  # OpenVINO vs ORT: float noise


@needs_lfw
@needs_weights
@pytest.mark.realdata
def test_detect_cli_skips_bad_files_and_align_reads_the_output(tmp_path):
    import cv2

    from faceembed.data.lfw import read_landmarks

    src = tmp_path / "photos"
    (src / "a").mkdir(parents=True)
    for n in _sample(3):
        (src / "a" / Path(n).name).write_bytes((LFW / "images" / n).read_bytes())
    (src / "a" / "corrupt.jpg").write_bytes(b"not a jpeg")
    (src / "a" / "empty.jpg").write_bytes(b"")
    cv2.imwrite(str(src / "a" / "wall.png"), np.full((120, 160, 3), 200, np.uint8))
    r = _cli("detect", str(src), "--out", str(tmp_path / "lm.txt"), "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["detected"] == 3 and json.loads(r.stdout)["failed"] == 3
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("faceembed: skipped:")]
    assert len(lines) == 3 and any("no face found" in ln for ln in lines)
    assert len((tmp_path / "lm.skipped.txt").read_text().splitlines()) == 3
    assert len(read_landmarks(tmp_path / "lm.txt")) == 3
    r = _cli("detect", str(src), "--out", str(tmp_path / "lm2.txt"), "--on-error", "stop", "--no-progress",
             cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("faceembed: error:") == 1
    r = _cli("align", "--images", str(src), "--out", str(tmp_path / "aligned"), "--on-error", "skip",
             "--no-progress", cwd=tmp_path)
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["aligned"] == 3 and (tmp_path / "aligned" / "landmarks.txt").is_file()
