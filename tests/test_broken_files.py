"""A corpus of deliberately broken files, one or more per reader: every one must raise a typed
``FaceembedError`` with one line that names the file and says what was expected, never a raw exception, a
hang, or an allocation the size of a lying header's count.

Each case writes its file(s) under ``tmp_path`` and reads them with the reader the pipeline uses. Cases marked
``huge`` carry a header that claims far more data than the file holds; they run under ``tracemalloc`` with a
peak of a few MB, and again in a child process with a 1 GiB address-space limit.
"""

from __future__ import annotations

import gzip
import json
import re
import signal
import struct
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from faceembed.data.images import read_image_rgb
from faceembed.data.lfw import read_landmarks, read_pairs
from faceembed.data.mnist import read_idx
from faceembed.data.tensorfiles import read_listed_bin, read_manifest, read_npy, read_text_tensor
from faceembed.errors import FaceembedError
from faceembed.inference.backends import OrtBackend, onnx_info
from faceembed.models.checkpoint import MNIST_INPUT, load_checkpoint, save_checkpoint
from faceembed.models.mnist_net import MnistClassifier

PEAK_BYTES = 4 << 20  # a reader facing a lying header may use a few MB, never the header's count
TIMEOUT_S = 20


# ---- file makers --------------------------------------------------------------------------------------------

def _idx(magic: int, dims: tuple[int, ...], body: bytes, gz: bool = False) -> bytes:
    raw = struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + body
    return gzip.compress(raw, mtime=0) if gz else raw


def _image(kind: str) -> bytes:
    img = (np.random.default_rng(0).random((48, 40, 3)) * 255).astype(np.uint8)
    return cv2.imencode(kind, img)[1].tobytes()


def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}".encode("latin1")
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def _tiny_onnx() -> bytes:
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 256], np.arange(1024, dtype=np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 256])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _checkpoint_bytes(tmp: Path) -> bytes:
    torch.manual_seed(0)
    model = MnistClassifier(embedding_size=4, widths=[4, 4, 4], units=[1, 1, 1])
    cfg = {"embedding_size": 4, "widths": [4, 4, 4], "units": [1, 1, 1]}
    save_checkpoint(tmp / "good.pt", "mnist_classifier", cfg, model, MNIST_INPUT)
    return (tmp / "good.pt").read_bytes()


def _torch_payload(tmp: Path, name: str, drop: tuple[str, ...] = (), **changes) -> Path:
    good = torch.load(tmp / "good.pt", weights_only=True) if (tmp / "good.pt").exists() else None
    if good is None:
        _checkpoint_bytes(tmp)
        good = torch.load(tmp / "good.pt", weights_only=True)
    payload = {k: v for k, v in good.items() if k not in drop}
    payload.update(changes)
    torch.save(payload, tmp / name)
    return tmp / name


def _bin_folder(tmp: Path, bin_bytes: bytes, manifest: dict | str | bytes, name: str = "0_image.bin") -> Path:
    folder = tmp / "bins"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(bin_bytes)
    if isinstance(manifest, dict):
        manifest = json.dumps({"format": "faceembed-tensors", "version": 1, "dtype": "float32", **manifest})
    (folder / "manifest.json").write_bytes(manifest.encode() if isinstance(manifest, str) else manifest)
    return folder / name


def _write(name: str, data: bytes | Callable[[], bytes]) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(data() if callable(data) else data)
        return tmp / name
    return make


# ---- readers ------------------------------------------------------------------------------------------------

def _read_bin_folder(path: Path) -> object:
    manifest = read_manifest(path.parent)
    assert manifest is not None
    return read_listed_bin(path, manifest)


@dataclass(frozen=True)
class Case:
    id: str
    family: str
    make: Callable[[Path], Path]  # writes the broken file(s); returns the file the reader is given
    read: Callable[[Path], object]
    expect: str  # regex the message must match
    names: str | None = None  # the file the message must name, when not the one read
    huge: bool = False


