"""Any face model in, every command driven by its card: foreign ONNX models built from the real MobileFaceNet
weights (NCHW, fixed batch 1, BGR or RGB, normalisation inside or outside the graph, a 112x112 ArcFace crop,
outputs not named ``embedding``), brought in with ``faceembed import`` and run through ``align``, ``tobin lfw``,
``tobin photos``, ``infer`` (also ``--backend auto``), ``verify``, ``enroll``, ``identify``,
``evaluate-identification``, ``quantize`` and ``bench --models PATH``: their embeddings equal the native
model's (``faceembed import`` of the checkpoint, ``faceembed export``) on the same faces.

The 112x112 variant crops the centre 96 columns of its input inside the graph: the ArcFace template is the
SphereFace one shifted by 8 px, so the ArcFace crop's centre 96 columns are the SphereFace crop's pixels and
the two models see the same faces.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
MFN_CKPT = DATA / "weights" / "mobilefacenet_casia_112x96.ckpt"
LFW = DATA / "lfw"
MIN_COSINE = 0.99999

pytestmark = [  # the module's fixtures alone (import, export, three foreign models, tobin) take over 30 s
    pytest.mark.realdata,
    pytest.mark.slow,
    pytest.mark.skipif(not (MFN_CKPT.is_file() and (LFW / "lfw_landmark.txt").is_file()
                            and (LFW / "pairs.txt").is_file()),
                       reason="../shared/data (MobileFaceNet weights, LFW) not found: real-data test skipped"),
]


def cli(*args: str | Path, ok: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``faceembed ARGS`` in a subprocess (two threads, a private cache; photo paths run each model in fp32 on its
    own kind's backend, so native and foreign models are compared on the same arithmetic)."""
    cache = cwd or Path(tempfile.gettempdir()) / "faceembed-foreign-models-cache"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "FACEEMBED_CACHE": str(cache), "FACEEMBED_PHOTO_BACKEND": "fp32"}
    proc = subprocess.run([sys.executable, "-m", "faceembed", *map(str, args), *(["--no-progress"] if args[0] in
                          ("tobin", "infer", "align", "enroll", "evaluate-identification") else [])],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    if ok and proc.returncode != 0:
        raise AssertionError(f"faceembed {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def assert_same_embeddings(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(ref) and got
    names = sorted(ref)
    cos = cosines(np.stack([got[n] for n in names]), np.stack([ref[n] for n in names]))
    assert cos.min() >= MIN_COSINE, (cos.min(), names[int(cos.argmin())])


# ---- the foreign models ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    """How a foreign model differs from faceembed's native MobileFaceNet export (NHWC RGB 112x96, dynamic)."""

    name: str
    bgr: bool  # the graph takes BGR and swaps it to the RGB the weights expect
    inside: bool  # (x - 127.5) / 128 inside the graph (the card then says mean 0, std 1)
    arcface: bool  # 112x112 ArcFace crop in, the centre 96 columns taken inside the graph
    fixed: bool  # the graph ends in a Reshape to [1, 128]: it only runs at batch 1
    input_name: str
    output_name: str

    @property
    def width(self) -> int:
        return 112 if self.arcface else 96

    def flags(self) -> list[str]:
        norm = ["--mean", "0", "--std", "1"] if self.inside else ["--mean", "127.5", "--std", "128"]
        return ["--color", "BGR" if self.bgr else "RGB", *norm, "--template",
                "arcface" if self.arcface else "sphereface", "--arch", "mobilefacenet"]


VARIANTS = {
    "insightface": Variant("insightface", bgr=True, inside=True, arcface=False, fixed=True, input_name="input.1",
                           output_name="output0"),
    "rgb-outside": Variant("rgb-outside", bgr=False, inside=False, arcface=False, fixed=False, input_name="data",
                           output_name="fc1"),
    "arcface-112": Variant("arcface-112", bgr=True, inside=False, arcface=True, fixed=True, input_name="input.1",
                           output_name="pre_fc1"),
}


def export_foreign(model, v: Variant, path: Path) -> Path:
    """The MobileFaceNet weights as a foreign NCHW ONNX model of variant ``v`` (batch 1 in the graph)."""
    import torch
    from torch import nn

    class Foreign(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if v.arcface:
                x = x[:, :, :, 8:104]
            if v.bgr:
                x = x.flip(1)
            if v.inside:
                x = (x - 127.5) / 128.0
            y = self.model(x)[0]
            return y.reshape(1, 128) if v.fixed else y

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(Foreign().eval(), (torch.zeros(1, 3, 112, v.width),), str(path),
                          input_names=[v.input_name], output_names=[v.output_name], opset_version=17, dynamo=False)
    return path


# ---- real data: a small pairs file, a small photo tree ---------------------------------------------------

def small_pairs(path: Path, folds: int = 2, per_half: int = 4) -> Path:
    """The first ``per_half`` same and different pairs of the first ``folds`` View 2 folds."""
    lines = (LFW / "pairs.txt").read_text().splitlines()
    n = int(lines[0].split()[1])
    body = []
    for k in range(folds):
        fold = lines[1 + 2 * n * k: 1 + 2 * n * (k + 1)]
        body += fold[:per_half] + fold[n:n + per_half]
    path.write_text(f"{folds}\t{per_half}\n" + "\n".join(body) + "\n")
    return path


def photo_tree(root: Path, people: int = 5, per_person: int = 4) -> Path:
    """``people`` LFW people with >= ``per_person`` images, ``per_person`` of them each, copied as they are."""
    names = sorted(p.name for p in (LFW / "images").iterdir()
                   if len(list((LFW / "images" / p.name).glob("*.jpg"))) >= per_person)
    for name in names[::max(1, len(names) // people)][:people]:
        (root / name).mkdir(parents=True)
        for img in sorted((LFW / "images" / name).glob("*.jpg"))[:per_person]:
            shutil.copy(img, root / name / img.name)
    return root


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    """The native model (imported, exported), the foreign ONNX files, a pairs file and a photo tree."""
    from faceembed.models.checkpoint import load_checkpoint

    root = tmp_path_factory.mktemp("foreign")
    cli("import", MFN_CKPT, "--out", root / "mfn.pt")
    cli("export", root / "mfn.pt", "--out", root / "native.onnx")
    model = load_checkpoint(root / "mfn.pt")[0].eval()
    sources = {k: export_foreign(model, v, root / f"{k}.src.onnx") for k, v in VARIANTS.items()}
    return {"root": root, "native": root / "native.onnx", "sources": sources,
            "pairs": small_pairs(root / "pairs.txt"), "photos": photo_tree(root / "photos")}


@pytest.fixture(scope="module")
def imported(work) -> dict[str, Path]:
    """Every variant brought in with ``faceembed import`` and its flags."""
    out = {}
    for k, v in VARIANTS.items():
        out[k] = work["root"] / f"{k}.onnx"
        cli("import", work["sources"][k], "--out", out[k], *v.flags())
    return out


def features_of(folder: Path) -> dict[str, np.ndarray]:
    """The embedding per image of an infer output folder (the card's role names it)."""
    from faceembed.batch.features import read_features

    return read_features(folder)["embedding"]


def tobin_infer(work: dict, model: Path, tag: str, *infer_args: str) -> Path:
    out = work["root"] / f"tobin-{tag}"
    if not out.exists():
        cli("tobin", "lfw", "--out", out, "--data", LFW, "--pairs", work["pairs"], "--model", model,
            "--batch-size", "8")
    res = work["root"] / f"infer-{tag}{'-'.join(infer_args)}"
    cli("infer", "--model", model, "--input", out, "--output", res, "--threads", "2", *infer_args,
        cwd=work["root"])
    return res


@pytest.fixture(scope="module")
def native_features(work) -> dict[str, np.ndarray]:
    return features_of(tobin_infer(work, work["native"], "native"))


# ---- the tests -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", list(VARIANTS))
def test_import_reads_the_graph_and_the_flags(imported, key: str) -> None:
    v = VARIANTS[key]
    card = json.loads(cli("card", imported[key]).stdout)
    assert (card["input_name"], card["layout"], card["height"], card["width"]) == (v.input_name, "NCHW", 112,
                                                                                  v.width)
    assert card["color"] == ("BGR" if v.bgr else "RGB") and card["template"] == ("arcface" if v.arcface else
                                                                                 "sphereface")
    assert card["outputs"] == [{"name": v.output_name, "role": "embedding"}] and card["embedding_size"] == 128
    assert card["batch"] == (1 if v.fixed else None)


@pytest.mark.parametrize("key", list(VARIANTS))
def test_tobin_infer_verify_give_the_native_embeddings(work, imported, native_features, key: str) -> None:
    """``tobin lfw --model`` writes the card's input (NCHW, colour, normalisation, crop), ``infer`` runs a
    fixed-batch graph on files of 8 rows (and in chunks of 3), ``verify`` reads the card's embedding output."""
    res = tobin_infer(work, imported[key], key)
    manifest = json.loads((work["root"] / f"tobin-{key}" / "manifest.json").read_text())
    assert manifest["layout"] == "NCHW" and manifest["item_shape"] == [3, 112, VARIANTS[key].width]
    assert_same_embeddings(features_of(res), native_features)
    chunked = tobin_infer(work, imported[key], key, "--batch", "3")
    assert_same_embeddings(features_of(chunked), native_features)
    outputs = json.loads((res / "outputs.json").read_text())["outputs"]
    assert [(o["name"], o["role"]) for o in outputs] == [(VARIANTS[key].output_name, "embedding")]
    got = cli("verify", "--pairs", work["pairs"], "--features", res).stdout
    ref = cli("verify", "--pairs", work["pairs"], "--features", work["root"] / "infer-native").stdout
    assert got == ref and "accuracy" in got


def test_align_takes_size_and_template_from_the_card(work, imported) -> None:
    from faceembed.data.images import read_image_rgb
    from faceembed.data.lfw import read_landmarks

    marks = read_landmarks(LFW / "lfw_landmark.txt")
    person = sorted(p.name for p in work["photos"].iterdir())[0]
    rels = sorted(f"{person}/{p.name}" for p in (work["photos"] / person).iterdir())
    lm = work["root"] / "photos_landmarks.txt"
    lm.write_text("".join(f"{r}\t" + " ".join(str(int(v)) for v in marks[r].reshape(-1)) + "\n" for r in rels))
    native_dir, arc_dir = work["root"] / "align-native", work["root"] / "align-arcface"
    cli("align", "--images", work["photos"], "--out", native_dir, "--landmarks", lm, "--model", work["native"])
    cli("align", "--images", work["photos"], "--out", arc_dir, "--landmarks", lm, "--model", imported["arcface-112"])
    for rel in rels:
        png = Path(rel).with_suffix(".png")
        a, b = read_image_rgb(native_dir / png), read_image_rgb(arc_dir / png)
        assert a.shape == (112, 96, 3) and b.shape == (112, 112, 3)
        assert np.abs(a.astype(int) - b[:, 8:104].astype(int)).max() <= 1  # the same pixels, 8 px to the right
    bad = cli("align", "--images", work["photos"], "--out", work["root"] / "align-bad", "--landmarks", lm,
              "--model", imported["arcface-112"], "--size", "112x96", ok=False)
    assert bad.returncode == 2 and "--size" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("key", ["insightface", "arcface-112"])
def test_photo_commands_give_the_native_embeddings(work, imported, key: str) -> None:
    """``tobin photos``, ``enroll``, ``identify`` and ``evaluate-identification`` with the foreign model: the
    card's crop, colour, layout and fixed batch; the native model's templates and answers."""
    from faceembed.batch.features import read_features
    from faceembed.evaluation.identification import load_gallery

    root, photos = work["root"], work["photos"]
    lm = LFW / "lfw_landmark.txt"
    results = {}
    for tag, model in (("native", work["native"]), (key, imported[key])):
        gal = root / f"gallery-{tag}.npz"
        if not gal.exists():
            cli("enroll", "--images", photos, "--model", model, "--out", gal, "--landmarks", lm)
        cli("identify", "--gallery", gal, "--images", photos, "--model", model, "--detector", "none",
            "--json", root / f"identify-{tag}.json")
        ident = json.loads((root / f"identify-{tag}.json").read_text())["answers"]
        ev = root / f"evaluate-{tag}.json"
        cli("evaluate-identification", photos, "--model", model, "--min-images", "4", "--landmarks", lm,
            "--json", ev)
        tb = root / f"photos-tobin-{tag}"
        if not tb.exists():
            cli("tobin", "photos", "--images", photos, "--out", tb, "--model", model, "--landmarks", lm,
                "--batch-size", "5")
        inf = root / f"photos-infer-{tag}"
        if not inf.exists():
            cli("infer", "--model", model, "--input", tb, "--output", inf, "--threads", "2")
        results[tag] = (load_gallery(gal), ident, json.loads(ev.read_text()), read_features(inf)["embedding"])
    (g_ref, id_ref, ev_ref, f_ref), (g, ident, ev, f) = results["native"], results[key]
    assert g.names == g_ref.names and cosines(g.templates, g_ref.templates).min() >= MIN_COSINE
    assert sorted(ident) == sorted(id_ref) and len(ident) == 20
    for photo, hits in ident.items():
        assert [h["name"] for h in hits] == [h["name"] for h in id_ref[photo]]
        assert np.allclose([h["score"] for h in hits], [h["score"] for h in id_ref[photo]], atol=2e-4)
    assert (ev["rank1"], ev["rank5"], ev["probes"]) == (ev_ref["rank1"], ev_ref["rank5"], ev_ref["probes"])
    assert_same_embeddings(f, f_ref)


@pytest.mark.slow
def test_quantize_calibrates_in_the_model_batch_and_auto_backend(work, imported, native_features) -> None:
    """``quantize`` of a fixed-batch-1 NCHW model calibrated on its own ``tobin lfw`` files; ``--backend auto``
    measures and runs the foreign model on its input files."""
    model, calib = imported["insightface"], work["root"] / "tobin-insightface"
    if not calib.exists():
        tobin_infer(work, model, "insightface")
    q = work["root"] / "insightface.int8.onnx"
    count = json.loads((calib / "manifest.json").read_text())["count"]
    report = json.loads(cli("quantize", model, "--calibrate", calib, "--out", q, "--min-cosine", "0",
                            "--no-progress").stdout)
    assert report["calibration_images"] == count  # every row: a fixed batch of 1 leaves no partial batch out
    assert report["agreement"]["output0"]["min_cosine"] >= 0.95  # 27 faces, no float-layer search
    card = json.loads(cli("card", q).stdout)
    assert card["batch"] == 1 and card["layout"] == "NCHW" and card["outputs"][0]["name"] == "output0"
    auto = tobin_infer(work, model, "insightface", "--backend", "auto")
    summary = json.loads((auto / "infer_summary.json").read_text())
    assert summary["backend"] in ("ort", "openvino")
    cos = cosines(*(np.stack([d[n] for n in sorted(native_features)]) for d in (features_of(auto),
                                                                                 native_features)))
    assert cos.min() >= 0.999  # auto may pick OpenVINO bf16, accepted at cosine >= 0.999


@pytest.mark.slow
def test_bench_measures_a_model_file_beside_the_built_ins(work, imported) -> None:
    """``bench --models PATH``: the file is timed with the same peers (ONNX Runtime default session), its int8
    calibrated in its own batch, on real LFW faces aligned and preprocessed per its card."""
    model = imported["arcface-112"]
    out = work["root"] / "bench.json"
    cli("bench", "--models", f"mnist,{model}", "--backends", "ort", "--precision", "fp32,int8", "--batch", "1,2",
        "--min-seconds", "0.05", "--data", DATA, "--work-dir", work["root"] / "bench", "--no-data-path",
        "--no-task-accuracy", "--json", out, "--no-progress", cwd=work["root"])
    report = json.loads(out.read_text())
    rows = [r for r in report["rows"] if r["model"] == str(model)]
    configs = {(r["config"], r["precision"], r["batch"]) for r in rows}
    assert {("default session (peer default)", "fp32", 1), ("tuned session", "fp32", 2),
            ("tuned session, int8 QDQ (scheme full)", "int8", 2)} <= configs
    fp32 = [r for r in rows if r["precision"] == "fp32"]
    assert all(r["accuracy_ok"] and r["accuracy"]["min_cosine"] >= MIN_COSINE for r in fp32)
    assert {r["model"] for r in report["rows"]} == {"mnist", str(model)}
    assert str(model) in report["best"]


@pytest.mark.parametrize("flags,needle", [(["--layout", "NHWC"], "--layout"), (["--size", "112x112"], "--size")])
def test_card_mistakes_are_one_line_naming_the_flag(work, flags: list[str], needle: str) -> None:
    v = VARIANTS["insightface"]
    proc = cli("import", work["sources"]["insightface"], "--out", work["root"] / "bad.onnx", *v.flags(), *flags,
               ok=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (work["root"] / "bad.onnx").exists()


def test_runtime_errors_are_typed_lines(work, imported, native_features) -> None:
    """The native model's NHWC files fed to the NCHW fixed-batch model: one line naming both shapes."""
    proc = cli("infer", "--model", imported["insightface"], "--input", work["root"] / "tobin-native", "--output",
               work["root"] / "infer-wrong", ok=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "[112, 96, 3]" in lines[0] and "[3, 112, 96]" in lines[0]
