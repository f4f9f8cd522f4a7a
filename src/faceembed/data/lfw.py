"""LFW protocol files: pairs lists (View 1 and View 2), 5-point landmark files, image listing.

Pairs files
    View 2 (``pairs.txt``): first line ``10<TAB>300`` (folds, pairs per half-fold), then for each fold 300
    same-person lines ``Name i j`` and 300 different-person lines ``NameA i NameB j``.
    View 1 (``pairsDevTrain.txt``, ``pairsDevTest.txt``): first line ``N``, then N same and N different
    lines; every pair gets fold 0.

Landmark files (5 points: left eye, right eye, nose tip, left mouth corner, right mouth corner)
    ``"interleaved"`` (``lfw_landmark.txt``): ``Name/Name_0001.jpg<TAB>x1<TAB>y1 ... x5<TAB>y5``.
    ``"xxyy"`` (``ldmark_lfw_mtcnncaffe.txt``): ``Name/Name_0001.jpg x1 x2 x3 x4 x5 y1 y2 y3 y4 y5``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from faceembed.data.tensorfiles import read_utf8
from faceembed.errors import InputFormatError, MissingInputError
from faceembed.files import write_text

LandmarkFormat = Literal["interleaved", "xxyy"]
LANDMARK_FORMATS: tuple[str, ...] = ("interleaved", "xxyy")


@dataclass(frozen=True)
class Pair:
    """One verification pair. ``idx1``/``idx2`` are LFW's 1-based image numbers."""

    fold: int
    name1: str
    idx1: int
    name2: str
    idx2: int
    same: bool

    @property
    def relpath1(self) -> str:
        """Relative path of the first image (``Name/Name_0001.jpg``)."""
        return image_relpath(self.name1, self.idx1)

    @property
    def relpath2(self) -> str:
        """Relative path of the second image."""
        return image_relpath(self.name2, self.idx2)


def image_relpath(name: str, idx: int) -> str:
    """``Name/Name_%04d.jpg``: the LFW image ``idx`` (1-based) of ``name``."""
    return f"{name}/{name}_{idx:04d}.jpg"


def _read_lines(path: Path, what: str) -> list[str]:
    lines = read_utf8(path, what).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _parse_int(token: str, path: Path, lineno: int, what: str) -> int:
    if not token.isascii() or not token.isdigit():
        raise InputFormatError(f"{what} is not a non-negative integer: {token[:40]!r}", path, f"line {lineno}")
    if len(token) > 9:  # also keeps int() away from its 4300-digit ValueError
        raise InputFormatError(f"{what} {token[:40]} is implausibly large, expected at most 9 digits", path,
                               f"line {lineno}")
    return int(token)


def _parse_index(token: str, path: Path, lineno: int) -> int:
    value = _parse_int(token, path, lineno, "image index")
    if value < 1:
        raise InputFormatError(f"image index must be >= 1, got {value}", path, f"line {lineno}")
    return value