IDX_IMG = "t10k-images-idx3-ubyte"
LM_OK = "A/A_0001.jpg\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10\n"
CASES = [
    # IDX images and labels
    Case("idx-truncated", "idx", _write(IDX_IMG, _idx(2051, (10, 28, 28), b"\0" * 100)), read_idx,
         r"truncated IDX data: header says \[10, 28, 28\] = 7840 bytes"),
    Case("idx-labels-truncated", "idx", _write("t10k-labels-idx1-ubyte.gz", _idx(2049, (10,), b"\0" * 3, gz=True)),
         read_idx, r"truncated IDX data: header says \[10\] = 10 bytes, file has 3"),
    Case("idx-wrong-magic", "idx", _write(IDX_IMG, b"\x12\x34\x56\x78" + b"\0" * 64), read_idx,
         r"bad magic number 305419896, expected 2049"),
    Case("idx-empty", "idx", _write(IDX_IMG, b""), read_idx, r"empty IDX file, expected"),
    Case("idx-short-header", "idx", _write(IDX_IMG, struct.pack(">II", 2051, 5)), read_idx,
         r"truncated header: 8 bytes, expected 16"),
    Case("idx-huge-count", "idx", _write(IDX_IMG, _idx(2051, (2**31, 28, 28), b"\0" * 784)), read_idx,
         r"truncated or corrupt IDX header: it claims \[2147483648, 28, 28\]", huge=True),
    Case("idx-huge-count-gzip", "idx", _write(IDX_IMG + ".gz", _idx(2051, (2**21, 28, 28), b"\0" * 784, gz=True)),
         read_idx, r"truncated IDX data: header says \[2097152, 28, 28\] = 1644167168 bytes, file has 784",
         huge=True),
    Case("idx-corrupt-gzip", "idx", _write(IDX_IMG + ".gz", b"\x1f\x8b\x08\x00" + b"garbage!" * 8), read_idx,
         r"corrupt gzip stream, expected an IDX file"),
    Case("idx-truncated-gzip", "idx",
         _write(IDX_IMG + ".gz", lambda: _idx(2051, (4, 28, 28), bytes(range(256)) * 13, gz=True)[:-30]),
         read_idx, r"corrupt gzip stream, expected an IDX file \(Compressed file ended"),
    # images
    Case("jpeg-corrupt", "image", _write("face.jpg", lambda: _image(".jpg")[:300] + b"\x00\x13" * 400 + b"\xff\xd9"),
         read_image_rgb, r"not a readable image: corrupt JPEG data that OpenCV cannot decode"),
    Case("jpeg-truncated", "image", _write("face.jpg", lambda: _image(".jpg")[:-200]), read_image_rgb,
         r"not a readable image: truncated JPEG: no end-of-image marker"),
    Case("image-empty", "image", _write("face.jpg", b""), read_image_rgb,
         r"not a readable image: empty file, expected JPEG, PNG or BMP"),
    Case("text-named-jpg", "image", _write("face.jpg", b"name,value\n1,2\n"), read_image_rgb,
         r"not a readable image: no JPEG, PNG or BMP signature"),
    Case("png-truncated", "image", _write("face.png", lambda: _image(".png")[:-100]), read_image_rgb,
         r"not a readable image: truncated PNG: no IEND chunk"),
    # landmark files, both formats
    Case("landmarks-interleaved-field-count", "landmarks",
         _write("lfw_landmark.txt", LM_OK.encode() + b"B/B_0001.jpg\t1\t2\t3\n"), read_landmarks,
         r"line 2: expected an image path and 10 coordinates, got 4 fields"),
    Case("landmarks-xxyy-not-a-number", "landmarks",
         _write("ldmark_lfw_mtcnncaffe.txt", b"A/A_0001.jpg 1 2 3 4 5 6 7 8 9 ten\n"), read_landmarks,
         r"line 1: coordinate 'ten' is not a number, expected 10 numbers"),
    Case("landmarks-xxyy-infinite", "landmarks",
         _write("ldmark_lfw_mtcnncaffe.txt", b"A/A_0001.jpg 1 2 3 4 5 6 7 8 9 1e999\n"), read_landmarks,
         r"line 1: coordinate is not finite"),
    Case("landmarks-not-utf8", "landmarks", _write("lfw_landmark.txt", LM_OK.encode() + b"\xff\xfe\xfa\n"),
         read_landmarks, r"not UTF-8 text \(undecodable byte at offset 34\), expected a UTF-8 landmark file"),
    Case("landmarks-empty", "landmarks", _write("lfw_landmark.txt", b"\n\n"), read_landmarks,
         r"line 1: empty landmark file, expected lines"),
    # pairs files
    Case("pairs-malformed-line", "pairs", _write("pairs.txt", b"1\nA 1 2\nA 1 B\n"), read_pairs,
         r"line 3: different-person line needs 4 fields 'NameA i NameB j', got 3"),
    Case("pairs-bad-index", "pairs", _write("pairs.txt", b"1\nA 1 2\nA 1 B x\n"), read_pairs,
         r"line 3: image index is not a non-negative integer: 'x'"),
    Case("pairs-bad-header", "pairs", _write("pairs.txt", b"10 300 7\nA 1 2\n"), read_pairs,
         r"line 1: header must be 'FOLDS<TAB>N' \(View 2\) or 'N' \(View 1\), got 3 fields"),
    Case("pairs-count-mismatch", "pairs", _write("pairs.txt", b"2\t1\nA 1 2\nA 1 B 2\n"), read_pairs,
         r"header announces 2 fold\(s\) of 1 same \+ 1 different pairs \(4 lines\) but the file has 2"),
    Case("pairs-huge-folds", "pairs", _write("pairs.txt", b"999999999\t999999999\nA 1 2\nA 1 B 2\n"), read_pairs,
         r"header announces 999999999 fold\(s\)", huge=True),
    Case("pairs-absurd-count", "pairs", _write("pairs.txt", b"1\t" + b"9" * 5000 + b"\n"), read_pairs,
         r"line 1: pairs per fold 9{40} is implausibly large", huge=True),
    Case("pairs-not-utf8", "pairs", _write("pairs.txt", b"1\nA\xe9 1 2\nA 1 B 2\n"), read_pairs,
         r"not UTF-8 text \(undecodable byte at offset 3\), expected a UTF-8 pairs file"),
    Case("pairs-empty", "pairs", _write("pairs.txt", b""), read_pairs, r"line 1: empty pairs file, expected"),
    # .bin tensors with a manifest
    Case("bin-size-vs-manifest-shape", "bin",
         lambda t: _bin_folder(t, b"\0" * 100, {"item_shape": [28, 28, 1], "files": [{"name": "0_image.bin"}]}),
         _read_bin_folder, r"100 bytes is not a whole number of float32 items of shape \[28, 28, 1\]"),
    Case("bin-count-vs-manifest", "bin",
         lambda t: _bin_folder(t, b"\0" * 48, {"item_shape": [4], "files": [{"name": "0_image.bin", "count": 2}]}),
         _read_bin_folder, r"holds 3 items, the manifest says 2"),
    Case("bin-missing-manifest-entry", "bin",
         lambda t: _bin_folder(t, b"\0" * 16, {"item_shape": [4], "files": [{"name": "1_image.bin"}]}),
         _read_bin_folder, r"not listed in the folder's manifest.json 'files'"),
    Case("manifest-corrupt-json", "bin", lambda t: _bin_folder(t, b"\0" * 16, '{"format": "faceembed-tensors", '),
         _read_bin_folder, r"manifest is not valid JSON", names="manifest.json"),
    Case("manifest-not-utf8", "bin", lambda t: _bin_folder(t, b"\0" * 16, b'{"format": "\xff"}'),
         _read_bin_folder, r"manifest is not valid JSON \('utf-8' codec", names="manifest.json"),
    Case("manifest-huge-shape", "bin",
         lambda t: _bin_folder(t, b"\0" * 16, {"item_shape": [2**31, 2**31, 3], "files": [{"name": "0_image.bin"}]}),
         _read_bin_folder, r"manifest 'item_shape' \[2147483648, 2147483648, 3\] means", names="manifest.json",
         huge=True),
    Case("manifest-huge-count", "bin",
         lambda t: _bin_folder(t, b"\0" * 16, {"item_shape": [4], "files": [{"name": "0_image.bin", "count": 2**62}]}),
         _read_bin_folder, r"holds 1 items, the manifest says 4611686018427387904", huge=True),
    Case("manifest-bad-entry", "bin",
         lambda t: _bin_folder(t, b"\0" * 16, {"item_shape": [4], "files": [{"name": "0_image.bin", "count": -3}]}),
         _read_bin_folder, r"manifest 'files\[0\].count' must be a positive integer", names="manifest.json"),
    # .npy
    Case("npy-truncated", "npy", _write("x.npy", lambda: _npy_header((10, 4)) + b"\0" * 100), read_npy,
         r"truncated or padded .npy: header says \[10, 4\] float32 = 160 bytes, file has 100"),
    Case("npy-wrong-magic", "npy", _write("x.npy", b"\x93NUMPX\x01\x00" + b"\0" * 100), read_npy,
         r"not a .npy file: wrong magic"),
    Case("npy-huge-shape", "npy", _write("x.npy", lambda: _npy_header((2**31, 2**31)) + b"\0" * 64), read_npy,
         r"truncated or padded .npy: header says \[2147483648, 2147483648\]", huge=True),
    Case("npy-corrupt-header", "npy", _write("x.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': 'xx'  \n"), read_npy,
         r"corrupt .npy header"),
    Case("npy-object-dtype", "npy", _write("x.npy", lambda: _npy_header((2,), "|O") + b"\0" * 16), read_npy,
         r".npy holds Python objects"),
    # .txt outputs
    Case("txt-not-a-number", "txt", _write("0_image_output_0.txt", b"1 2 3 \n4 five 6 \n"), read_text_tensor,
         r"line 2: not a number in '4 five 6', expected rows of numbers"),
    Case("txt-not-utf8", "txt", _write("0_image_output_0.txt", b"1 2 \xff\n"), read_text_tensor,
         r"not UTF-8 text \(undecodable byte at offset 4\), expected a UTF-8 tensor file"),
    Case("txt-ragged", "txt", _write("0_image_output_0.txt", b"1 2 3 \n4 5 \n"), read_text_tensor,
         r"line 2: 2 values, the first row has 3"),
    # checkpoints
    Case("checkpoint-truncated", "checkpoint", lambda t: _write("model.pt", _checkpoint_bytes(t)[:2000])(t),
         load_checkpoint, r"not a faceembed checkpoint: torch.load failed \(.*\); expected a torch.save zip"),
    Case("checkpoint-not-zip-or-pickle", "checkpoint", _write("model.pt", b"just some text\n" * 20), load_checkpoint,
         r"not a faceembed checkpoint: torch.load failed \(.*\); expected"),
    Case("checkpoint-empty", "checkpoint", _write("model.pt", b""), load_checkpoint,
         r"empty checkpoint file, expected a torch.save zip archive"),
    Case("checkpoint-wrong-keys", "checkpoint", lambda t: _torch_payload(t, "model.pt", drop=("state_dict",)),
         load_checkpoint, r"checkpoint lacks state_dict \(expected keys arch, config, input, state_dict\)"),
    Case("checkpoint-missing-metadata", "checkpoint", lambda t: _torch_payload(t, "model.pt", drop=("input", "config")),
         load_checkpoint, r"checkpoint lacks config, input"),
    Case("checkpoint-bad-input-spec", "checkpoint", lambda t: _torch_payload(t, "model.pt", input={"height": 28}),
         load_checkpoint, r"checkpoint 'input' metadata is not an input spec"),
    Case("checkpoint-foreign-dict", "checkpoint", lambda t: _torch_payload(t, "model.pt", format="other"),
         load_checkpoint, r"not a faceembed checkpoint \(no 'format' key\)"),
    Case("checkpoint-unknown-arch", "checkpoint", lambda t: _torch_payload(t, "model.pt", arch="resnet9000"),
         load_checkpoint, r"unknown architecture 'resnet9000'; known: .*\(expected a registered architecture\)"),
    Case("checkpoint-wrong-weights", "checkpoint",
         lambda t: _torch_payload(t, "model.pt", state_dict={"w": torch.zeros(2)}), load_checkpoint,
         r"weights do not fit 'mnist_classifier': \d+ missing \(e.g. '.*'\), 1 unexpected \(e.g. 'w'\)"),
    # ONNX models
    Case("onnx-truncated", "onnx", _write("model.onnx", lambda: _tiny_onnx()[:2500]), OrtBackend,
         r"not a valid ONNX model \(DecodeError\): it starts like one \(ir_version\), so it is probably truncated"),
    Case("onnx-random-bytes", "onnx", _write("model.onnx", np.random.default_rng(3).bytes(4096)), onnx_info,
         r"not a valid ONNX model \(DecodeError\): it does not start like one"),
    Case("onnx-empty", "onnx", _write("model.onnx", b""), onnx_info,
         r"empty ONNX model file, expected a serialized ONNX ModelProto"),
    Case("onnx-no-graph", "onnx", _write("model.onnx", b"\x08\x07\x12\x05hello"), onnx_info,
         r"not a valid ONNX model \(no graph"),
]


