"""Photos as users have them, end to end through the commands: a photo tree cut from LFW (every format,
extension-less files, an HTML page named .jpg, an empty file) goes through ``enroll``, ``identify`` and ``detect``
with every file read or listed with a reason and the people identified right; ORL-style tight crops go
through ``--detector none`` and ``--no-face whole`` without losing a probe.

Real data: LFW and the MobileFaceNet checkpoint from ../shared/data (skipped without them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from photo_trees import make_photo_tree, make_tight_crops
from test_face_models import MFN_CKPT
from test_mtcnn import HAS_MTCNN, LFW

PEOPLE = ["Colin_Powell", "Gerhard_Schroeder", "Hugo_Chavez", "Serena_Williams"]
GALLERY_N, PROBE_N = 4, 3  # each person's first 4 LFW photos enrolled, the next 3 held out as probes

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (MFN_CKPT.is_file() and (LFW / "lfw_landmark.txt").is_file()),
                       reason="../shared/data (LFW, MobileFaceNet checkpoint) not found: real-data test skipped"),
    pytest.mark.skipif(not HAS_MTCNN, reason="the 'mtcnn' package (MTCNN weights) is not installed"),
]


def run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faceembed", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The imported MobileFaceNet, an MTCNN cache, and an LFW-like root holding only the probe photos."""
    from faceembed.convert.torch_state import import_checkpoint

    t = tmp_path_factory.mktemp("e2e")
    import_checkpoint(MFN_CKPT, t / "mfn.pt")
    probe_lfw = t / "probe_lfw"
    for person in PEOPLE:
        (probe_lfw / person).mkdir(parents=True)
        for src in sorted((LFW / "images" / person).glob("*.jpg"))[GALLERY_N:GALLERY_N + PROBE_N]:
            (probe_lfw / person / src.name).symlink_to(src)
    env = {"FACEEMBED_CACHE": str(tmp_path_factory.getbasetemp() / "cache")}
    return t, t / "mfn.pt", probe_lfw, env


def _skip_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("faceembed: skipped: ")]


def _rank1(answers: dict[str, list[dict]]) -> float:
    right = [hits[0]["name"] == rel.split("/")[0] for rel, hits in answers.items()]
    return sum(right) / len(right)


@pytest.mark.slow
def test_photo_tree_enroll_identify_detect(setup, tmp_path):
    _, model, probe_lfw, env = setup
    gallery_tree = make_photo_tree(tmp_path / "people", LFW / "images", PEOPLE, GALLERY_N)
    probe_tree = make_photo_tree(tmp_path / "probes", probe_lfw, PEOPLE, PROBE_N)
    assert len(set(gallery_tree["images"].values()) | set(probe_tree["images"].values())) == 13, "every kind"

    enroll = run_cli("enroll", "--images", str(tmp_path / "people"), "--model", str(model), "--out",
                     str(tmp_path / "gallery.npz"), "--workers", "1", "--no-progress", env=env)
    assert enroll.returncode == 0, enroll.stderr
    summary = json.loads(enroll.stdout)
    assert summary["people"] == len(PEOPLE)
    assert summary["images"] == len(gallery_tree["images"]), "every photo of every format enrolled"
    assert summary["failed"] == len(gallery_tree["skipped"]) == 2
    listed = dict(line.split("\t", 1) for line in (tmp_path / "gallery.skipped.txt").read_text().splitlines())
    assert set(listed) == set(gallery_tree["skipped"]), listed
    assert all(reason.strip() for reason in listed.values())
    skips = _skip_lines(enroll.stderr)
    assert len(skips) == 2 and all(any(rel in line for line in skips) for rel in gallery_tree["skipped"]), skips
    assert ".DS_Store" not in enroll.stderr + enroll.stdout

    ident = run_cli("identify", "--gallery", str(tmp_path / "gallery.npz"), "--images", str(tmp_path / "probes"),
                    "--top-k", "1", "--json", str(tmp_path / "ids.json"), "--workers", "1", env=env)
    assert ident.returncode == 0, ident.stderr
    result = json.loads((tmp_path / "ids.json").read_text())
    assert set(result["answers"]) == set(probe_tree["images"]), "every probe photo answered"
    assert {f["image"] for f in result["failed"]} == set(probe_tree["skipped"])
    assert all(f["reason"] for f in result["failed"])
    assert len(_skip_lines(ident.stderr)) == 2
    assert _rank1(result["answers"]) == 1.0, result["answers"]
    assert len([ln for ln in ident.stdout.splitlines() if "\t" in ln]) == len(probe_tree["images"])

    detect = run_cli("detect", str(tmp_path / "people"), "--out", str(tmp_path / "lm.txt"), "--workers", "1",
                     "--no-progress", env=env)
    assert detect.returncode == 0, detect.stderr
    found = json.loads(detect.stdout)
    assert found["images"] == len(gallery_tree["images"]) + len(gallery_tree["skipped"])
    assert found["detected"] == len(gallery_tree["images"]) and found["failed"] == 2
    listed = [line.split("\t")[0] for line in (tmp_path / "lm.skipped.txt").read_text().splitlines()]
    assert sorted(listed) == sorted(gallery_tree["skipped"])
    from faceembed.data.lfw import read_landmarks

    assert set(read_landmarks(tmp_path / "lm.txt")) == set(gallery_tree["images"])
    assert not (tmp_path / "lm.txt.parts").exists()


