"""Tensor file formats: round trips (hypothesis) and clear errors for broken files."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from faceembed.data.tensorfiles import (
    format_txt,
    list_input_files,
    output_name,
    parse_txt,
    read_bin,
    read_labels,
    read_manifest,
    read_npy,
    read_text_tensor,
    write_bin,
    write_labels,
    write_manifest,
    write_output,
)
from faceembed.errors import InputFormatError, MissingInputError, ShapeMismatchError

shapes = st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 3))
finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, shapes, elements=finite))
def test_bin_round_trip(tmp_path_factory, arr):
    path = tmp_path_factory.mktemp("bin") / "x.bin"
    write_bin(path, arr)
    assert path.stat().st_size == arr.nbytes
    np.testing.assert_array_equal(read_bin(path, "float32", arr.shape[1:]), arr)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 7)), elements=finite))
def test_txt_round_trip_to_six_digits(arr):
    back = parse_txt(format_txt(arr))
    np.testing.assert_allclose(back, arr, rtol=1e-5, atol=1e-30)


def test_txt_layout_is_msame_style():
    assert format_txt(np.array([[1.5, 2.0], [3.0, 4.25]], dtype=np.float32)) == "1.5 2 \n3 4.25 \n"
    assert format_txt(np.array([[7, 8]], dtype=np.int64)) == "7 8 \n"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=50))
def test_labels_round_trip(tmp_path_factory, labels):
    path = tmp_path_factory.mktemp("lab") / "0_label.txt"
    write_labels(path, np.array(labels))
    np.testing.assert_array_equal(read_labels(path), labels)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=200))
def test_txt_parser_never_crashes_on_garbage(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("g") / "g.txt"
    path.write_bytes(data)
    with contextlib.suppress(InputFormatError):
        read_text_tensor(path)


def test_bin_wrong_size_names_both_shapes(tmp_path):
    path = tmp_path / "0_image.bin"
    path.write_bytes(b"\0" * (28 * 28 * 4 + 3))
    with pytest.raises(ShapeMismatchError, match=r"\[28, 28, 1\]"):
        read_bin(path, "float32", (28, 28, 1))


def test_bin_empty_and_missing(tmp_path):
    (tmp_path / "e.bin").write_bytes(b"")
    with pytest.raises(InputFormatError, match="empty"):
        read_bin(tmp_path / "e.bin", "float32", (2,))
    with pytest.raises(MissingInputError):
        read_bin(tmp_path / "nope.bin", "float32", (2,))


def test_bin_count_must_match_manifest(tmp_path):
    write_bin(tmp_path / "a.bin", np.zeros((3, 2), np.float32))
    with pytest.raises(ShapeMismatchError, match="manifest says 4"):
        read_bin(tmp_path / "a.bin", "float32", (2,), count=4)


def test_non_utf8_text(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"1 2 \xff\xfe\n")
    with pytest.raises(InputFormatError, match="UTF-8"):
        read_text_tensor(path)


def test_ragged_text_names_line(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("1 2 3\n4 5\n")
    with pytest.raises(InputFormatError, match="line 2"):
        read_text_tensor(path)


def test_npy_corrupt(tmp_path):
    path = tmp_path / "x.npy"
    path.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(InputFormatError, match="npy"):
        read_npy(path)


@pytest.mark.parametrize("fmt", ["BIN", "TXT", "NPY"])
def test_write_output_formats(tmp_path, fmt):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / output_name("0_image.bin", 1, fmt)
    assert path.name == f"0_image_output_1.{fmt.lower()}"
    write_output(path, arr, fmt)
    back = {"BIN": lambda: read_bin(path, "float32", (4,)), "TXT": lambda: read_text_tensor(path),
            "NPY": lambda: read_npy(path)}[fmt]()
    np.testing.assert_allclose(back, arr)
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file left behind"


def test_manifest_validation(tmp_path):
    assert read_manifest(tmp_path) is None
    write_manifest(tmp_path, {"dtype": "float32", "item_shape": [28, 28, 1], "files": []})
    assert read_manifest(tmp_path)["item_shape"] == [28, 28, 1]
    (tmp_path / "manifest.json").write_text('{"format": "faceembed-tensors", "dtype": "float32", '
                                            '"item_shape": [-1], "files": []}')
    with pytest.raises(InputFormatError, match="item_shape"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InputFormatError, match="JSON"):
        read_manifest(tmp_path)


def test_list_input_files_skips_labels_and_orders(tmp_path):
    for name in ["1_image.bin", "0_image.bin", "0_label.txt", "manifest.json", "10_image.bin"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_input_files(tmp_path)] == ["0_image.bin", "10_image.bin", "1_image.bin"]
    files = list_input_files(f"{tmp_path / '0_image.bin'},{tmp_path / '1_image.bin'}")
    assert [p.name for p in files] == ["0_image.bin", "1_image.bin"]
    with pytest.raises(MissingInputError):
        list_input_files(f"{tmp_path / 'missing.bin'}")
