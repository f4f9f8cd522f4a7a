"""``faceembed serve``: the HTTP service over a store of collections."""

from __future__ import annotations

from typing import Annotated

import typer

from faceembed.cli._app import app

PANEL = "Service"


@app.command(rich_help_panel=PANEL)
def serve(
    db: Annotated[str, typer.Option(help="The store: sqlite:///path.db (or a path ending .db) | "
                                         "postgresql://user@host:port/dbname.")],
    model: Annotated[str, typer.Option(help="The face model the collections were made with.")] = "dlib-resnet",
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(help="Server processes (they share the store; PostgreSQL suits several "
                                              "best).")] = 1,
    max_upload_mb: Annotated[float, typer.Option(help="Largest request body; bigger ones get 413.")] = 20,
    thumbnails: Annotated[str | None, typer.Option(help="Folder for face thumbnails (default: DB.thumbnails/ "
                                                        "next to a SQLite file; none for PostgreSQL).")] = None,
) -> None:
    """Serve face recognition over HTTP: enroll, recognize, verify, embed; API keys from 'faceembed collection
    create'; OpenAPI at /docs, a web page at /."""
    from faceembed.serve.run import serve as run_server

    run_server(db, model, host, port, workers, max_upload_mb, thumbnails)