@pytest.fixture
def deadline():
    """Fail a case that runs longer than TIMEOUT_S instead of hanging the suite."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"reader ran longer than {TIMEOUT_S} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


def _message(case: Case, tmp: Path) -> tuple[FaceembedError, Path]:
    path = case.make(tmp)
    if case.huge:
        tracemalloc.start()
    try:
        with pytest.raises(FaceembedError) as info:
            case.read(path)
        if case.huge:
            peak = tracemalloc.get_traced_memory()[1]
            assert peak < PEAK_BYTES, f"{case.id}: peak {peak} bytes for a lying header"
    finally:
        if case.huge:
            tracemalloc.stop()
    return info.value, path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_broken_file_raises_one_typed_line(case: Case, tmp_path: Path, deadline) -> None:
    err, path = _message(case, tmp_path)
    text = str(err)
    assert type(err) is not FaceembedError, "a specific subclass, not the base class"
    assert "\n" not in text and len(text) < 400, text
    assert (case.names or path.name) in text, text
    assert err.path is not None and err.path.name == (case.names or path.name)
    assert re.search(case.expect, text), text
    assert re.search(r"expect|must|needs|announces|not a|not finite|claims|the first row|says", text), text


def test_messages_distinct_per_family(tmp_path: Path) -> None:
    """Two different breakages of one format never read the same: the message says what is wrong."""
    seen: dict[str, dict[str, str]] = {}
    for i, case in enumerate(CASES):
        folder = tmp_path / str(i)
        folder.mkdir()
        err, _ = _message(case, folder)
        message = err.message
        family = seen.setdefault(case.family, {})
        assert message not in family.values(), f"{case.id} reads like {family}"
        family[case.id] = message


HUGE_CHILD = textwrap.dedent("""
    import resource, sys, pathlib
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    from faceembed.errors import FaceembedError
    from faceembed.data.mnist import read_idx
    from faceembed.data.tensorfiles import read_npy, read_manifest, read_listed_bin
    from faceembed.data.lfw import read_pairs
    folder = pathlib.Path(sys.argv[1])
    readers = {"idx": read_idx, "npy": read_npy, "pairs": read_pairs,
               "bin": lambda p: read_listed_bin(p, read_manifest(p.parent))}
    for line in sys.stdin.read().splitlines():
        family, path = line.split("\\t")
        try:
            readers[family](pathlib.Path(path))
        except FaceembedError:
            continue
        raise SystemExit(f"{path}: no error")
    print("ok")