@pytest.mark.slow
def test_photo_tree_compare(setup, tmp_path):
    _, model, _, env = setup
    import shutil

    from test_cli_errors import assert_one_line_error

    mfn = tmp_path / "mfn.pt"  # calibrated here (compare needs thresholds): a copy, the shared model stays as it is
    shutil.copy(model, mfn)
    lfw_pairs = (LFW / "pairs.txt").read_text().splitlines()
    (tmp_path / "pairs.txt").write_text("\n".join(["1\t20", *lfw_pairs[1:21], *lfw_pairs[301:321]]) + "\n")
    cal = run_cli("calibrate", "--model", str(mfn), "--data", str(LFW), "--pairs", str(tmp_path / "pairs.txt"),
                  "--far", "0.1", "--no-progress", env=env)
    assert cal.returncode == 0, cal.stderr
    tree = make_photo_tree(tmp_path / "people", LFW / "images", PEOPLE[:2], 3)  # jpeg png bmp / pgm ppm tiff
    first = sorted(r for r, p in tree["person"].items() if p == PEOPLE[0])
    second = sorted(r for r, p in tree["person"].items() if p == PEOPLE[1])

    def compare(a: str, b: str) -> dict:
        proc = run_cli("compare", str(tmp_path / "people" / a), str(tmp_path / "people" / b), "--model", str(mfn),
                       "--far", "0.1", "--json", str(tmp_path / "c.json"), env=env)
        assert proc.returncode == 0, proc.stderr
        return json.loads((tmp_path / "c.json").read_text())

    assert compare(first[0], first[1])["same"] is True
    assert compare(second[0], second[2])["same"] is True
    assert compare(first[2], second[1])["same"] is False
    for bad in tree["skipped"]:  # the HTML page named .jpg, the empty file: one line saying why
        proc = run_cli("compare", str(tmp_path / "people" / first[0]), str(tmp_path / "people" / bad), "--model",
                       str(mfn), "--far", "0.1", env=env)
        assert_one_line_error(proc, Path(bad).name)


