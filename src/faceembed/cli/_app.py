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
Overwrite = Annotated[bool, typer.Option(help="The output folder holds another run's outputs: remove them and "
                                               "start again (default: refuse, naming what differs).")]
Detector = Annotated[str, typer.Option(help="mtcnn (find the face) | none (every photo is already a face crop, "
                                             "used whole).")]
NoFace = Annotated[str, typer.Option(help="A photo where MTCNN finds no face: skip (listed) | whole (used whole "
                                          "as a face crop; counted in the summary).")]
#: The face model of every photo command: the built-in model unless told otherwise.
FaceModelOption = Annotated[str, typer.Option("--model", help="Face model: a name (faceembed models: built-in "
                                                              "dlib-resnet, or imported with faceembed import) "
                                                              "or a file with a model card (.onnx, .pt).")]
DEFAULT_MODEL = "dlib-resnet"
NumWorkers = Annotated[int | None, typer.Option(help="ray: workers (default: one per CPU).")]


def parse_size(text: str) -> tuple[int, int]:
    """``"112x96"`` -> ``(112, 96)`` (height x width); anything else is one clear error."""
    from faceembed.errors import FaceembedError

    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise FaceembedError(f"--size must look like 112x96 (height x width), not {text!r}") from None
    if h <= 0 or w <= 0:
        raise FaceembedError(f"--size must be positive, not {text!r}")
    return h, w


def check_choices(*checks: tuple[str, str | None, tuple[str, ...]]) -> None:
    """Refuse, before any work, the first ``(name, value, choices)`` whose value is not one of its choices: one
    clear error naming ``--name``. A value of None (an option not given) passes."""
    from faceembed.errors import FaceembedError

    for name, value, choices in checks:
        if value is not None and value not in choices:
            raise FaceembedError(f"--{name} must be one of {', '.join(choices)}, not {value!r}")


def split_choices(name: str, text: str, choices: tuple[str, ...]) -> list[str]:
    """A comma-separated list of ``choices``; an unknown item is one clear error naming ``--name``."""
    from faceembed.errors import FaceembedError

    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in choices]
    if bad or not items:
        raise FaceembedError(f"--{name} takes a comma-separated list of {', '.join(choices)}, not {text!r}")
    return items


def split_ints(name: str, text: str, low: int = 1) -> list[int]:
    """A comma-separated list of whole numbers >= ``low``; anything else is one clear error naming ``--name``."""
    from faceembed.errors import FaceembedError

    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or min(values) < low:
        raise FaceembedError(f"--{name} takes comma-separated whole numbers >= {low} (e.g. 1,32), not {text!r}")
    return values


def print_json(obj) -> None:
    """Print ``obj`` as indented JSON on stdout."""
    typer.echo(json.dumps(obj, indent=2))