""")


def test_lying_headers_under_address_space_limit(tmp_path: Path) -> None:
    """The huge-header cases again, in a child whose address space is capped at 1 GiB (no torch there)."""
    lines = []
    for i, case in enumerate(c for c in CASES if c.huge):
        folder = tmp_path / str(i)
        folder.mkdir()
        lines.append(f"{case.family}\t{case.make(folder)}")
    proc = subprocess.run([sys.executable, "-c", HUGE_CHILD, str(tmp_path)], input="\n".join(lines), text=True,
                          capture_output=True, timeout=60, env={"OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin"})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


# ---- the command line: exit code 2, one line on stderr, no traceback ------------------------------------------

def _cli(monkeypatch, capsys, *args: str) -> str:
    from faceembed.cli import main

    monkeypatch.setattr(sys, "argv", ["faceembed", *args])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("faceembed: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_cli_lying_idx_header(tmp_path, monkeypatch, capsys):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx(2051, (2**31, 28, 28), b"\0" * 784))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(2049, (1,), b"\0"))
    monkeypatch.setenv("FACEEMBED_MNIST", str(tmp_path))
    line = _cli(monkeypatch, capsys, "tobin", "mnist", "--out", str(tmp_path / "bins"), "--no-progress")
    assert "t10k-images-idx3-ubyte" in line and "IDX header" in line
    assert not (tmp_path / "bins" / "manifest.json").exists()


def test_cli_empty_landmarks(tmp_path, monkeypatch, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "lfw_landmark.txt").write_bytes(b"")
    (tmp_path / "pairs.txt").write_text("1\nA 1 2\nA 1 B 1\n")
    line = _cli(monkeypatch, capsys, "tobin", "lfw", "--data", str(tmp_path), "--out", str(tmp_path / "b"),
                "--no-progress")
    assert "lfw_landmark.txt" in line and "empty landmark file" in line


def test_cli_truncated_checkpoint(tmp_path, monkeypatch, capsys):
    (tmp_path / "model.pt").write_bytes(_checkpoint_bytes(tmp_path)[:1500])
    line = _cli(monkeypatch, capsys, "export", str(tmp_path / "model.pt"), "--out", str(tmp_path / "m.onnx"))
    assert "model.pt" in line and "torch.load failed" in line
    assert not (tmp_path / "m.onnx").exists()


def test_cli_empty_onnx(tmp_path, monkeypatch, capsys):
    (tmp_path / "model.onnx").write_bytes(b"")
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "0.npy", np.zeros((1, 4), np.float32))
    line = _cli(monkeypatch, capsys, "infer", "--model", str(tmp_path / "model.onnx"), "--input",
                str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--no-progress")
    assert "model.onnx" in line and "empty ONNX model file" in line


def test_cli_corrupt_npy_input(tmp_path, monkeypatch, capsys):
    (tmp_path / "model.onnx").write_bytes(_tiny_onnx())
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "0.npy").write_bytes(_npy_header((2**31, 4)) + b"\0" * 32)
    line = _cli(monkeypatch, capsys, "infer", "--model", str(tmp_path / "model.onnx"), "--input",
                str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--threads", "1", "--no-progress")
    assert "0.npy" in line and "truncated or padded .npy" in line


def test_onnx_fixture_is_valid(tmp_path):
    """The corpus' truncated ONNX model is cut from a model that loads and runs."""
    (tmp_path / "ok.onnx").write_bytes(_tiny_onnx())
    onnx.checker.check_model(str(tmp_path / "ok.onnx"))
    out = OrtBackend(tmp_path / "ok.onnx", threads=1).run(np.ones((2, 4), np.float32))
    assert out[0].shape == (2, 256)
