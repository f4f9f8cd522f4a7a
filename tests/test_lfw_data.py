"""LFW pairs / landmark parsers and writers, image listing and reading."""

from __future__ import annotations

import contextlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faceembed.data.images import list_identity_folder, list_images, read_image_rgb
from faceembed.data.lfw import (
    Pair,
    fold_people,
    format_pairs,
    image_relpath,
    list_lfw_images,
    pair_images,
    read_landmarks,
    read_pairs,
    write_landmarks,
    write_pairs,
)
from faceembed.errors import InputFormatError, MissingInputError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared/data not found: real-data test skipped")
    return SHARED


VIEW2 = "2\t1\nAl\t1\t2\nAl\t1\tBo\t3\nCy\t2\t4\nCy\t1\tDi\t1\n"


def test_image_relpath() -> None:
    assert image_relpath("George_W_Bush", 7) == "George_W_Bush/George_W_Bush_0007.jpg"


def test_read_view2_small(tmp_path: Path) -> None:
    p = tmp_path / "pairs.txt"
    p.write_text(VIEW2)
    pairs = read_pairs(p)
    assert pairs == [
        Pair(0, "Al", 1, "Al", 2, True), Pair(0, "Al", 1, "Bo", 3, False),
        Pair(1, "Cy", 2, "Cy", 4, True), Pair(1, "Cy", 1, "Di", 1, False),
    ]
    assert pairs[1].relpath2 == "Bo/Bo_0003.jpg"
    assert pair_images(pairs) == sorted({"Al/Al_0001.jpg", "Al/Al_0002.jpg", "Bo/Bo_0003.jpg",
                                         "Cy/Cy_0002.jpg",
                                         "Cy/Cy_0004.jpg", "Cy/Cy_0001.jpg", "Di/Di_0001.jpg"})
    assert fold_people(pairs) == [{"Al", "Bo"}, {"Cy", "Di"}]


def test_read_view1_small(tmp_path: Path) -> None:
    p = tmp_path / "dev.txt"
    p.write_text("1\nAl 1 2\nAl 1 Bo 3\n")
    assert read_pairs(p) == [Pair(0, "Al", 1, "Al", 2, True), Pair(0, "Al", 1, "Bo", 3, False)]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("2\t1\nAl\t1\t2\nAl\t1\tBo\t3\nCy\t2\t4\n", "line 4"),  # too few lines
        ("1\t1\nAl\t1\t2\nAl\t1\tBo\t3\nextra\t1\t2\n", "line 4"),  # too many lines
        ("1\t1\nAl\t1\nAl\t1\tBo\t3\n", "line 2"),  # field count
        ("1\t1\nAl\t1\t2\nAl\tx\tBo\t3\n", "line 3"),  # non-integer
        ("1\t1\nAl\t0\t2\nAl\t1\tBo\t3\n", "line 2"),  # index 0
        ("1\t1\t1\nAl\t1\t2\nAl\t1\tBo\t3\n", "line 1"),  # header
        ("ten\nAl\t1\t2\nAl\t1\tBo\t3\n", "line 1"),
        ("", "line 1"),
    ],
)
def test_read_pairs_errors_name_line(tmp_path: Path, text: str, line: str) -> None:
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(InputFormatError) as exc:
        read_pairs(p)
    assert str(p) in str(exc.value) and line in str(exc.value)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError):
        read_pairs(tmp_path / "nope.txt")
    with pytest.raises(MissingInputError):
        read_landmarks(tmp_path / "nope.txt")


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ_-.'", min_size=1, max_size=12)
indices = st.integers(min_value=1, max_value=9999)


@st.composite
def pair_lists(draw: st.DrawFn) -> list[Pair]:
    n_folds = draw(st.integers(1, 4))
    per = draw(st.integers(1, 4))
    out = []
    for f in range(n_folds):
        fold = f if n_folds > 1 else 0
        for _ in range(per):
            n = draw(names)
            out.append(Pair(fold, n, draw(indices), n, draw(indices), True))
        for _ in range(per):
            out.append(Pair(fold, draw(names), draw(indices), draw(names), draw(indices), False))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=pair_lists())
def test_pairs_round_trip(tmp_path: Path, pairs: list[Pair]) -> None:
    p = tmp_path / "rt.txt"
    write_pairs(p, pairs)
    assert read_pairs(p) == pairs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.lists(st.text(max_size=30), min_size=1, max_size=6))
def test_pairs_garbage_only_input_format_error(tmp_path: Path, garbage: list[str]) -> None:
    p = tmp_path / "g.txt"
    p.write_text("1\t1\n" + "\n".join(garbage), encoding="utf-8", errors="surrogatepass")
    with contextlib.suppress(InputFormatError):
        read_pairs(p)


def test_format_pairs_rejects_unbalanced() -> None:
    with pytest.raises(ValueError):
        format_pairs([Pair(0, "a", 1, "a", 2, True)])


