"""The service's errors: every failure is JSON ``{"error": "<one line>"}`` with a 4xx status for bad input, never a
traceback. faceembed's typed errors are mapped to statuses in :func:`status_for`, the one place that does it; the
upload limit is enforced by :class:`UploadLimit` while the body is read."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from faceembed.errors import FaceembedError, InputFormatError, MissingInputError, NoFaceError

log = logging.getLogger("faceembed.serve")
_DRAIN_LIMIT = 1 << 30  # read and drop at most this much of a body refused by its Content-Length


class ServeError(FaceembedError):
    """An error the service answers with ``status`` (401 no key, 403 unknown key, 409 wrong model, ...)."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


def is_pixel_limit(exc: FaceembedError) -> bool:
    """A photo over PIL's MAX_IMAGE_PIXELS: refused from its header (PhotoTooLargeError) or by
    faceembed.data.images' decompression-bomb check while decoding."""
    from faceembed.faces.photo_input import PhotoTooLargeError

    if isinstance(exc, PhotoTooLargeError):
        return True
    text = exc.one_line()
    return isinstance(exc, InputFormatError) and ("pixel limit" in text or "MAX_IMAGE_PIXELS" in text)


def status_for(exc: FaceembedError) -> int:
    """The HTTP status of a faceembed error: 422 no face, 413 over the pixel limit, 400 unreadable photo or bad
    value, 404 unknown subject or face."""
    if isinstance(exc, ServeError):
        return exc.status
    if isinstance(exc, NoFaceError):
        return 422
    if is_pixel_limit(exc):
        return 413
    if isinstance(exc, MissingInputError):
        return 404
    return 400


def error_response(status: int, message: str) -> JSONResponse:
    """``{"error": message}`` on one line with ``status``."""
    one_line = " ".join(str(message).split()) or "error"
    return JSONResponse({"error": one_line[:500]}, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Typed errors -> their status, validation errors -> 400, HTTP errors keep theirs, anything else -> 500 with a
    one-line message (logged with its traceback on the server, never sent)."""

    @app.exception_handler(FaceembedError)
    async def _faceembed(request: Request, exc: FaceembedError) -> JSONResponse:
        return error_response(status_for(exc), exc.one_line())

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__})")


class UploadLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 without being kept in memory. A declared
    Content-Length over the limit is answered at once (the body is then read and dropped, so that the client
    sees the answer); a body that grows past the limit while it is read stops the request with 413."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise StarletteHTTPException(413, self._message())
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"request body over the {self.max_bytes / 2**20:g} MiB upload limit (--max-upload-mb)"

    async def _refuse(self, scope, receive, send) -> None:
        await error_response(413, self._message())(scope, receive, send)
        dropped, more = 0, True
        while more and dropped < _DRAIN_LIMIT:
            message = await receive()
            if message["type"] != "http.request":
                break
            dropped += len(message.get("body", b""))
            more = message.get("more_body", False)


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
