"""What made a resumable output folder, recorded in it, so that a rerun resumes only the same work.

Every resumable folder (``infer``, ``align``, ``detect``'s parts, ``train-pfe`` heads, ``bench`` work folders)
holds ``faceembed_run.json``: ``{"format": "faceembed-run", "version": 1, "made_by": {...}}``, where ``made_by``
names the command, the model file's SHA-256, the model card or input spec, the options that change the outputs
and a digest of the input list (names, sizes and modification times). A rerun with the same ``made_by``
resumes; with another it is refused in one line naming what differs, or, with ``--overwrite``, the folder's
contents are removed and the run starts again. A folder that holds files but no record is never written into
(it was not made by faceembed, or by a version that kept no record): choose an empty folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from faceembed.errors import FaceembedError
from faceembed.files import file_sha256, write_json

RECORD = "faceembed_run.json"
FORMAT = "faceembed-run"
VERSION = 1


def file_identity(path: str | Path) -> dict[str, Any]:
    """``{"name", "sha256", "bytes"}`` of a file (a model, a landmark file)."""
    path = Path(path)
    return {"name": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size}


def inputs_digest(paths: Iterable[str | Path]) -> dict[str, Any]:
    """A digest of an input list: count and SHA-256 over (name, size, mtime) of each file, in order. Cheap on
    thousands of images; a file rewritten in place with new contents changes its mtime and so the digest."""
    h = hashlib.sha256()
    n = 0
    for p in paths:
        p = Path(p)
        try:
            st = p.stat()
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            h.update(f"{p}\0missing\n".encode())
        n += 1
    return {"files": n, "sha256": h.hexdigest()}


def read_record(folder: str | Path) -> dict[str, Any] | None:
    """The ``made_by`` of ``folder``'s record, or None when it has none (a corrupt record is an error)."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FaceembedError(f"corrupt run record ({exc}); remove the folder or rerun with --overwrite", path) \
            from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("made_by"), dict):
        raise FaceembedError("not a faceembed run record", path)
    return record["made_by"]


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two ``made_by`` dicts (nested dicts compared key by key)."""
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def _short(value: Any) -> Any:
    return value[:12] + "..." if isinstance(value, str) and len(value) > 40 else value


def _describe(old: dict[str, Any], new: dict[str, Any], keys: list[str]) -> str:
    parts = []
    for key in keys[:3]:
        a, b = old, new
        for k in key.split("."):
            a = a.get(k) if isinstance(a, dict) else None
            b = b.get(k) if isinstance(b, dict) else None
        parts.append(f"{key}: {_short(a)!r} -> {_short(b)!r}")
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    return "; ".join(parts) + more


def claim_folder(folder: str | Path, made_by: dict[str, Any], overwrite: bool = False) -> bool:
    """Make ``folder`` the output folder of the run ``made_by``; True when it resumes an earlier run of the same.

    A folder with another run's record is refused (one line naming what differs) unless ``overwrite``, which
    empties it first; a non-empty folder with no record is refused either way.
    """
    folder = Path(folder)
    made_by = json.loads(json.dumps(made_by))  # the JSON form: tuples as lists, as read back
    old = read_record(folder)
    entries = [p for p in folder.iterdir()] if folder.is_dir() else []
    if old is not None and old == made_by:
        return True
    if old is not None:
        if not overwrite:
            diff = differences(old, made_by)
            raise FaceembedError(f"holds the outputs of another run ({_describe(old, made_by, diff)}); rerun with "
                                 "--overwrite to start again, or choose another folder", folder)
        _empty(folder, entries)
    elif entries:
        raise FaceembedError(f"is not empty and holds no faceembed run record ({RECORD}): choose an empty or a new "
                             "folder", folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / RECORD, {"format": FORMAT, "version": VERSION, "made_by": made_by})
    return False


def _empty(folder: Path, entries: list[Path]) -> None:
    for p in entries:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
