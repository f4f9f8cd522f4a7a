"""The typer application shared by the command modules, and small output helpers."""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train, export, run offline and evaluate face-embedding models.",
)

Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
# The Ray engine's options, shared by infer, align and enroll.
Engine = Annotated[str, typer.Option(help="local | ray (Ray Data; pip install 'faceembed\\[ray]').")]
Address = Annotated[str | None, typer.Option(help="ray: cluster to join (auto, ray://HOST:10001); "
                                                  "default: a local Ray instance.")]
NumWorkers = Annotated[int | None, typer.Option(help="ray: workers (default: one per CPU).")]


def print_json(obj) -> None:
    """Print ``obj`` as indented JSON on stdout."""
    typer.echo(json.dumps(obj, indent=2))