def test_landmarks_both_formats(tmp_path: Path) -> None:
    inter = tmp_path / "a.txt"
    inter.write_text("A/A_0001.jpg\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10\n")
    xxyy = tmp_path / "b.txt"
    xxyy.write_text("A/A_0001.jpg 1.0 3.0 5.0 7.0 9.0 2.0 4.0 6.0 8.0 10.0\n")
    expect = np.arange(1, 11, dtype=np.float32).reshape(5, 2)
    for path in (inter, xxyy):
        got = read_landmarks(path)
        assert list(got) == ["A/A_0001.jpg"] and got["A/A_0001.jpg"].dtype == np.float32
        np.testing.assert_array_equal(got["A/A_0001.jpg"], expect)
    # explicit override wins over detection
    np.testing.assert_array_equal(read_landmarks(xxyy, fmt="interleaved")["A/A_0001.jpg"],
                                  np.array([1, 3, 5, 7, 9, 2, 4, 6, 8, 10], np.float32).reshape(5, 2))


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("A.jpg 1 2 3 4 5 6 7 8 9 10\nB.jpg 1 2 3\n", "line 2"),
        ("A.jpg 1 2 3 4 5 6 7 8 9 x\n", "line 1"),
        ("A.jpg 1 2 3 4 5 6 7 8 9 nan\n", "line 1"),
        ("A.jpg 1 2 3 4 5 6 7 8 9 10\n\nB.jpg 1 2 3 4 5 6 7 8 9 10\n", "line 2"),
        ("A.jpg 1 2 3 4 5 6 7 8 9 10\nA.jpg 1 2 3 4 5 6 7 8 9 10\n", "line 2"),
    ],
)
def test_landmark_errors(tmp_path: Path, text: str, line: str) -> None:
    p = tmp_path / "lm.txt"
    p.write_text(text)
    with pytest.raises(InputFormatError) as exc:
        read_landmarks(p)
    assert line in str(exc.value)


coords = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)
relpaths = st.text(alphabet="abcXYZ_019/.", min_size=1, max_size=20)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.dictionaries(relpaths, st.lists(coords, min_size=10, max_size=10), max_size=8),
       fmt=st.sampled_from(["interleaved", "xxyy"]))
def test_landmarks_round_trip(tmp_path: Path, data: dict[str, list[float]], fmt: str) -> None:
    lm = {k: np.asarray(v, dtype=np.float32).reshape(5, 2) for k, v in data.items()}
    p = tmp_path / "lm.txt"
    write_landmarks(p, lm, fmt)  # type: ignore[arg-type]
    back = read_landmarks(p, fmt=fmt)  # type: ignore[arg-type]
    assert list(back) == list(lm)
    for k in lm:
        np.testing.assert_array_equal(back[k], lm[k])
    if lm:  # auto-detection picks the same format
        auto = read_landmarks(p)
        for k in lm:
            np.testing.assert_array_equal(auto[k], lm[k])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.lists(st.text(max_size=60), min_size=1, max_size=5))
def test_landmarks_garbage_only_input_format_error(tmp_path: Path, garbage: list[str]) -> None:
    p = tmp_path / "g.txt"
    p.write_text("\n".join(garbage), encoding="utf-8", errors="surrogatepass")
    with contextlib.suppress(InputFormatError):
        read_landmarks(p)


def test_images_read_and_list(tmp_path: Path) -> None:
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0] = 200  # red
    (tmp_path / "P1").mkdir()
    (tmp_path / "P2" / "sub").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "P1" / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "P2" / "sub" / "b.bmp"), rgb)
    (tmp_path / "P2" / "notes.txt").write_text("x")
    got = read_image_rgb(tmp_path / "P1" / "a.png")
    assert got.dtype == np.uint8 and got.shape == (10, 12, 3) and got[0, 0, 0] == 200 and got[0, 0, 2] == 0
    assert list_images(tmp_path) == ["P1/a.png", "P2/sub/b.bmp"]
    assert list_identity_folder(tmp_path) == [("P1/a.png", "P1"), ("P2/sub/b.bmp", "P2")]
    with pytest.raises(MissingInputError):
        read_image_rgb(tmp_path / "none.jpg")
    for name, data in (("empty.jpg", b""), ("bad.jpg", b"\xff\xd8garbage"), ("text.png", b"hello")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputFormatError, match="not a readable image"):
            read_image_rgb(tmp_path / name)


@pytest.mark.realdata
def test_real_pairs_view2() -> None:
    root = shared_data()
    pairs = read_pairs(root / "lfw" / "pairs.txt")
    assert len(pairs) == 6000
    for k in range(10):
        fold = [p for p in pairs if p.fold == k]
        assert sum(p.same for p in fold) == 300 and sum(not p.same for p in fold) == 300
    people = fold_people(pairs)
    assert len(people) == 10
    for i in range(10):
        for j in range(i + 1, 10):
            assert not (people[i] & people[j]), (i, j)
    assert all(p.name1 == p.name2 for p in pairs if p.same)
    assert all(p.name1 != p.name2 for p in pairs if not p.same)


@pytest.mark.realdata
def test_real_pairs_view1_and_landmarks() -> None:
    root = shared_data() / "lfw"
    train = read_pairs(root / "pairsDevTrain.txt")
    assert len(train) == 2200 and {p.fold for p in train} == {0}
    assert len(read_pairs(root / "pairsDevTest.txt")) == 1000
    a = read_landmarks(root / "lfw_landmark.txt")
    b = read_landmarks(root / "ldmark_lfw_mtcnncaffe.txt")
    assert len(a) == len(b) == 13233 and set(a) == set(b)
    k = "Aaron_Eckhart/Aaron_Eckhart_0001.jpg"
    np.testing.assert_array_equal(a[k][0], [107, 107])
    np.testing.assert_allclose(b[k][0], [106.130150, 108.973488], rtol=1e-6)
    # the two detectors agree to a few pixels on average
    keys = list(a)[:2000]
    assert np.mean(np.abs(np.stack([a[q] for q in keys]) - np.stack([b[q] for q in keys]))) < 3.0
    assert set(pair_images(read_pairs(root / "pairs.txt"))) <= set(a)


@pytest.mark.realdata
@pytest.mark.slow
def test_real_image_listing() -> None:
    root = shared_data() / "lfw" / "images"
    rels = list_lfw_images(root)
    assert len(rels) == 13233 and rels == sorted(rels)
    assert len({r.split("/")[0] for r in rels}) == 5749