@pytest.mark.slow
def test_tight_crops_detector_none_and_no_face_whole(setup, tmp_path):
    _, model, probe_lfw, env = setup
    marks = LFW / "lfw_landmark.txt"
    gallery = make_tight_crops(tmp_path / "people", LFW / "images", marks, PEOPLE, GALLERY_N)
    probes = make_tight_crops(tmp_path / "probes", probe_lfw, marks, PEOPLE, PROBE_N)
    assert len(probes["images"]) == len(PEOPLE) * PROBE_N

    # --detector none: every crop used whole, no MTCNN
    enroll = run_cli("enroll", "--images", str(tmp_path / "people"), "--model", str(model), "--out",
                     str(tmp_path / "g_none.npz"), "--detector", "none", "--workers", "1", "--no-progress", env=env)
    assert enroll.returncode == 0, enroll.stderr
    s = json.loads(enroll.stdout)
    assert s["images"] == s["used_whole"] == len(gallery["images"]) and s["failed"] == 0
    ident = run_cli("identify", "--gallery", str(tmp_path / "g_none.npz"), "--images", str(tmp_path / "probes"),
                    "--detector", "none", "--top-k", "1", "--json", str(tmp_path / "none.json"), "--workers", "1",
                    env=env)
    assert ident.returncode == 0, ident.stderr
    r = json.loads((tmp_path / "none.json").read_text())
    assert set(r["answers"]) == set(probes["images"]) and not r["failed"]
    assert r["used_whole"] == len(probes["images"])
    assert _rank1(r["answers"]) >= 0.9, r["answers"]

    # default MTCNN on tight crops: the face fills the photo and some crops may lose it
    from faceembed.faces.detect_files import detect_files

    lost = set(r for r, _ in detect_files(tmp_path / "probes", sorted(probes["images"]), workers=1).failed)
    plain = run_cli("identify", "--gallery", str(tmp_path / "g_none.npz"), "--images", str(tmp_path / "probes"),
                    "--top-k", "1", "--json", str(tmp_path / "mtcnn.json"), "--workers", "1", env=env)
    assert plain.returncode == 0, plain.stderr
    r = json.loads((tmp_path / "mtcnn.json").read_text())
    assert {f["image"] for f in r["failed"]} == lost and len(r["answers"]) == len(probes["images"]) - len(lost)

    # --no-face whole: no probe is lost; the ones MTCNN missed are used whole and counted
    whole = run_cli("identify", "--gallery", str(tmp_path / "g_none.npz"), "--images", str(tmp_path / "probes"),
                    "--no-face", "whole", "--top-k", "1", "--json", str(tmp_path / "whole.json"), "--workers", "1",
                    env=env)
    assert whole.returncode == 0, whole.stderr
    r = json.loads((tmp_path / "whole.json").read_text())
    assert set(r["answers"]) == set(probes["images"]) and not r["failed"], "every probe gets an answer"
    assert r["used_whole"] == len(lost)

    # MTCNN made to miss every crop (smallest face 100 px: no pyramid level fits a 92 px wide photo): without
    # --no-face whole every probe is lost with a reason, with it every probe is answered, used whole, counted
    blind = ["--min-face-size", "100", "--top-k", "1", "--workers", "1"]
    missed = run_cli("identify", "--gallery", str(tmp_path / "g_none.npz"), "--images", str(tmp_path / "probes"),
                     *blind, "--json", str(tmp_path / "missed.json"), env=env)
    assert missed.returncode == 0, missed.stderr
    r = json.loads((tmp_path / "missed.json").read_text())
    assert not r["answers"] and {f["image"] for f in r["failed"]} == set(probes["images"])
    assert all("no face" in f["reason"] for f in r["failed"])
    whole = run_cli("identify", "--gallery", str(tmp_path / "g_none.npz"), "--images", str(tmp_path / "probes"),
                    *blind, "--no-face", "whole", "--json", str(tmp_path / "whole.json"), env=env)
    assert whole.returncode == 0, whole.stderr
    r = json.loads((tmp_path / "whole.json").read_text())
    assert set(r["answers"]) == set(probes["images"]) and not r["failed"], "every probe gets an answer"
    assert r["used_whole"] == len(probes["images"])
    assert _rank1(r["answers"]) >= 0.9, r["answers"]
    enroll = run_cli("enroll", "--images", str(tmp_path / "people"), "--model", str(model), "--out",
                     str(tmp_path / "g_whole.npz"), "--no-face", "whole", "--workers", "1", "--no-progress", env=env)
    assert enroll.returncode == 0, enroll.stderr
    s = json.loads(enroll.stdout)
    lost_g = set(r for r, _ in detect_files(tmp_path / "people", sorted(gallery["images"]), workers=1).failed)
    assert s["images"] == len(gallery["images"]) and s["failed"] == 0 and s["used_whole"] == len(lost_g)
    enroll = run_cli("enroll", "--images", str(tmp_path / "people"), "--model", str(model), "--out",
                     str(tmp_path / "g_blind.npz"), "--no-face", "whole", "--min-face-size", "100", "--workers", "1",
                     "--no-progress", env=env)
    assert enroll.returncode == 0, enroll.stderr
    s = json.loads(enroll.stdout)
    assert s["images"] == s["used_whole"] == len(gallery["images"]) and s["failed"] == 0