def read_pairs(path: str | Path) -> list[Pair]:
    """Parse an LFW pairs file (View 2 ``folds<TAB>n`` header, or View 1 single-count header).

    Raises:
        MissingInputError: the file does not exist.
        InputFormatError: bad header, a line with the wrong number of fields, a non-integer index, or a
            line count that does not match the header (the message names the file and line number).
    """
    path = Path(path)
    lines = _read_lines(path, "pairs file")
    if not lines:
        raise InputFormatError("empty pairs file, expected a header line 'FOLDS<TAB>N' or 'N'", path, "line 1")
    header = lines[0].split()
    if len(header) == 2:
        n_folds = _parse_int(header[0], path, 1, "number of folds")
        per_half = _parse_int(header[1], path, 1, "pairs per fold")
        fold_base = 0
    elif len(header) == 1:
        n_folds, per_half = 1, _parse_int(header[0], path, 1, "number of pairs")
        fold_base = 0
    else:
        raise InputFormatError(
            f"header must be 'FOLDS<TAB>N' (View 2) or 'N' (View 1), got {len(header)} fields", path, "line 1"
        )
    if n_folds < 1 or per_half < 1:
        raise InputFormatError("header counts must be >= 1", path, "line 1")
    expected = n_folds * 2 * per_half
    body = lines[1:]
    if len(body) != expected:
        raise InputFormatError(
            f"header announces {n_folds} fold(s) of {per_half} same + {per_half} different pairs "
            f"({expected} lines) but the file has {len(body)} pair lines",
            path,
            f"line {len(lines)}",
        )
    pairs: list[Pair] = []
    for i, line in enumerate(body):
        lineno = i + 2
        fold = fold_base + i // (2 * per_half)
        same = (i % (2 * per_half)) < per_half
        fields = line.split()
        if same:
            if len(fields) != 3:
                raise InputFormatError(
                    f"same-person line needs 3 fields 'Name i j', got {len(fields)}", path, f"line {lineno}"
                )
            name = fields[0]
            pairs.append(
                Pair(fold, name, _parse_index(fields[1], path, lineno), name,
                     _parse_index(fields[2], path, lineno), True)
            )
        else:
            if len(fields) != 4:
                raise InputFormatError(
                    f"different-person line needs 4 fields 'NameA i NameB j', got {len(fields)}",
                    path,
                    f"line {lineno}",
                )
            pairs.append(
                Pair(fold, fields[0], _parse_index(fields[1], path, lineno), fields[2],
                     _parse_index(fields[3], path, lineno), False)
            )
    return pairs


def format_pairs(pairs: Sequence[Pair]) -> str:
    """Render ``pairs`` in the LFW layout (View 2 header if there are several folds, else View 1).

    Each fold must hold the same number of same and different pairs; pairs are written fold by fold,
    same-person lines first, in their given order.
    """
    folds = sorted({p.fold for p in pairs})
    if not folds:
        raise ValueError("no pairs to write")
    per_half: int | None = None
    out: list[str] = []
    for fold in folds:
        same = [p for p in pairs if p.fold == fold and p.same]
        diff = [p for p in pairs if p.fold == fold and not p.same]
        if len(same) != len(diff) or (per_half is not None and len(same) != per_half):
            raise ValueError("every fold needs the same number of same and different pairs")
        per_half = len(same)
        out += [f"{p.name1}\t{p.idx1}\t{p.idx2}" for p in same]
        out += [f"{p.name1}\t{p.idx1}\t{p.name2}\t{p.idx2}" for p in diff]
    header = f"{len(folds)}\t{per_half}" if len(folds) > 1 else f"{per_half}"
    return "\n".join([header, *out]) + "\n"


def write_pairs(path: str | Path, pairs: Sequence[Pair]) -> None:
    """Write ``pairs`` atomically in the LFW layout (see :func:`format_pairs`)."""
    write_text(path, format_pairs(pairs))


def pair_images(pairs: Iterable[Pair]) -> list[str]:
    """Sorted unique relative image paths named by ``pairs``."""
    return sorted({rp for p in pairs for rp in (p.relpath1, p.relpath2)})


def fold_people(pairs: Iterable[Pair]) -> list[set[str]]:
    """For each fold (index = fold number), the set of person names appearing in its pairs."""
    pairs = list(pairs)
    if not pairs:
        return []
    out: list[set[str]] = [set() for _ in range(max(p.fold for p in pairs) + 1)]
    for p in pairs:
        out[p.fold].update((p.name1, p.name2))
    return out


