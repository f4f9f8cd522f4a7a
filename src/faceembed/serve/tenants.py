"""Who is asking: an API key resolves to its collection (``store.collection_for_key``), and the collection to an
open :class:`faceembed.faces.collection.Collection` that shares the server's one analyzer (and so its batched model).
A key sees only its own collection. Face thumbnails (small JPEGs) are kept as files in a folder, one per face id."""

from __future__ import annotations

import io
import re
import threading
from pathlib import Path

from faceembed.serve.errors import ServeError

_FACE_ID = re.compile(r"^[0-9a-f]{32}$")
THUMB_SIZE = 112


class Tenants:
    """Open collections by API key. ``store`` answers key look-ups; ``open_collection(name)`` opens one
    (the server passes its shared analyzer there)."""

    def __init__(self, store, open_collection):
        self.store = store
        self._open = open_collection
        self._open_collections: dict[str, tuple[float, object]] = {}
        self._lock = threading.Lock()

    def collection(self, api_key: str | None):
        """The open Collection of ``api_key``: 401 when there is none, 403 when it is unknown or revoked, 409 when
        its collection is bound to another model than the server's (Collection.open refuses the analyzer)."""
        if not api_key:
            raise ServeError(401, "missing x-api-key header: every /v1 route but /v1/health needs a key")
        info = self.store.collection_for_key(api_key)
        if info is None:
            raise ServeError(403, "unknown or revoked API key")
        with self._lock:
            cached = self._open_collections.get(info.name)
            if cached is None or cached[0] != info.created:  # deleted and made again: open the new one
                if cached is not None:
                    cached[1].close()
                cached = (info.created, self._open_or_409(info.name))
                self._open_collections[info.name] = cached
        return cached[1]

    def _open_or_409(self, name: str):
        from faceembed.errors import FaceembedError

        try:
            return self._open(name)
        except FaceembedError as exc:
            raise ServeError(409, f"cannot serve collection {name!r}: {exc.one_line()}") from None

    def close(self) -> None:
        with self._lock:
            for _, col in self._open_collections.values():
                col.close()
            self._open_collections.clear()


def check_face_id(face_id: str) -> str:
    """A face id is 32 lowercase hex digits (uuid4 hex); anything else is an unknown face (404), so that no
    face id ever names another file."""
    if not _FACE_ID.match(face_id):
        raise ServeError(404, f"no face {face_id[:80]!r} in this collection")
    return face_id


class Thumbnails:
    """``folder/<collection digest>/<face_id>.jpg``; a server without a folder keeps none (the route says 404)."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder else None

    def _path(self, collection: str, face_id: str) -> Path | None:
        import hashlib

        if self.folder is None:
            return None
        tenant = hashlib.sha256(collection.encode()).hexdigest()[:16]
        return self.folder / tenant / f"{check_face_id(face_id)}.jpg"

    def save(self, collection: str, face_id: str, photo: bytes, box: list[float] | None) -> None:
        """A square JPEG around ``box`` ([x, y, w, h]) of the photo; written atomically."""
        path = self._path(collection, face_id)
        if path is None:
            return
        from faceembed.files import write_with

        data = make_thumbnail(photo, box)
        write_with(path, lambda tmp: Path(tmp).write_bytes(data))

    def read(self, collection: str, face_id: str) -> bytes:
        path = self._path(collection, face_id)
        if path is None or not path.is_file():
            raise ServeError(404, f"no thumbnail for face {face_id!r}")
        return path.read_bytes()

    def delete(self, collection: str, face_ids: list[str]) -> None:
        for face_id in face_ids:
            path = self._path(collection, face_id)
            if path is not None:
                path.unlink(missing_ok=True)


def make_thumbnail(photo: bytes, box: list[float] | None, size: int = THUMB_SIZE) -> bytes:
    """JPEG bytes of a square crop around ``box`` (1.4x its larger side, clipped to the photo), ``size`` px."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(photo)) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        if box:
            x, y, w, h = box
            side = 1.4 * max(w, h)
            cx, cy = x + w / 2, y + h / 2
            im = im.crop((int(max(0, cx - side / 2)), int(max(0, cy - side / 2)),
                          int(min(im.width, cx + side / 2)), int(min(im.height, cy + side / 2))))
        im.thumbnail((size, size))
        out = io.BytesIO()
        im.save(out, "JPEG", quality=85)
    return out.getvalue()
