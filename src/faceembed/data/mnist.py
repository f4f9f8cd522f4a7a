"""MNIST in its original IDX format (gzip or raw): a validating reader that never trusts a header's counts
before checking them against the file's length."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from faceembed.errors import InputFormatError, MissingInputError

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
MAX_BYTES = 1 << 31  # no IDX file of ours comes near 2 GiB; a header claiming more is lying
_CHUNK = 1 << 20


def _decompressed(raw: BinaryIO) -> BinaryIO:
    """The file's decompressed byte stream (gzip detected by its magic bytes, not by the name)."""
    magic = raw.read(2)
    raw.seek(0)
    return gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw  # type: ignore[return-value]


def _read_at_most(f: BinaryIO, n: int, path: Path) -> bytes:
    """Up to ``n`` bytes, read in chunks: memory grows with the bytes really there, never with ``n``."""
    parts: list[bytes] = []
    got = 0
    try:
        while got < n:
            part = f.read(min(_CHUNK, n - got))
            if not part:
                break
            parts.append(part)
            got += len(part)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputFormatError(f"corrupt gzip stream, expected an IDX file ({exc})", path) from None
    return b"".join(parts)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (magic 0x0000 0x08 NDIM) into a uint8 array of its shape.

    The header's dimensions are checked against the bytes really present before anything of that size
    is allocated, so a lying header costs no memory.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError("IDX file not found", path)
    with open(path, "rb") as raw, _decompressed(raw) as f:
        head = _read_at_most(f, 4, path)
        if len(head) == 0:
            raise InputFormatError("empty IDX file, expected a 4-byte magic number and dimensions", path)
        if len(head) < 4:
            raise InputFormatError(f"truncated header: {len(head)} bytes, expected an IDX magic number (4)",
                                   path, "byte 0")
        zero, dtype, ndim = struct.unpack(">HBB", head)
        if zero != 0 or dtype != 0x08 or not 1 <= ndim <= 4:
            magic = struct.unpack(">I", head)[0]
            raise InputFormatError(f"bad magic number {magic}, expected 2049 (IDX labels) or 2051 (IDX images)",
                                   path, "byte 0")
        header = 4 + 4 * ndim
        raw_dims = _read_at_most(f, 4 * ndim, path)
        if len(raw_dims) < 4 * ndim:
            raise InputFormatError(
                f"truncated header: {4 + len(raw_dims)} bytes, expected {header} for {ndim} IDX dimensions",
                path, "byte 4")
        dims = struct.unpack(f">{ndim}I", raw_dims)
        expected = math.prod(dims)
        if expected > MAX_BYTES:
            raise InputFormatError(f"truncated or corrupt IDX header: it claims {list(dims)} = {expected} bytes, "
                                   f"more than the {MAX_BYTES} an IDX file may hold", path, "byte 4")
        body = _read_at_most(f, expected + 1, path)
    if len(body) < expected:
        raise InputFormatError(f"truncated IDX data: header says {list(dims)} = {expected} bytes, file has "
                               f"{len(body)}", path, f"byte {header + len(body)}")
    if len(body) > expected:
        raise InputFormatError(f"trailing data after the {list(dims)} IDX array", path,
                               f"byte {header + expected}")
    return np.frombuffer(body, dtype=np.uint8, count=expected).reshape(dims)


def write_idx(path: str | Path, array: np.ndarray, compress: bool = True) -> None:
    """Write a uint8 array as IDX (for tests and for exporting subsets)."""
    from faceembed.files import write_bytes

    arr = np.ascontiguousarray(array, dtype=np.uint8)
    raw = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    write_bytes(path, gzip.compress(raw, mtime=0) if compress else raw)


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise MissingInputError(f"{stem}[.gz] not found", root)


def load_mnist(root: str | Path, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``[N, 28, 28]`` and labels int64 ``[N]`` of the ``train`` or ``test`` split."""
    if split not in FILES:
        raise InputFormatError(f"split must be 'train' or 'test', not {split!r}")
    root = Path(root)
    img_path, lab_path = (_find(root, stem) for stem in FILES[split])
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3:
        raise InputFormatError(f"expected 3-d images, got shape {list(images.shape)}", img_path)
    if labels.ndim != 1:
        raise InputFormatError(f"expected 1-d labels, got shape {list(labels.shape)}", lab_path)
    if len(images) != len(labels):
        raise InputFormatError(f"{len(images)} images but {len(labels)} labels in {lab_path.name}", img_path)
    return images, labels.astype(np.int64)


def default_mnist_root() -> Path:
    """$FACEEMBED_MNIST, else the repository's data/mnist, else ./data/mnist."""
    env = os.environ.get("FACEEMBED_MNIST")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3] / "data" / "mnist"
    return repo if repo.is_dir() else Path("data/mnist")
