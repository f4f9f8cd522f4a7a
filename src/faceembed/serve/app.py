"""``faceembed serve``: face recognition over HTTP (FastAPI), collections in a store (SQLite or PostgreSQL), one API
key per client, a web page at ``/``.

Every ``/v1`` route but ``/v1/health`` needs the header ``x-api-key``; the key resolves to its collection, and a key
sees only that one. Photos are the multipart field ``file`` (``a`` and ``b`` for verify). Errors are JSON
``{"error": "<one line>"}`` (see :mod:`faceembed.serve.errors`). The server runs one face model; the crops of
concurrent requests are batched into it (:mod:`faceembed.serve.batching`) while detection runs in the threadpool.
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Body, FastAPI, File, Header, Query, UploadFile
from fastapi.responses import Response

from faceembed.serve.errors import ServeError, UploadLimit, install_error_handlers

log = logging.getLogger("faceembed.serve")
MULTIPART_SLACK = 64 * 1024  # the multipart envelope around a photo at the size limit
ENV_PREFIX = "FACEEMBED_SERVE_"

Key = Annotated[str | None, Header(alias="x-api-key", description="The collection's API key.")]
Photo = Annotated[UploadFile, File(description="The photo (JPEG, PNG, BMP, WebP, TIFF, GIF, PNM).")]
DetectorQ = Annotated[Literal["mtcnn", "none"], Query(description="mtcnn | none (the photo is a face crop).")]
NoFaceQ = Annotated[Literal["skip", "whole"], Query(description="skip | whole (no face found: use the photo "
                                                                 "whole as a face crop).")]


def default_thumbnails_dir(db_url: str) -> Path | None:
    """Next to a SQLite file: ``<db>.thumbnails/``; None for PostgreSQL (give ``thumbnails_dir``)."""
    from faceembed.store import sqlite_path

    path = sqlite_path(db_url)
    return None if path is None else path.with_name(path.name + ".thumbnails")


class Service:
    """What the routes share: the store, the model (batched), the analyzer and the open collections."""

    def __init__(self, db_url: str, model: str, window_ms: float, max_batch: int, thumbnails_dir):
        from faceembed.faces.collection import Collection
        from faceembed.faces.embed import FaceModel
        from faceembed.serve.batching import BatchingModel, ThreadSafeAnalyzer
        from faceembed.serve.tenants import Tenants, Thumbnails
        from faceembed.store import open_store

        self.db_url, self.model_name = db_url, model
        self.store = open_store(db_url)
        self.batcher = BatchingModel(FaceModel.load(model), window_ms=window_ms, max_batch=max_batch)
        self.analyzer = ThreadSafeAnalyzer(self.batcher)
        self.tenants = Tenants(self.store, lambda name: Collection.open(self.store, name, analyzer=self.analyzer))
        self.thumbnails = Thumbnails(thumbnails_dir)

    def close(self) -> None:
        self.tenants.close()
        self.batcher.close()
        self.store.close()


def _read(upload: UploadFile) -> bytes:
    data = upload.file.read()
    if not data:
        raise ServeError(400, f"not a readable image: the uploaded file {upload.filename or ''!r} is empty")
    return data


def create_app(db_url: str, model: str | None = None, max_upload_mb: float = 20, window_ms: float = 5.0,
               max_batch: int = 32, thumbnails_dir: str | Path | None = None) -> FastAPI:
    """The service as an ASGI app on the store at ``db_url``, running ``model`` (default dlib-resnet).

    ``max_upload_mb``: request bodies over it get 413 while they are read; ``window_ms`` / ``max_batch``: the
    micro-batching window and size; ``thumbnails_dir``: where face thumbnails are kept (default next to a SQLite
    file, none for PostgreSQL).
    """
    from faceembed.serve.page import mount_page

    model = model or "dlib-resnet"
    thumbs = thumbnails_dir if thumbnails_dir is not None else default_thumbnails_dir(db_url)
    state: dict[str, Service] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["service"] = Service(db_url, model, window_ms, max_batch, thumbs)
        yield
        state.pop("service").close()

    app = FastAPI(title="faceembed", summary="Face recognition with persistent collections.", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(UploadLimit, max_bytes=int(max_upload_mb * 2**20) + MULTIPART_SLACK)

    def service() -> Service:
        return state["service"]

    def col(key: str | None):
        return service().tenants.collection(key)

    @app.get("/v1/health", tags=["service"])
    def health() -> dict:
        """The server is up; the model it runs and what its batcher did."""
        return {"status": "ok", "model": model, "batching": service().batcher.stats.to_dict()}

    @app.post("/v1/subjects/{subject:path}/faces", status_code=201, tags=["subjects"])
    def enroll(subject: str, file: Photo, x_api_key: Key = None, detector: DetectorQ = "mtcnn",
               no_face: NoFaceQ = "skip") -> dict:
        """Enroll the photo's largest face as ``subject`` (created on its first face). 422 when there is no face."""
        c = col(x_api_key)
        photo = _read(file)
        out = c.enroll(subject, photo, detector=detector, no_face=no_face)
        try:
            service().thumbnails.save(c.info.name, out["face_id"], photo, out.get("box"))
        except Exception:  # the face is enrolled; a missing thumbnail only shows as a blank on the page
            log.exception("thumbnail of face %s not written", out["face_id"])
        return out

    @app.get("/v1/subjects", tags=["subjects"])
    def subjects(x_api_key: Key = None) -> dict:
        """Every subject of the key's collection with its face count."""
        return {"subjects": col(x_api_key).subjects()}

    @app.get("/v1/subjects/{subject:path}/faces", tags=["subjects"])
    def subject_faces(subject: str, x_api_key: Key = None) -> dict:
        """The faces of one subject: ids, boxes, when they were enrolled."""
        c = col(x_api_key)
        _known_subject(c, subject)
        rows = c.store.faces(c.info.name, subject)
        return {"subject": subject, "faces": [{"face_id": r.face_id, "box": r.box, "quality": r.quality,
                                               "created": r.created} for r in rows]}

    @app.delete("/v1/subjects/{subject:path}", tags=["subjects"])
    def delete_subject(subject: str, x_api_key: Key = None) -> dict:
        """Delete a subject and all its faces."""
        c = col(x_api_key)
        _known_subject(c, subject)
        face_ids = [r.face_id for r in c.store.faces(c.info.name, subject)]
        c.delete_subject(subject)
        service().thumbnails.delete(c.info.name, face_ids)
        return {"deleted": subject, "faces": len(face_ids)}

    @app.patch("/v1/subjects/{subject:path}", tags=["subjects"])
    def rename_subject(subject: str, name: Annotated[str, Body(embed=True, description="The new name.")],
                       x_api_key: Key = None) -> dict:
        """Rename a subject; renaming into an existing name merges the two."""
        c = col(x_api_key)
        _known_subject(c, subject)
        c.rename(subject, name)
        return {"subject": name, "renamed_from": subject}

    @app.delete("/v1/faces/{face_id}", tags=["faces"])
    def delete_face(face_id: str, x_api_key: Key = None) -> dict:
        """Delete one face (the subject stays, even with no face left)."""
        from faceembed.serve.tenants import check_face_id

        c = col(x_api_key)
        c.delete_face(check_face_id(face_id))
        service().thumbnails.delete(c.info.name, [face_id])
        return {"deleted": face_id}

    @app.get("/v1/faces/{face_id}/thumbnail", tags=["faces"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    def thumbnail(face_id: str, x_api_key: Key = None) -> Response:
        """A small JPEG of the face as it was enrolled."""
        c = col(x_api_key)
        data = service().thumbnails.read(c.info.name, face_id)
        return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})

    @app.post("/v1/recognize", tags=["recognition"])
    def recognize(file: Photo, x_api_key: Key = None, limit: Annotated[int, Query(ge=1, le=100)] = 5,
                  detector: DetectorQ = "mtcnn", no_face: NoFaceQ = "skip") -> dict:
        """Every face of the photo, largest first, with its best subjects; ``subject`` is the best match at or
        above the collection's threshold, else null."""
        c = col(x_api_key)
        return {"faces": c.recognize(_read(file), limit=limit, detector=detector, no_face=no_face)}

    @app.post("/v1/verify", tags=["recognition"])
    def verify(a: Photo, b: Photo, x_api_key: Key = None, detector: DetectorQ = "mtcnn") -> dict:
        """Are the largest faces of photos ``a`` and ``b`` the same person, at the collection's threshold?"""
        c = col(x_api_key)
        return c.verify(_read(a), _read(b), detector=detector)

    @app.post("/v1/embed", tags=["recognition"])
    def embed(file: Photo, x_api_key: Key = None, detector: DetectorQ = "mtcnn", no_face: NoFaceQ = "skip") -> dict:
        """The photo's faces with their embeddings (unit length)."""
        c = col(x_api_key)
        return {"faces": c.embed(_read(file), detector=detector, no_face=no_face)}

    mount_page(app)
    return app


def _known_subject(c, subject: str) -> None:
    if not any(s["subject"] == subject for s in c.subjects()):
        raise ServeError(404, f"no subject {subject[:80]!r} in this collection")


def app_from_env() -> FastAPI:
    """The app configured by ``FACEEMBED_SERVE_*`` variables: the factory that uvicorn's worker processes call
    (``faceembed serve --workers N`` sets them)."""
    env = os.environ
    return create_app(env[ENV_PREFIX + "DB"], env.get(ENV_PREFIX + "MODEL") or None,
                      float(env.get(ENV_PREFIX + "MAX_UPLOAD_MB", "20")),
                      float(env.get(ENV_PREFIX + "WINDOW_MS", "5")), int(env.get(ENV_PREFIX + "MAX_BATCH", "32")),
                      env.get(ENV_PREFIX + "THUMBNAILS") or None)
