"""The web page at ``/``: plain HTML and one small script (``static/``), no build step. Paste an API key (kept in
the browser's localStorage), drop or choose a photo to see its faces boxed and named, list the subjects with a
thumbnail each, enroll the photo's face under a name."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).with_name("static")


def mount_page(app: FastAPI) -> None:
    """``GET /`` -> index.html, ``/static/*`` -> the script and style sheet."""

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
