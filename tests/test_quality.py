"""PFE uncertainty as a face quality: the card's ``quality`` field (round trip, validation), qualities against a
direct float64 computation, ``train-pfe`` filling it from the validation people only, ``enroll`` / ``identify
--min-quality`` listing what they set aside, ``identify --metric mls`` ranking like a direct float64 MLS, the
Python API's ``Face.quality`` and ``Gallery.quality``, and one-line errors for models that cannot give a quality.

The PFE model here is a tiny ONNX graph with a card: ``mu`` = the column means of a 4x4 RGB crop, ``sigma_sq =
exp(-0.02 * mu)`` (dark photos are uncertain), so that low-quality faces are known in advance."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faceembed.errors import FaceembedError, InputFormatError
from faceembed.models.card import ModelCard, OutputSpec, Quality
from test_cli_errors import assert_one_line_error
from test_train_pfe import CONFIG, tiny_lfw  # noqa: F401  (a fixture)

PEOPLE = ("Ann", "Bob", "Cid")
BRIGHTNESS = (1.0, 0.9, 0.2)  # the third photo of each person is dark: uncertain
D = 12


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faceembed", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def pfe_card(quality: Quality | None = None, pfe: bool = True) -> ModelCard:
    outputs = (OutputSpec("mu", "mu"), OutputSpec("sigma_sq", "sigma_sq")) if pfe else (OutputSpec("mu", "embedding"),)
    return ModelCard("input", "NHWC", 4, 4, "RGB", (0.0,), (1.0,), "none", None, outputs, D,
                     "mls" if pfe else "cosine", name="tiny-pfe" if pfe else "tiny", quality=quality)


def tiny_model(path: Path, card: ModelCard) -> Path:
    """``mu`` [N, 12] = column means of the crop; with a sigma_sq output, ``exp(-0.02 * mu)``."""
    import onnx
    from onnx import TensorProto, helper

    from faceembed.models.card_io import card_to_onnx

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4, 4, 3])
    nodes = [helper.make_node("ReduceMean", ["input"], ["cols"], axes=[1], keepdims=0),
             helper.make_node("Flatten", ["cols"], ["mu"]),
             helper.make_node("Constant", [], ["k"], value=helper.make_tensor("k", TensorProto.FLOAT, [], [-0.02])),
             helper.make_node("Mul", ["mu", "k"], ["z"]), helper.make_node("Exp", ["z"], ["sigma_sq"])]
    outs = [helper.make_tensor_value_info(o.name, TensorProto.FLOAT, ["N", D]) for o in card.outputs]
    graph = helper.make_graph(nodes if len(outs) == 2 else nodes[:2], "tiny_pfe", [x], outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    card_to_onnx(model, card)
    onnx.save(model, path)
    return path


def photo(path: Path, colours: np.ndarray, brightness: float) -> None:
    """A 16x16 photo of four vertical bands, one colour each."""
    from PIL import Image

    img = np.repeat(np.repeat(colours[None], 16, axis=0), 4, axis=1) * brightness
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)


def u_direct(sigma_sq: np.ndarray) -> list[float]:
    """Harmonic mean of each row, in Python floats."""
    return [len(row) / math.fsum(1.0 / float(v) for v in row) for row in sigma_sq]


def q_direct(sigma_sq: np.ndarray, u_ref: float) -> list[float]:
    return [u_ref / (u_ref + u) for u in u_direct(sigma_sq)]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """People folders (3 photos each, the third dark), probe photos, and the models: PFE with a quality
    reference (u_ref = median uncertainty of the enrolled photos), PFE without, and a cosine model."""
    from faceembed.faces.embed import FaceModel, embed_images

    t = tmp_path_factory.mktemp("quality")
    rng = np.random.default_rng(0)
    colours = {p: rng.uniform(60, 250, (4, 3)) for p in PEOPLE}
    for p in PEOPLE:
        for i, b in enumerate(BRIGHTNESS):
            photo(t / "people" / p / f"{i}.png", colours[p] * rng.uniform(0.97, 1.03, (4, 3)), b)
        photo(t / "probes" / f"{p}_bright.png", colours[p] * rng.uniform(0.95, 1.05, (4, 3)), 1.0)
        photo(t / "probes" / f"{p}_dark.png", colours[p] * rng.uniform(0.9, 1.1, (4, 3)), 0.25)
    no_ref = tiny_model(t / "noref.onnx", pfe_card())
    rels = [f"{p}/{i}.png" for p in PEOPLE for i in range(3)]
    res = embed_images(t / "people", rels, FaceModel.load(no_ref), detector="none", workers=1)
    u_ref = float(np.median(u_direct(res.sigma_sq)))
    pfe = tiny_model(t / "pfe.onnx", pfe_card(Quality(u_ref, {"0.05": 0.3, "0.1": 0.35, "0.2": 0.4}, "test")))
    return {"root": t, "pfe": pfe, "noref": no_ref, "cosine": tiny_model(t / "cos.onnx", pfe_card(pfe=False)),
            "u_ref": u_ref, "rels": res.relpaths, "sigma_sq": res.sigma_sq}


# ---- the card's quality field ------------------------------------------------------------------------------

qualities_st = st.floats(1e-6, 1.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(u_ref=st.floats(1e-9, 1e6, allow_nan=False), qs=st.lists(qualities_st, min_size=0, max_size=3),
       protocol=st.text(max_size=20))
def test_card_quality_json_round_trip(u_ref, qs, protocol):
    table = dict(zip(("0.05", "0.1", "0.2"), sorted(qs), strict=False))
    card = pfe_card(Quality(u_ref, table, protocol))
    assert ModelCard.from_json(card.to_json()) == card
    assert json.loads(card.to_json())["quality"] == {"u_ref": u_ref, "min_quality_for_reject": table,
                                                     "protocol": protocol}


def test_card_without_quality_keeps_its_json():
    card = pfe_card()
    assert "quality" not in card.to_dict() and ModelCard.from_json(card.to_json()) == card
    assert ModelCard.from_dict({**card.to_dict(), "quality": None}) == card


@pytest.mark.parametrize("quality, needle", [
    ({"u_ref": 0.0, "min_quality_for_reject": {}, "protocol": "p"}, "'u_ref'"),
    ({"u_ref": float("inf"), "min_quality_for_reject": {}, "protocol": "p"}, "'u_ref'"),
    ({"u_ref": True, "min_quality_for_reject": {}, "protocol": "p"}, "'u_ref'"),
    ({"u_ref": 1.0, "min_quality_for_reject": {"0.1": 1.5}, "protocol": "p"}, "'min_quality_for_reject' entry"),
    ({"u_ref": 1.0, "min_quality_for_reject": {"ten": 0.5}, "protocol": "p"}, "'min_quality_for_reject' entry"),
    ({"u_ref": 1.0, "min_quality_for_reject": {"0.1": 0.5, "0.2": 0.4}, "protocol": "p"}, "must not fall"),
    ({"u_ref": 1.0, "min_quality_for_reject": [], "protocol": "p"}, "need an object"),
    ({"u_ref": 1.0, "min_quality_for_reject": {}, "protocol": 3}, "'protocol'"),
    ({"u_ref": 1.0, "min_quality_for_reject": {}}, "lacks 'protocol'"),
    ({"u_ref": 1.0, "min_quality_for_reject": {}, "protocol": "p", "median": 1}, "unknown 'median'"),
    ("high", "must be a JSON object"),
])
def test_card_quality_validation_is_one_line(quality, needle):
    with pytest.raises(InputFormatError) as err:
        ModelCard.from_dict({**pfe_card().to_dict(), "quality": quality})
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_card_quality_needs_sigma_sq():
    with pytest.raises(InputFormatError, match="'quality' is set but no output has role 'sigma_sq'"):
        pfe_card(pfe=False).replace(quality=Quality(1.0, {}, "p"))


# ---- quality values --------------------------------------------------------------------------------------

def test_quality_against_direct_float64(world):
    from faceembed.evaluation.rejection import quality_reference
    from faceembed.faces.embed import FaceModel

    model = FaceModel.load(world["pfe"])
    sig = world["sigma_sq"]
    assert np.allclose(model.uncertainty(sig), u_direct(sig), rtol=1e-12, atol=0)
    assert np.allclose(model.quality(sig), q_direct(sig, world["u_ref"]), rtol=1e-12, atol=0)
    assert FaceModel.load(world["noref"]).quality(sig) is None and FaceModel.load(world["cosine"]).quality(None) is None

    ref = quality_reference(sig, "test")
    q = np.array(q_direct(sig, ref.u_ref))
    assert ref.u_ref == pytest.approx(float(np.median(u_direct(sig))), rel=1e-12)
    assert sorted(ref.min_quality_for_reject) == ["0.05", "0.1", "0.2"]
    for fraction, threshold in ref.min_quality_for_reject.items():
        assert int((q < threshold).sum()) == math.floor(float(fraction) * len(q)), "rejects exactly that share"


def test_analyzer_faces_and_gallery_quality(world):
    import faceembed as fe
    from faceembed.data.images import read_image
    from faceembed.evaluation.scores import fuse_gaussians

    people = world["root"] / "people"
    analyzer = fe.FaceAnalyzer(world["pfe"], detector="none")
    face = analyzer.faces(read_image(people / "Ann" / "2.png"))[0]
    assert face.uncertainty == pytest.approx(u_direct(face.sigma_sq[None])[0], rel=1e-12)
    assert face.quality == pytest.approx(q_direct(face.sigma_sq[None], world["u_ref"])[0], rel=1e-12)
    assert fe.FaceAnalyzer(world["noref"], detector="none").faces(people / "Ann" / "2.png")[0].quality is None
    plain = fe.FaceAnalyzer(world["cosine"], detector="none").faces(people / "Ann" / "2.png")[0]
    assert plain.quality is None and plain.uncertainty is None and plain.sigma_sq is None

    gallery = fe.Gallery.from_folder(people, analyzer, min_quality=0.3)
    assert sorted(r for r, _ in gallery.set_aside) == [f"{p}/2.png" for p in PEOPLE], "the dark photos"
    assert all(q < 0.3 for _, q in gallery.set_aside) and not gallery.skipped
    sig = {p: [analyzer.faces(people / p / f"{i}.png")[0].sigma_sq for i in (0, 1)] for p in PEOPLE}
    for p in PEOPLE:
        fused = fuse_gaussians(np.stack(gallery.embeddings[p]), np.stack(sig[p]))[1]
        assert gallery.uncertainty[p] == pytest.approx(u_direct(fused[None])[0], rel=1e-5)
        assert gallery.quality[p] == pytest.approx(q_direct(fused[None], world["u_ref"])[0], rel=1e-5)
    probe = world["root"] / "probes" / "Bob_bright.png"
    assert gallery.search(probe, k=1, metric="mls")[0][0] == "Bob" == gallery.search(probe, k=1)[0][0]
    with pytest.raises(fe.LowQualityError, match=r"quality 0\.\d+ < 0\.3"):
        gallery.search(world["root"] / "probes" / "Bob_dark.png", min_quality=0.3)
    gallery.save(world["root"] / "api.npz")
    again = fe.Gallery.load(world["root"] / "api.npz", analyzer)
    assert again.quality == pytest.approx(gallery.quality)
    with pytest.raises(FaceembedError, match="no quality reference"):
        fe.Gallery.from_folder(people, fe.FaceAnalyzer(world["noref"], detector="none"), min_quality=0.3)


# ---- enroll / identify --min-quality, --metric mls ----------------------------------------------------------

def test_enroll_and_identify_set_aside_low_quality(world, tmp_path):
    from faceembed.evaluation.identification import load_gallery

    root, q_min = world["root"], 0.3
    quality = dict(zip(world["rels"], q_direct(world["sigma_sq"], world["u_ref"]), strict=True))
    low = sorted(r for r, q in quality.items() if q < q_min)
    assert low == [f"{p}/2.png" for p in PEOPLE], "the dark photos are the low-quality ones"
    out = tmp_path / "g.npz"
    proc = run_cli("enroll", "--images", root / "people", "--model", world["pfe"], "--out", out, "--detector", "none",
                   "--min-quality", q_min, "--workers", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["images"] == 6 and summary["min_quality"] == q_min
    assert [a["image"] for a in summary["set_aside"]] == low
    assert all(a["quality"] == pytest.approx(quality[a["image"]], abs=1e-4) for a in summary["set_aside"])
    skipped = (tmp_path / "g.skipped.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in skipped] == low
    assert all(line.split("\t")[1].startswith("quality 0.") and line.endswith(" < 0.3") for line in skipped)
    assert sum("set aside" in line for line in proc.stderr.splitlines()) == 3
    assert load_gallery(out).counts.tolist() == [2, 2, 2]

    ids = tmp_path / "ids.json"
    proc = run_cli("identify", "--gallery", out, "--images", root / "probes", "--detector", "none", "--top-k", "1",
                   "--min-quality", q_min, "--json", ids, "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(ids.read_text())
    assert sorted(a["image"] for a in result["set_aside"]) == sorted(f"{p}_dark.png" for p in PEOPLE)
    assert all(a["quality"] < q_min for a in result["set_aside"])
    assert sorted(result["answers"]) == sorted(f"{p}_bright.png" for p in PEOPLE)
    assert all(hits[0]["name"] == r.split("_")[0] for r, hits in result["answers"].items())
    assert all(result["probes"][r]["quality"] >= q_min for r in result["answers"])
    assert "quality 0." in proc.stdout


def test_identify_mls_ranking_equals_direct_float64(world, tmp_path):
    from faceembed.evaluation.identification import load_gallery
    from faceembed.faces.embed import FaceModel, embed_images

    root = world["root"]
    out = tmp_path / "g.npz"
    proc = run_cli("enroll", "--images", root / "people", "--model", world["pfe"], "--out", out, "--detector", "none",
                   "--workers", "1", "--no-progress")
    assert proc.returncode == 0 and json.loads(proc.stdout)["pfe_fusion"], proc.stderr
    ids = tmp_path / "mls.json"
    proc = run_cli("identify", "--gallery", out, "--images", root / "probes", "--detector", "none", "--top-k", "3",
                   "--metric", "mls", "--json", ids, "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    answers = json.loads(ids.read_text())["answers"]
    gal = load_gallery(out)
    probes = sorted(answers)
    res = embed_images(root / "probes", probes, FaceModel.load(world["pfe"]), detector="none", workers=1)
    for r, mu, s in zip(res.relpaths, res.embeddings.astype(np.float64), res.sigma_sq.astype(np.float64),
                        strict=True):
        mu = mu / np.linalg.norm(mu)
        direct = {}
        for name, t, ts in zip(gal.names, gal.templates.astype(np.float64), gal.sigma_sq.astype(np.float64),
                               strict=True):
            var = s + ts
            direct[name] = -0.5 * math.fsum((mu - t) ** 2 / var + np.log(var)) - 0.5 * D * math.log(2 * math.pi)
        ranked = sorted(direct, key=lambda n: -direct[n])
        assert [h["name"] for h in answers[r]] == ranked
        assert [h["score"] for h in answers[r]] == pytest.approx([direct[n] for n in ranked], abs=1e-3)
    assert all(answers[r][0]["name"] == r.split("_")[0] for r in probes if "bright" in r)


def test_evaluate_identification_reports_both_metrics():
    from faceembed.evaluation.identification import evaluate_identification

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(10, 8))
    labels = [f"p{i}" for i in range(10) for _ in range(6)]
    emb = np.repeat(centres, 6, axis=0) + 0.3 * rng.normal(size=(60, 8))
    sig = rng.uniform(0.05, 0.5, (60, 8))
    res = evaluate_identification(emb, labels, sigma_sq=sig, impostor_fraction=0.2, max_rank=5)
    assert set(res["by_metric"]) == {"cosine", "mls"}
    for m in ("cosine", "mls"):
        assert {"rank1", "rank5", "cmc", "open_set"} <= set(res["by_metric"][m])
        assert 0 <= res["by_metric"][m]["open_set"]["dir"] <= 1
    assert res["rank1"] == res["by_metric"]["cosine"]["rank1"], "top level stays cosine"
    assert "by_metric" not in evaluate_identification(emb, labels, max_rank=5)


def test_evaluate_identification_cli_prints_both_metrics(world, tmp_path):
    proc = run_cli("evaluate-identification", world["root"] / "people", "--model", world["pfe"], "--min-images", "3",
                   "--detector", "none", "--json", tmp_path / "e.json", "--workers", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    brief, full = json.loads(proc.stdout), json.loads((tmp_path / "e.json").read_text())
    for m in ("cosine", "mls"):
        assert brief[m] == {"rank1": full["by_metric"][m]["rank1"], "rank5": full["by_metric"][m]["rank5"],
                            "dir_at_far": full["by_metric"][m]["open_set"]["dir"]}


# ---- one-line errors ---------------------------------------------------------------------------------------

def test_min_quality_and_mls_need_a_pfe_model(world, tmp_path):
    root = world["root"]
    enroll = ["enroll", "--images", root / "people", "--out", tmp_path / "g.npz", "--detector", "none",
              "--min-quality", "0.4"]
    assert_one_line_error(run_cli(*enroll, "--model", world["cosine"]), "--min-quality needs a PFE model")
    assert_one_line_error(run_cli(*enroll, "--model", world["noref"]), "no quality reference")
    assert_one_line_error(run_cli(*enroll[:-1], "1.5", "--model", world["pfe"]), "--min-quality", "1.5")
    assert not (tmp_path / "g.npz").exists()
    proc = run_cli("enroll", "--images", root / "people", "--model", world["cosine"], "--out", tmp_path / "c.npz",
                   "--detector", "none", "--workers", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    identify = ["identify", "--gallery", tmp_path / "c.npz", "--images", root / "probes", "--detector", "none"]
    assert_one_line_error(run_cli(*identify, "--min-quality", "0.4"), "--min-quality needs a PFE model")
    assert_one_line_error(run_cli(*identify, "--metric", "mls"), "--metric mls", "no fused sigma_sq")
    assert_one_line_error(run_cli(*identify, "--metric", "mls", "--model", world["pfe"]), "no fused sigma_sq")


def test_compare_reports_each_faces_quality(world, tmp_path):
    from faceembed.models.card import Thresholds
    from faceembed.models.card_io import read_card, write_card

    model = tmp_path / "pfe_thr.onnx"
    model.write_bytes(world["pfe"].read_bytes())
    write_card(model, read_card(model).replace(thresholds=Thresholds("cosine", "test", "set by the test",
                                                                      {"0.001": 0.9})))
    a, b = world["root"] / "people" / "Ann" / "0.png", world["root"] / "people" / "Ann" / "2.png"
    proc = run_cli("compare", a, b, "--model", model, "--detector", "none", "--json", tmp_path / "m.json")
    assert proc.returncode == 0, proc.stderr
    faces = json.loads((tmp_path / "m.json").read_text())["faces"]
    assert faces[0]["quality"] > 0.5 > faces[1]["quality"] and faces[1]["uncertainty"] > faces[0]["uncertainty"]
    assert "faces: quality" in proc.stdout


# ---- train-pfe fills the card from the validation people ---------------------------------------------------

def test_train_pfe_heads_carry_quality_from_validation_people(tiny_lfw, tmp_path):  # noqa: F811
    from faceembed.evaluation.rejection import quality_reference
    from faceembed.models.card_io import read_card, write_card
    from faceembed.models.checkpoint import load_checkpoint
    from faceembed.training.pfe_fit import head_sigma_sq
    from faceembed.training.train_pfe import lfw_features, train_pfe_crossfold

    root, backbone = tiny_lfw
    out = tmp_path / "pfe"
    train_pfe_crossfold(backbone, root, root / "lfw_landmark.txt", out, CONFIG, progress=False, workers=1)
    feats = lfw_features(backbone, root, root / "lfw_landmark.txt", out / "cache", workers=1, progress=False)
    for k in range(2):
        head = out / "heads" / f"fold_{k:02d}.pt"
        card = read_card(head)
        model, _, _ = load_checkpoint(head, expect_arch="pfe")
        _, val_people = feats.fold_split(k, CONFIG)
        va_idx, _ = feats.rows_of(val_people)
        expected = quality_reference(head_sigma_sq(model.head, feats.fmaps[va_idx]), card.quality.protocol)
        assert card.quality == expected and "validation people" in card.quality.protocol
        assert not set(val_people) & feats.people_of_fold[k]
    old = out / "heads" / "fold_00.pt"
    before = read_card(old).quality
    write_card(old, read_card(old).replace(quality=None))  # a head saved before the card had quality
    again = train_pfe_crossfold(backbone, root, root / "lfw_landmark.txt", out, CONFIG, progress=False, workers=1)
    assert all(f.get("reused") for f in again["folds"]) and read_card(old).quality == before
