"""Property tests for the formats the other test files do not round-trip yet: ``.npy`` outputs, tensor folders
(``.bin`` + labels + manifest, as ``tobin`` writes them), checkpoints; and fuzzing that only typed errors ever
come out of the ``.npy``, manifest and checkpoint readers.

Round trips that live elsewhere: IDX (test_mnist_data), pairs and both landmark formats (test_lfw_data),
``.bin`` / ``.txt`` / label files (test_tensorfiles).
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from faceembed.batch.tobin import write_batches
from faceembed.data.tensorfiles import (
    read_labels,
    read_listed_bin,
    read_manifest,
    read_npy,
    write_output,
)
from faceembed.errors import FaceembedError
from faceembed.models.checkpoint import InputSpec, load_checkpoint, read_checkpoint, save_checkpoint
from faceembed.models.mnist_net import MnistClassifier

FIXTURE_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
dtypes = st.sampled_from([np.float32, np.float16, np.int64, np.int32, np.uint8])
small_shapes = st.lists(st.integers(0, 4), min_size=1, max_size=4).map(tuple)  # outputs are >= 1-d


@settings(max_examples=60, deadline=None)
@given(arrays(dtypes, small_shapes))
def test_npy_output_round_trip(tmp_path_factory, arr):
    path = tmp_path_factory.mktemp("npy") / "0_image_output_0.npy"
    write_output(path, arr, "NPY")
    back = read_npy(path)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 4))), st.data())
def test_npy_mutations_raise_only_typed_errors(tmp_path_factory, arr, data):
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    raw = bytearray(buf.getvalue())
    cut = data.draw(st.integers(0, len(raw)), label="cut")
    for pos in data.draw(st.lists(st.integers(0, len(raw) - 1), max_size=4), label="flips"):
        raw[pos] ^= data.draw(st.integers(1, 255))
    path = tmp_path_factory.mktemp("npyfuzz") / "x.npy"
    path.write_bytes(bytes(raw[:cut]))
    with contextlib.suppress(FaceembedError):
        read_npy(path)


@settings(max_examples=15, deadline=None, suppress_health_check=FIXTURE_OK)
@given(
    x=arrays(np.float32, st.tuples(st.integers(1, 23), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
             elements=st.floats(-1e6, 1e6, width=32)),
    batch=st.integers(2, 8),
    with_items=st.booleans(),
)
def test_tensor_folder_round_trip(tmp_path_factory, x, batch, with_items):
    """``tobin``'s writer and the readers ``infer`` uses give back every item, label and name."""
    folder = tmp_path_factory.mktemp("bins")
    labels = np.arange(len(x)) % 10
    items = [f"P/P_{i:04d}.jpg" for i in range(len(x))] if with_items else None
    summary = write_batches(x, labels, folder, batch, extra={"dataset": "prop"}, items=items)
    manifest = read_manifest(folder)
    assert manifest is not None and manifest["complete"] is True
    assert manifest["item_shape"] == list(x.shape[1:]) and summary.files == len(manifest["files"])
    back = np.concatenate([read_listed_bin(folder / f["name"], manifest) for f in manifest["files"]])
    np.testing.assert_array_equal(back, x)
    got_labels = np.concatenate([read_labels(folder / f["label"]) for f in manifest["files"]])
    np.testing.assert_array_equal(got_labels, labels)
    if with_items:
        assert [i for f in manifest["files"] for i in f["items"]] == items


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
manifest_like = st.fixed_dictionaries(
    {"format": st.just("faceembed-tensors")},
    optional={"dtype": st.sampled_from(["float32", "uint8", "float64", 3]),
              "item_shape": st.one_of(st.lists(st.integers(-2, 2**40), max_size=4), json_values),
              "files": st.one_of(st.lists(st.fixed_dictionaries({}, optional={"name": json_values,
                                                                               "count": json_values})), json_values)},
)


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURE_OK)
@given(st.one_of(json_values, manifest_like))
def test_manifest_reader_raises_only_typed_errors(tmp_path_factory, value):
    folder = tmp_path_factory.mktemp("manifest")
    (folder / "manifest.json").write_text(json.dumps(value))
    (folder / "0.bin").write_bytes(b"\0" * 12)
    try:
        manifest = read_manifest(folder)
        read_listed_bin(folder / "0.bin", manifest)
    except FaceembedError as exc:
        assert "\n" not in str(exc)


specs = st.builds(
    InputSpec,
    height=st.integers(1, 64), width=st.integers(1, 64), channels=st.sampled_from([1, 3]),
    mean=st.floats(-255, 255, allow_nan=False), scale=st.floats(0.5, 255, allow_nan=False),
    color=st.sampled_from(["RGB", "GRAY"]), input_name=st.text("abc_x", min_size=1, max_size=8),
    output_names=st.lists(st.text("abcdefg", min_size=1, max_size=6), min_size=1, max_size=3).map(tuple),
)
json_extra = st.dictionaries(st.text(max_size=6), st.none() | st.integers() | st.text(max_size=6) |
                             st.lists(st.floats(allow_nan=False), max_size=3), max_size=4)


@settings(max_examples=12, deadline=None, suppress_health_check=FIXTURE_OK)
@given(emb=st.integers(2, 8), widths=st.lists(st.integers(1, 6), min_size=1, max_size=3), spec=specs,
       extra=json_extra, seed=st.integers(0, 2**31 - 1))
def test_checkpoint_round_trip(tmp_path_factory, emb, widths, spec, extra, seed):
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.manual_seed(seed)
    config = {"embedding_size": emb, "widths": widths, "units": [1] * len(widths)}
    model = MnistClassifier(**config)
    save_checkpoint(path, "mnist_classifier", config, model, spec, extra)
    back, back_spec, back_extra = load_checkpoint(path, expect_arch="mnist_classifier")
    assert back_spec == spec and back_extra == extra
    assert read_checkpoint(path)["config"] == config
    want, got = model.state_dict(), back.state_dict()
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURE_OK)
@given(st.data())
def test_checkpoint_mutations_raise_only_typed_errors(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("ckfuzz")
    torch.manual_seed(0)
    config = {"embedding_size": 2, "widths": [2], "units": [1]}
    save_checkpoint(folder / "ok.pt", "mnist_classifier", config, MnistClassifier(**config),
                    InputSpec(28, 28, 1, 0.0, 255.0, "GRAY"))
    raw = bytearray((folder / "ok.pt").read_bytes())
    cut = data.draw(st.integers(0, len(raw)), label="cut")
    for pos in data.draw(st.lists(st.integers(0, len(raw) - 1), max_size=3), label="flips"):
        raw[pos] ^= data.draw(st.integers(1, 255))
    (folder / "bad.pt").write_bytes(bytes(raw[:cut]))
    with contextlib.suppress(FaceembedError):
        load_checkpoint(folder / "bad.pt")
