"""Tensor files exchanged with the reference batch-inference tool (docs/formats.md).

* ``.bin``: raw little-endian array, no header. Its shape comes from the folder's ``manifest.json`` or,
  for files made elsewhere, from the model's per-item shape (the byte count must be a whole multiple).
* ``.txt``: msame's TXT layout: every value followed by a space, a newline after each innermost row,
  about 6 significant digits.
* ``.npy``: NumPy's own format, shape and dtype included.

A folder written by ``tobin`` holds ``manifest.json``::

    {"format": "faceembed-tensors", "version": 1, "dtype": "float32", "layout": "NHWC",
     "item_shape": [28, 28, 1], "input_name": "input_x",
     "files": [{"name": "0_image.bin", "count": 32, "label": "0_label.txt", "items": [...]}], ...}
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.errors import InputFormatError, MissingInputError, ShapeMismatchError
from faceembed.files import atomic_open, write_bytes, write_json

MANIFEST = "manifest.json"
TENSOR_FORMAT = "faceembed-tensors"
OUTPUT_FORMATS = ("BIN", "TXT", "NPY")
_DTYPES = {"float32", "float16", "int64", "int32", "uint8"}
MAX_ITEM_BYTES = 1 << 31  # one item (one image) of 2 GiB is no real input: the shape is corrupt


def write_bin(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as raw little-endian bytes, atomically."""
    arr = np.ascontiguousarray(array)
    write_bytes(path, arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())


def read_bin(
    path: str | Path, dtype: str | np.dtype, item_shape: Sequence[int], count: int | None = None
) -> np.ndarray:
    """Read a raw ``.bin`` file as ``[N, *item_shape]``; its size must be a whole number of items."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError("tensor file not found", path)
    dt = np.dtype(dtype).newbyteorder("<")
    item_bytes = math.prod(int(d) for d in item_shape) * dt.itemsize  # Python ints: a huge shape cannot wrap
    size = path.stat().st_size
    if size == 0:
        raise InputFormatError("empty tensor file", path)
    if item_bytes == 0 or size % item_bytes:
        raise ShapeMismatchError(
            f"{size} bytes is not a whole number of {dt.name} items of shape {list(item_shape)} "
            f"({item_bytes} bytes each)",
            path,
        )
    n = size // item_bytes
    if count is not None and n != count:
        raise ShapeMismatchError(f"holds {n} items, the manifest says {count}", path)
    return np.fromfile(path, dtype=dt).reshape(n, *item_shape).astype(dt.newbyteorder("="), copy=False)


def format_txt(array: np.ndarray) -> str:
    """msame's TXT layout: each value followed by a space, a newline after each innermost row."""
    arr = np.asarray(array)
    rows = arr.reshape(-1, arr.shape[-1]) if arr.ndim >= 1 else arr.reshape(1, 1)
    if rows.shape[-1] == 0:
        return ""
    fmt = "%d " if np.issubdtype(arr.dtype, np.integer) else "%.6g "
    return "".join((fmt * rows.shape[1]) % tuple(row) + "\n" for row in rows.tolist())


