"""Similarity transform, face alignment, the parallel dataset aligner and the contact sheet."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceembed.data.images import read_image_rgb
from faceembed.data.lfw import read_landmarks
from faceembed.errors import InputFormatError, MissingInputError
from faceembed.faces.align import (
    REFERENCE_112x96,
    REFERENCE_112x112,
    align_face,
    center_crop_fallback,
    reference_points,
    similarity_transform,
)
from faceembed.faces.align_files import align_dataset, align_images_in_memory

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared/data not found: real-data test skipped")
    return SHARED


def _lstsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Direct least squares of x' = a x - b y + tx, y' = b x + a y + ty (float64)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty], [0, 0, 1]])


def test_templates() -> None:
    np.testing.assert_allclose(REFERENCE_112x112[:, 0] - REFERENCE_112x96[:, 0], 8.0)
    np.testing.assert_allclose(reference_points((112, 96)), REFERENCE_112x96)
    np.testing.assert_allclose(reference_points((112, 112)), REFERENCE_112x112)
    np.testing.assert_allclose(reference_points((224, 192)), 2 * REFERENCE_112x96)
    with pytest.raises(ValueError):
        reference_points((100, 40))


@pytest.mark.parametrize("seed", range(5))
def test_similarity_matches_least_squares(seed: int) -> None:
    rng = np.random.default_rng(seed)
    src = rng.uniform(50, 200, (5, 2))
    dst = REFERENCE_112x96 + rng.normal(0, 2.0, (5, 2))
    fwd = similarity_transform(src, dst, method="forward")
    np.testing.assert_allclose(fwd, _lstsq(src, dst)[:2], rtol=1e-9, atol=1e-9)
    # cp2tform: least squares from dst to src, inverted
    cp = similarity_transform(src, dst, method="cp2tform")
    np.testing.assert_allclose(cp, np.linalg.inv(_lstsq(dst, src))[:2], rtol=1e-9, atol=1e-9)
    # non-reflective: the linear part is a scaled rotation
    lin = cp[:, :2]
    assert lin[0, 0] == pytest.approx(lin[1, 1]) and lin[0, 1] == pytest.approx(-lin[1, 0])
    assert np.linalg.det(lin) > 0


def test_similarity_exact_agrees_with_opencv() -> None:
    rng = np.random.default_rng(7)
    src = rng.uniform(60, 190, (5, 2))
    theta, scale, t = 0.3, 0.7, np.array([-20.0, 15.0])
    r = scale * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    dst = src @ r.T + t
    expect = np.hstack([r, t[:, None]])
    cv, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32), method=cv2.LMEDS)
    for method in ("cp2tform", "forward"):
        m = similarity_transform(src, dst, method=method)  # type: ignore[arg-type]
        np.testing.assert_allclose(m, expect, atol=1e-9)
        np.testing.assert_allclose(m, cv, atol=1e-3)


def test_similarity_degenerate() -> None:
    with pytest.raises(InputFormatError):
        similarity_transform(np.ones((5, 2)), REFERENCE_112x96)
    with pytest.raises(ValueError):
        similarity_transform(np.ones((5, 3)), REFERENCE_112x96)


def _synthetic_face(h: int = 250, w: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """An image with bright dots at five landmark positions (rotated, scaled template)."""
    theta, scale, t = -0.2, 1.6, np.array([60.0, 40.0])
    r = scale * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = REFERENCE_112x96 @ r.T + t
    img = np.zeros((h, w, 3), np.uint8)
    for x, y in pts:
        cv2.circle(img, (round(x), round(y)), 3, (255, 255, 255), -1)
    return img, pts


def test_align_face_puts_landmarks_on_template() -> None:
    img, pts = _synthetic_face()
    for size, ref in (((112, 96), REFERENCE_112x96), ((112, 112), REFERENCE_112x112)):
        out = align_face(img, pts, size)
        assert out.shape == (*size, 3) and out.dtype == np.uint8
        for x, y in ref:
            patch = out[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2, 0]
            assert patch.max() > 150, (size, x, y)


def test_center_crop_fallback_shape() -> None:
    img = np.full((250, 250, 3), 9, np.uint8)
    out = center_crop_fallback(img, (112, 96))
    assert out.shape == (112, 96, 3) and out.dtype == np.uint8 and (out == 9).all()


def _tiny_dataset(root: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    img, pts = _synthetic_face()
    rels = []
    for i in range(1, 6):
        rel = f"Pe/Pe_{i:04d}.jpg"
        (root / "Pe").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), img)
        rels.append(rel)
    lm = {r: pts.astype(np.float32) for r in rels[:-1]}  # the last one has no landmarks -> fallback
    return lm, rels


@pytest.mark.parametrize("workers", [1, 2])
def test_align_dataset_resume_and_skip(tmp_path: Path, workers: int) -> None:
    lm, rels = _tiny_dataset(tmp_path / "img")
    out = tmp_path / "out"
    s = align_dataset(tmp_path / "img", lm, rels, out, workers=workers, progress=False)
    assert (s.aligned, s.fallback, s.skipped, s.failed) == (4, 1, 0, [])
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == ["Pe/Pe_0001.png", "Pe/Pe_0002.png", "Pe/Pe_0003.png", "Pe/Pe_0004.png",
                     "Pe/Pe_0005.png", "contact_sheet.png"]
    first = read_image_rgb(out / "Pe/Pe_0001.png")
    np.testing.assert_array_equal(
        first, align_images_in_memory(tmp_path / "img", lm, rels[:1], workers=workers)[0]
    )
    # resumable: nothing redone; a broken output is redone
    (out / "Pe/Pe_0002.png").write_bytes(b"junk")
    s2 = align_dataset(tmp_path / "img", lm, rels, out, workers=workers, progress=False)
    assert (s2.aligned, s2.skipped) == (1, 4)
    # missing image: stop raises, skip lists it
    bad = [*rels, "Pe/Pe_0009.jpg"]
    with pytest.raises(MissingInputError):
        align_dataset(tmp_path / "img", lm, bad, tmp_path / "o2", workers=workers, progress=False)
    s3 = align_dataset(tmp_path / "img", lm, bad, tmp_path / "o3", workers=workers, progress=False,
                       on_error="skip")
    assert [r for r, _ in s3.failed] == ["Pe/Pe_0009.jpg"]
    assert (tmp_path / "o3" / "skipped.txt").read_text().startswith("Pe/Pe_0009.jpg\t")
    assert not list(out.rglob(".*tmp*"))


@pytest.mark.realdata
def test_real_alignment_eyes_near_template() -> None:
    lfw = shared_data() / "lfw"
    lm = read_landmarks(lfw / "lfw_landmark.txt")
    rels = ["Aaron_Eckhart/Aaron_Eckhart_0001.jpg", "George_W_Bush/George_W_Bush_0001.jpg",
            "Zico/Zico_0001.jpg"]
    imgs = align_images_in_memory(lfw / "images", lm, rels, (112, 96), workers=1)
    assert imgs.shape == (3, 112, 96, 3) and imgs.dtype == np.uint8
    for rel, out in zip(rels, imgs, strict=True):
        m = similarity_transform(lm[rel], REFERENCE_112x96)
        mapped = np.c_[lm[rel], np.ones(5)] @ m.T
        # the eyes land within 3 px of the template, every point within 8 px (5 noisy points, 4 dof)
        assert np.abs(mapped[:2] - REFERENCE_112x96[:2]).max() < 3.0
        assert np.abs(mapped - REFERENCE_112x96).max() < 8.0
        np.testing.assert_array_equal(out, align_face(read_image_rgb(lfw / "images" / rel), lm[rel]))
        assert out.mean() > 20  # a face, not the black border


@pytest.mark.realdata
@pytest.mark.slow
def test_real_align_all_in_memory_keeps_pace_with_one_by_one() -> None:
    """A ratio within one run (no absolute time): aligning every LFW image in memory with all cores runs at least
    at the rate of aligning a sample one image at a time in this process."""
    import time

    from faceembed.data.lfw import list_lfw_images

    lfw = shared_data() / "lfw"
    lm = read_landmarks(lfw / "lfw_landmark.txt")
    rels = list_lfw_images(lfw / "images")
    sample = rels[::50]
    t = time.perf_counter()
    for rel in sample:
        align_face(read_image_rgb(lfw / "images" / rel), lm[rel])
    one_by_one = len(sample) / (time.perf_counter() - t)
    t = time.perf_counter()
    imgs = align_images_in_memory(lfw / "images", lm, rels, workers=os.cpu_count())
    in_memory = len(rels) / (time.perf_counter() - t)
    assert imgs.shape == (13233, 112, 96, 3)
    assert in_memory >= 0.8 * one_by_one, f"{in_memory:.0f} vs {one_by_one:.0f} images/s one by one"
