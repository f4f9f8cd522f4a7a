"""One way to name a model: every command that takes a model runs, with its defaults, on the built-in model's
name, on the name of a model imported into the cache and on a model file, on tiny real inputs (a few LFW photos).
A guard fails when a command that takes a model has no case here."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LFW = SHARED / "lfw"
PEOPLE = {"Aaron_Peirsol": 4, "Adrien_Brody": 4}

pytestmark = [pytest.mark.realdata, pytest.mark.slow,
              pytest.mark.skipif(not (LFW / "images").is_dir(), reason="../shared/data/lfw not found")]

#: Commands that take a model but are run elsewhere, with the reason (the guard below accepts only these).
ELSEWHERE = {
    "bench": "benchmarks the model names it is given (tests/test_bench.py runs a model name through bench)",
    "train-pfe": "trains for minutes (tests/test_train_pfe.py, test_demo_lfw.py)",
    "demo": "runs whole demos (tests/test_demo*.py)",
    "import": "makes the imported name used here (the fixture)",
    "calibrate": "measures on LFW's 7,701 pair images (tests/test_calibrate.py) and on a tiny pairs file here",
    "serve": "serves collections made with the built-in model's name (tests/test_serve*.py); a collection is made "
             "here with every kind of name",
}


def cli(*args: str, cwd: Path) -> dict | str:
    """Run one command in this process (no start-up per call); its stdout, parsed as JSON when it is JSON."""
    import os

    from faceembed.cli import app

    old = Path.cwd()
    os.chdir(cwd)
    try:
        res = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    finally:
        os.chdir(old)
    assert res.exit_code == 0, f"faceembed {' '.join(map(str, args))}: exit {res.exit_code}\n{res.output}"
    try:
        return json.loads(res.stdout)
    except ValueError:
        return res.stdout


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A cache of its own (the built-in converted into it), an exported file, that file imported by name, a
    two-person photo tree and a tiny pairs file."""
    mp = pytest.MonkeyPatch()
    t = tmp_path_factory.mktemp("names")
    mp.setenv("FACEEMBED_CACHE", str(t / "cache"))
    photos = t / "photos"
    for person, n in PEOPLE.items():
        (photos / person).mkdir(parents=True)
        for i in range(1, n + 1):
            shutil.copy(LFW / "images" / person / f"{person}_{i:04d}.jpg", photos / person)
    (t / "probe").mkdir()
    shutil.copy(LFW / "images" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg", t / "probe")
    lines = ["1\t2", "Aaron_Peirsol\t1\t2", "Adrien_Brody\t1\t2", "Aaron_Peirsol\t1\tAdrien_Brody\t1",
             "Aaron_Peirsol\t3\tAdrien_Brody\t2"]
    (t / "pairs.txt").write_text("\n".join(lines) + "\n")
    cli("export", "dlib-resnet", "--out", "dlib.onnx", cwd=t)
    cli("import", "dlib.onnx", "--out", "my-dlib", cwd=t)
    yield {"root": t, "names": {"builtin": "dlib-resnet", "imported": "my-dlib", "file": str(t / "dlib.onnx")}}
    mp.undo()


KINDS = ("builtin", "imported", "file")


@pytest.mark.parametrize("kind", KINDS)
def test_every_model_command_takes_every_kind_of_name(world, kind):
    t, model = world["root"], world["names"][kind]
    out = t / kind
    out.mkdir()
    card = cli("card", model, cwd=t)
    assert card["embedding_size"] == 128 and card["template"] == "dlib"
    cli("align", "--images", "photos", "--out", out / "aligned", "--model", model, "--no-progress", cwd=t)
    assert len(list((out / "aligned").glob("*/*.png"))) == 8
    cli("tobin", "photos", "--images", "photos", "--out", out / "bins", "--model", model, "--no-progress", cwd=t)
    summary = cli("infer", "--model", model, "--input", out / "bins", "--output", out / "feats", "--outfmt", "npy",
                  "--no-progress", cwd=t)  # the default backend follows the model's kind; npy in lower case
    assert summary["files_failed"] == 0 and summary["backend"] in ("torch", "ort")
    enrolled = cli("enroll", "--images", "photos", "--out", out / "g.npz", "--model", model, "--no-progress", cwd=t)
    assert enrolled["people"] == 2
    named = cli("identify", "--gallery", out / "g.npz", "--images", "probe", cwd=t)  # model: the gallery's
    assert "Aaron_Peirsol" in named.split("\t")[1].split()[0]
    result = cli("evaluate-identification", "photos", "--model", model, "--min-images", "4", "--impostor-fraction",
                 "0.5", "--no-progress", cwd=t)
    assert result["probes"] >= 2
    same = cli("compare", "photos/Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "photos/Aaron_Peirsol/Aaron_Peirsol_0002.jpg",
               "--model", model, cwd=t)
    assert "same" in same.lower()
    q = cli("quantize", model, "--calibrate", out / "bins", "--out", out / "q.onnx", "--max-images", "8",
            "--min-cosine", "0", "--no-progress", cwd=t)
    assert (out / "q.onnx").is_file() and q
    key = cli("collection", "create", f"c-{kind}", "--db", f"sqlite:///{out / 'store.db'}", "--model", model, cwd=t)
    assert key.strip().splitlines()[-1]  # the new API key, alone on the last line
    people = cli("cluster", "photos", "--out", out / "people.json", "--model", model, "--no-progress", cwd=t)
    assert json.loads((out / "people.json").read_text())["people"] and people
    measured = cli("calibrate", "--model", model, "--data", LFW, "--pairs", "pairs.txt", "--no-write",
                   "--no-progress", cwd=t)
    assert measured["written"] is None and measured["genuine_pairs"] > 0


def test_the_ray_engine_resolves_a_name(world):
    pytest.importorskip("ray")
    t = world["root"]
    summary = cli("enroll", "--images", "photos", "--out", t / "ray.npz", "--engine", "ray", "--num-workers", "1",
                  "--no-progress", cwd=t)  # the default model, by name, inside Ray workers
    assert summary["people"] == 2


def test_photo_commands_default_to_the_builtin_model(world):
    t = world["root"]
    assert cli("enroll", "--images", "photos", "--out", t / "default.npz", "--no-progress", cwd=t)["people"] == 2
    result = cli("evaluate-identification", "photos", "--min-images", "4", "--impostor-fraction", "0.5",
                 "--no-progress", cwd=t)
    assert result["probes"] >= 2


def test_an_imported_name_may_not_shadow_another_model(world, tmp_path):
    for taken in ("dlib-resnet", "pfe", "sphere20", "mobilefacenet", "pfe-sphere64"):
        proc = subprocess.run([sys.executable, "-m", "faceembed", "import", str(world["root"] / "dlib.onnx"), "--out",
                               taken], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "choose another --out" in proc.stderr, proc.stderr


def test_every_command_that_takes_a_model_has_a_case():
    from faceembed.cli import app

    def help_of(*args: str) -> str:
        return CliRunner().invoke(app, [*args, "--help"], terminal_width=200).stdout

    commands = set(re.findall(r"│ ([a-z][a-z0-9-]+) {2,}", help_of()))
    here = {"card", "align", "tobin", "infer", "enroll", "identify", "evaluate-identification", "compare",
            "quantize", "export", "collection create", "cluster"}
    takes_model = set()
    for c in sorted(commands):
        text = help_of(c)
        subcommands = re.findall(r"│ ([a-z][a-z0-9-]+) {2,}", text) if "Commands" in text else []
        for name, sub_text in [(f"{c} {s}", help_of(c, s)) for s in subcommands] or [(c, text)]:
            if re.search(r"--model\b|--models\b|--backbone\b|\bMODEL\b|CHECKPOINT", sub_text):
                takes_model.add(name)
    missing = takes_model - here - set(ELSEWHERE)
    assert not missing, f"commands taking a model with no case in tests/test_model_names.py: {sorted(missing)}"
