"""MNIST in its original IDX format (gzip or raw): a validating reader that never trusts a header's counts
before checking them against the file's length."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from faceembed.errors import InputFormatError, MissingInputError

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
MAX_BYTES = 1 << 31  # no IDX file of ours comes near 2 GiB; a header claiming more is lying


def _raw_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise MissingInputError("IDX file not found", path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=_Limited(data)) as f:
                data = f.read(MAX_BYTES + 1)
        except (OSError, EOFError) as exc:
            raise InputFormatError(f"corrupt gzip stream ({exc})", path) from None
    return data


class _Limited:
    """A bytes buffer with the file-like interface GzipFile needs."""

    def __init__(self, data: bytes):
        import io

        self._f = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)

    def seek(self, *args):
        return self._f.seek(*args)

    def tell(self) -> int:
        return self._f.tell()


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (magic 0x0000 0x08 NDIM) into a uint8 array of its shape."""
    path = Path(path)
    data = _raw_bytes(path)
    if len(data) == 0:
        raise InputFormatError("empty IDX file", path)
    if len(data) < 4:
        raise InputFormatError(f"truncated header: {len(data)} bytes", path, "byte 0")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08 or not 1 <= ndim <= 4:
        magic = struct.unpack(">I", data[:4])[0]
        raise InputFormatError(f"bad magic number {magic} (expected 2049 for labels or 2051 for images)",
                               path, "byte 0")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise InputFormatError(f"truncated header: {len(data)} bytes, expected {header}", path, "byte 4")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    body = len(data) - header
    if body < expected:
        raise InputFormatError(f"truncated: header says {list(dims)} = {expected} bytes, file has {body}",
                               path, f"byte {len(data)}")
    if body > expected:
        raise InputFormatError(f"{body - expected} bytes of trailing data after {list(dims)}", path,
                               f"byte {header + expected}")
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(dims)


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
