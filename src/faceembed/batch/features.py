"""Per-image features for ``verify``: from an ``infer`` output folder (its ``outputs.json`` names the image
behind each row when the inputs came from ``tobin lfw``) or from an ``.npz`` file with ``names`` plus one
array per output (``mu``/``embedding``, ``sigma_sq``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from faceembed.data.tensorfiles import output_name, read_bin, read_npy, read_text_tensor
from faceembed.errors import InputFormatError, MissingInputError


def read_features(source: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """``{output name: {image name: vector}}`` from an infer folder or an ``.npz`` file."""
    source = Path(source)
    if not source.exists():
        raise MissingInputError("features not found", source)
    if source.is_file():
        return _read_npz(source)
    return _read_infer_folder(source)


def _read_npz(path: Path) -> dict[str, dict[str, np.ndarray]]:
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputFormatError(f"not a valid .npz feature file ({str(exc).splitlines()[0][:100]})", path) from None
    if "names" not in data:
        raise InputFormatError("feature file has no 'names' array", path)
    names = [str(n) for n in data["names"]]
    out = {}
    for key in data.files:
        if key == "names":
            continue
        arr = data[key]
        if len(arr) != len(names):
            raise InputFormatError(f"{key!r} has {len(arr)} rows for {len(names)} names", path)
        out[key] = dict(zip(names, arr, strict=True))
    return out


def _read_infer_folder(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    meta_path = folder / "outputs.json"
    if not meta_path.is_file():
        raise MissingInputError("no outputs.json: not an infer output folder", folder)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputFormatError("outputs.json is not valid JSON", meta_path) from None
    outfmt = meta.get("outfmt", "BIN")
    out: dict[str, dict[str, np.ndarray]] = {o["name"]: {} for o in meta["outputs"]}
    for record in meta["files"]:
        items = record.get("items")
        if items is None:
            raise InputFormatError(f"{record['input']} has no item names (make inputs with 'tobin lfw')", meta_path)
        for o in meta["outputs"]:
            path = folder / output_name(record["input"], o["index"], outfmt)
            arr = _read_output(path, outfmt, o.get("item_shape"), len(items))
            out[o["name"]].update(zip(items, arr, strict=True))
    for o in meta["outputs"]:  # the model card's roles name the embedding of a model whose outputs are not
        role = o.get("role")   # named embedding / mu / sigma_sq (e.g. insightface's output0)
        if role in ("embedding", "mu", "sigma_sq") and role not in out:
            out[role] = out[o["name"]]
    return out


def _read_output(path: Path, outfmt: str, item_shape, count: int) -> np.ndarray:
    if outfmt == "NPY":
        arr = read_npy(path)
    elif outfmt == "TXT":
        arr = read_text_tensor(path)
    else:
        arr = read_bin(path, "float32", item_shape or (path.stat().st_size // (4 * count),), count)
    return arr.reshape(count, -1)
