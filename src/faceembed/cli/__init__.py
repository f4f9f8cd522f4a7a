"""The ``faceembed`` command: parse, call one public function, print. Errors print as one line:
exit 2 for bad input, 1 for internal failures, 130 when interrupted.

Commands live in one module per pipeline area; importing them registers them on ``app``.
"""

from __future__ import annotations

import sys

import typer

from faceembed.cli import cluster, collection, lfw, models, photos, pipeline, serve  # noqa: F401  (registers the commands)
from faceembed.cli._app import app
from faceembed.errors import FaceembedError

__all__ = ["app", "main"]


def main() -> None:
    """Console entry point: typed errors become one line on stderr."""
    try:
        app()
    except FaceembedError as exc:
        typer.echo(f"faceembed: error: {exc.one_line()}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("faceembed: interrupted; rerun the same command to resume", err=True)
        sys.exit(130)