def parse_txt(text: str, path: str | Path | None = None) -> np.ndarray:
    """Parse a TXT tensor file into a 2-d float64 array (one row per line; blank lines ignored)."""
    rows: list[list[float]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            rows.append([float(v) for v in fields])
        except ValueError:
            raise InputFormatError(f"not a number in {line.strip()[:40]!r}, expected rows of numbers", path,
                                  f"line {lineno}") from None
        if len(rows[-1]) != len(rows[0]):
            raise InputFormatError(
                f"{len(rows[-1])} values, the first row has {len(rows[0])}", path, f"line {lineno}"
            )
    if not rows:
        raise InputFormatError("empty text tensor file", path)
    return np.asarray(rows, dtype=np.float64)


def read_utf8(path: str | Path, what: str = "file") -> str:
    """A text file's contents, with one-line errors for a missing file or undecodable bytes."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{what} not found", path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputFormatError(f"not UTF-8 text (undecodable byte at offset {exc.start}), expected a UTF-8 {what}",
                               path) from None


def read_text_tensor(path: str | Path) -> np.ndarray:
    """Read a TXT tensor file (UTF-8), with a clear error for undecodable bytes."""
    return parse_txt(read_utf8(path, "tensor file"), path)


def write_output(path: str | Path, array: np.ndarray, outfmt: str) -> None:
    """Write one output tensor as BIN, TXT or NPY, atomically."""
    outfmt = outfmt.upper()
    if outfmt == "BIN":
        write_bin(path, array)
    elif outfmt == "TXT":
        with atomic_open(path, "w", encoding="utf-8") as f:
            f.write(format_txt(array))
    elif outfmt == "NPY":
        with atomic_open(path, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    else:
        raise InputFormatError(f"unknown output format {outfmt!r}; choose one of {', '.join(OUTPUT_FORMATS)}")


def _npy_header(f: Any, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an ``.npy`` header, with one-line errors for every way it can be wrong."""
    try:
        version = np.lib.format.read_magic(f)
    except (ValueError, OSError, EOFError):
        raise InputFormatError("not a .npy file: wrong magic, expected b'\\x93NUMPY' and a version", path) from None
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise InputFormatError(f".npy format version {version} is not supported, expected 1.0 or 2.0", path)
    try:
        shape, _fortran, dtype = readers[version](f, max_header_size=1 << 16)
    except Exception as exc:  # numpy parses the header with ast/tokenize: SyntaxError, TokenError, ValueError...
        msg = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise InputFormatError(f"corrupt .npy header ({msg}); expected a dict of descr, fortran_order, shape",
                               path) from None
    if dtype.hasobject:
        raise InputFormatError(f".npy holds Python objects ({dtype}), expected a numeric array", path)
    return tuple(int(d) for d in shape), dtype


def read_npy(path: str | Path) -> np.ndarray:
    """Read an ``.npy`` file without pickles, with a one-line error for a corrupt file.

    The header's shape is checked against the file's size before the data is read, so a header claiming a
    huge array costs no memory.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError("tensor file not found", path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        shape, dtype = _npy_header(f, path)
        data_bytes = size - f.tell()
    expected = math.prod(shape) * dtype.itemsize
    if data_bytes != expected:
        raise InputFormatError(
            f"truncated or padded .npy: header says {list(shape)} {dtype} = {expected} bytes, file has {data_bytes}",
            path,
        )
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputFormatError(f"not a valid .npy file ({str(exc).splitlines()[0][:120]})", path) from None


def output_name(input_name: str, index: int, outfmt: str) -> str:
    """msame's naming: ``NAME.bin`` -> ``NAME_output_{index}.{bin|txt|npy}``."""
    return f"{Path(input_name).stem}_output_{index}.{outfmt.lower()}"


def write_labels(path: str | Path, labels: np.ndarray) -> None:
    """A label file: one integer per line."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{int(v)}\n" for v in np.asarray(labels).ravel()))


def read_labels(path: str | Path) -> np.ndarray:
    """Read a label file (integers separated by whitespace) as int64."""
    arr = read_text_tensor(path).ravel()
    if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
        raise InputFormatError("labels must be integers", path)
    return arr.astype(np.int64)


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> None:
    """Write a tensor folder's manifest atomically."""
    write_json(Path(folder) / MANIFEST, {"format": TENSOR_FORMAT, "version": 1, **manifest})


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """Return the folder's validated manifest, or None when the folder has none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InputFormatError(f"manifest is not valid JSON ({str(exc)[:120]}); expected UTF-8 JSON", path) from None
    if not isinstance(manifest, dict) or manifest.get("format") != TENSOR_FORMAT:
        raise InputFormatError(f"manifest 'format' must be {TENSOR_FORMAT!r}", path)
    if manifest.get("dtype") not in _DTYPES:
        raise InputFormatError(f"manifest dtype {manifest.get('dtype')!r} not one of {sorted(_DTYPES)}", path)
    shape = manifest.get("item_shape")
    if not (isinstance(shape, list) and shape and all(isinstance(d, int) and d > 0 for d in shape)):
        raise InputFormatError("manifest 'item_shape' must be a list of positive integers", path)
    item_bytes = math.prod(shape) * np.dtype(manifest["dtype"]).itemsize
    if item_bytes > MAX_ITEM_BYTES:
        raise InputFormatError(f"manifest 'item_shape' {shape[:8]} means {item_bytes} bytes per item; expected "
                               f"at most {MAX_ITEM_BYTES}", path)
    files = manifest.get("files")
    if not isinstance(files, list):
        raise InputFormatError("manifest 'files' must be a list", path)
    for i, entry in enumerate(files):
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"]):
            raise InputFormatError(f"manifest 'files[{i}]' must be an object with a 'name'", path)
        count = entry.get("count")
        if count is not None and not (isinstance(count, int) and not isinstance(count, bool) and count > 0):
            raise InputFormatError(f"manifest 'files[{i}].count' must be a positive integer, not {count!r}", path)
    return manifest


def manifest_entry(manifest: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The manifest's entry for tensor file ``path``; a file the manifest does not list is an error."""
    path = Path(path)
    entry = next((f for f in manifest["files"] if f.get("name") == path.name), None)
    if entry is None:
        raise InputFormatError(f"not listed in the folder's {MANIFEST} 'files'; expected an entry for every tensor "
                              "file (a stray or foreign file?)", path)
    return entry


def read_listed_bin(path: str | Path, manifest: dict[str, Any]) -> np.ndarray:
    """Read a ``.bin`` of a manifest folder with the manifest's dtype, item shape and count."""
    entry = manifest_entry(manifest, path)
    return read_bin(path, manifest["dtype"], manifest["item_shape"], entry.get("count"))


def list_input_files(spec: str | Path, suffixes: Sequence[str] = (".bin", ".npy", ".txt")) -> list[Path]:
    """Resolve infer's ``--input``: a folder (its tensor files, lexicographic order as msame) or a
    comma-separated list of files."""
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix in suffixes and not p.name.startswith(".")
        )
        files = [p for p in files if not p.stem.endswith("_label")]
        if not files:
            raise MissingInputError(f"no {'/'.join(suffixes)} input files", path)
        return files
    files = [Path(p) for p in text.split(",") if p]
    for f in files:
        if not f.is_file():
            raise MissingInputError("input file not found", f)
    if not files:
        raise MissingInputError("no input given")
    return files
