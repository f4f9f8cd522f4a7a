"""Contact sheets of a people.json: one PNG per person (its faces cropped from the photos) and an index.html
linking them, to look at a clustering."""

from __future__ import annotations

import html as html_lib
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.files import write_text

TILE = 96
MAX_FACES = 64  # per sheet: a person's first faces; the page says how many there are


def face_crop(rgb: np.ndarray, box: list[float] | None, size: int = TILE, margin: float = 0.2) -> np.ndarray:
    """The face ``box`` [x, y, w, h] (with a margin; the whole photo when None) resized to ``size`` square."""
    import cv2

    h, w = rgb.shape[:2]
    if box is None:
        crop = rgb
    else:
        x, y, bw, bh = box
        m = margin * max(bw, bh)
        x1, y1 = int(max(0, x - m)), int(max(0, y - m))
        x2, y2 = int(min(w, x + bw + m)), int(min(h, y + bh + m))
        crop = rgb[y1:y2, x1:x2] if x2 > x1 and y2 > y1 else rgb
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA)


def write_contact_sheets(doc: dict[str, Any], photos: str | Path, out_dir: str | Path,
                         max_faces: int = MAX_FACES) -> list[Path]:
    """One ``PERSON.png`` per person of ``doc`` (people.json) under ``out_dir`` and ``index.html``; photos that
    cannot be read are left out of the sheets. Returns the sheets written."""
    from faceembed.data.images import read_image
    from faceembed.errors import FaceembedError
    from faceembed.report.contact_sheet import make_contact_sheet

    photos, out_dir = Path(photos), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sheets, rows = [], []
    for j, person in enumerate(doc["people"]):
        tiles = []
        for f in person["faces"][:max_faces]:
            try:
                tiles.append(face_crop(read_image(photos / f["image"], "RGB"), f["box"]))
            except FaceembedError:
                continue
        if not tiles:
            continue
        name = f"{j + 1:04d}-{_file_name(person['person'])}"  # numbered: two names may map to one file name
        make_contact_sheet(tiles, out_dir / f"{name}.png", cols=8)
        sheets.append(out_dir / f"{name}.png")
        label = html_lib.escape(person["person"])
        rows.append(f"<h2>{label} ({len(person['faces'])} faces)</h2><img src=\"{html_lib.escape(name)}.png\">")
    page = ("<!doctype html><meta charset=\"utf-8\"><title>people</title>"
            f"<h1>{len(doc['people'])} people, {len(doc['unassigned'])} faces unassigned</h1>\n"
            + "\n".join(rows) + "\n")
    write_text(out_dir / "index.html", page)
    return sheets


def _file_name(person: str) -> str:
    """A person's name made safe as a file name (names given by users may hold anything)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in person).strip(".")
    return safe[:100] or "person"
