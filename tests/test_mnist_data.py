"""IDX reader: round trips, real files, and a clear error for every kind of broken file."""

from __future__ import annotations

import contextlib
import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from faceembed.data.mnist import default_mnist_root, load_mnist, read_idx, write_idx
from faceembed.errors import InputFormatError, MissingInputError

idx_arrays = arrays(np.uint8, st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple))


@settings(max_examples=40, deadline=None)
@given(idx_arrays, st.booleans())
def test_round_trip(tmp_path_factory, arr, compress):
    path = tmp_path_factory.mktemp("idx") / "a.idx"
    write_idx(path, arr, compress)
    np.testing.assert_array_equal(read_idx(path), arr)


@settings(max_examples=60, deadline=None)
@given(idx_arrays, st.data())
def test_any_truncation_is_a_format_error(tmp_path_factory, arr, data):
    path = tmp_path_factory.mktemp("idx") / "a.idx"
    write_idx(path, arr, compress=False)
    raw = path.read_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1))
    path.write_bytes(raw[:cut])
    with pytest.raises(InputFormatError):
        read_idx(path)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_never_crashes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("idx") / "g.idx"
    path.write_bytes(data)
    with contextlib.suppress(InputFormatError):
        read_idx(path)


def _write_raw(path, raw, gz=False):
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "empty"),
    (struct.pack(">I", 1234) + b"\0" * 8, "bad magic number 1234"),
    (struct.pack(">II", 2051, 5), "truncated header"),
    (struct.pack(">IIII", 2051, 10, 28, 28) + b"\0" * 10, "truncated"),
    (struct.pack(">II", 2049, 3) + b"\0" * 5, "trailing"),
    (struct.pack(">IIII", 2051, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), "truncated"),  # a lying header
])
def test_broken_files(tmp_path, raw, message):
    for gz in (False, True):
        path = tmp_path / f"bad{int(gz)}.idx"
        _write_raw(path, raw, gz)
        with pytest.raises(InputFormatError, match=message) as info:
            read_idx(path)
        assert path.name in str(info.value)


def test_corrupt_gzip(tmp_path):
    (tmp_path / "x.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(InputFormatError, match="gzip"):
        read_idx(tmp_path / "x.gz")


def test_missing_and_count_mismatch(tmp_path):
    with pytest.raises(MissingInputError):
        load_mnist(tmp_path, "test")
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(InputFormatError, match="5 images but 4 labels"):
        load_mnist(tmp_path, "test")


def test_real_mnist_files():
    images, labels = load_mnist(default_mnist_root(), "test")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert np.bincount(labels).tolist()[:3] == [980, 1135, 1032]
    train_images, _ = load_mnist(default_mnist_root(), "train")
    assert train_images.shape == (60000, 28, 28)