def list_lfw_images(root: str | Path) -> list[str]:
    """Sorted relative paths ``Name/Name_0001.jpg`` of every ``.jpg`` one level below ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError("image folder not found", root)
    out: list[str] = []
    with os.scandir(root) as people:
        for person in people:
            if not person.is_dir():
                continue
            with os.scandir(person.path) as files:
                out += [f"{person.name}/{f.name}" for f in files if f.name.lower().endswith(".jpg")]
    return sorted(out)


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _detect_landmark_format(line: str) -> LandmarkFormat:
    return "interleaved" if "\t" in line else "xxyy"


def read_landmarks(path: str | Path, fmt: LandmarkFormat | None = None) -> dict[str, np.ndarray]:
    """Read a 5-point landmark file into ``{relpath: float32 array (5, 2) of (x, y)}``.

    ``fmt`` is ``"interleaved"`` (x1 y1 ... x5 y5, the SphereFace ``lfw_landmark.txt``) or ``"xxyy"``
    (x1..x5 then y1..y5, PFE's ``ldmark_lfw_mtcnncaffe.txt``); ``None`` detects it from the first line
    (TAB-separated means interleaved). Fields may be separated by any whitespace. With ``fmt=None`` an
    empty file is an error (nothing to detect the format from, and no caller wants zero landmarks); with an
    explicit ``fmt`` it reads as ``{}`` (the round trip of an empty mapping).

    Raises:
        InputFormatError: empty file (``fmt=None``), wrong field count, a non-numeric or non-finite value,
            or a duplicated path (the message names the line).
    """
    path = Path(path)
    if fmt is not None and fmt not in LANDMARK_FORMATS:
        raise ValueError(f"fmt must be one of {LANDMARK_FORMATS}, got {fmt!r}")
    lines = _read_lines(path, "landmark file")
    if fmt is None:
        first = next((ln for ln in lines if ln.strip()), "")
        if not first:
            raise InputFormatError("empty landmark file, expected lines 'PATH x1 y1 ... x5 y5' or "
                                   "'PATH x1..x5 y1..y5'", path, "line 1")
        fmt = _detect_landmark_format(first)
    out: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            raise InputFormatError("empty line", path, f"line {lineno}")
        if len(fields) != 11:
            raise InputFormatError(
                f"expected an image path and 10 coordinates, got {len(fields)} fields", path, f"line {lineno}"
            )
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            bad = next(v for v in fields[1:] if not _is_float(v))
            raise InputFormatError(f"coordinate {bad[:40]!r} is not a number, expected 10 numbers after the path",
                                   path, f"line {lineno}") from None
        if not all(math.isfinite(v) for v in values):
            raise InputFormatError("coordinate is not finite", path, f"line {lineno}")
        arr = np.asarray(values, dtype=np.float64)
        pts = arr.reshape(5, 2) if fmt == "interleaved" else arr.reshape(2, 5).T
        rel = fields[0]
        if rel in out:
            raise InputFormatError(f"duplicate image path {rel!r}", path, f"line {lineno}")
        out[rel] = np.ascontiguousarray(pts, dtype=np.float32)
    return out


def _fmt_value(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else format(float(v), ".9g")


def write_landmarks(path: str | Path, landmarks: dict[str, np.ndarray], fmt: LandmarkFormat) -> None:
    """Write ``landmarks`` atomically in ``fmt``; :func:`read_landmarks` reads it back exactly (float32).

    Interleaved files are TAB-separated, ``xxyy`` files space-separated, as the published files are.
    """
    if fmt not in LANDMARK_FORMATS:
        raise ValueError(f"fmt must be one of {LANDMARK_FORMATS}, got {fmt!r}")
    sep = "\t" if fmt == "interleaved" else " "
    rows: list[str] = []
    for rel, pts in landmarks.items():
        if not rel or any(c.isspace() for c in rel):
            raise ValueError(f"image path must be non-empty without whitespace: {rel!r}")
        a = np.asarray(pts, dtype=np.float32)
        if a.shape != (5, 2):
            raise ValueError(f"landmarks for {rel!r} must have shape (5, 2), got {a.shape}")
        flat = a.reshape(-1) if fmt == "interleaved" else a.T.reshape(-1)
        rows.append(sep.join([rel, *(_fmt_value(float(v)) for v in flat)]))
    write_text(path, "".join(r + "\n" for r in rows))
