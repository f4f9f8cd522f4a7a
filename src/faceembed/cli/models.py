"""Model commands: the built-in models, bring any face model in with its card (import), show a card, calibrate
its thresholds at a false-accept rate, compare two photos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faceembed.cli._app import Progress, app, check_choices, print_json
from faceembed.errors import FaceembedError

PANEL = "Models: import, cards"


@app.command("import", rich_help_panel=PANEL)
def import_(
    source: Annotated[Path, typer.Argument(help="Model to bring in: .onnx (any tool), TensorFlow frozen graph .pb "
                                                "or SavedModel folder, PyTorch state dict (.pt/.pth/.ckpt).")],
    out: Annotated[Path, typer.Option(help="faceembed model to write: .onnx (ONNX, TensorFlow) or .pt (PyTorch).")],
    arch: Annotated[str | None, typer.Option(help="PyTorch: mobilefacenet (default), sphere20, sphere64, "
                                                  "iresnet18/34/50/100. ONNX: a name recorded in the card.")] = None,
    layout: Annotated[str | None, typer.Option(help="NCHW | NHWC (default: read from the input shape).")] = None,
    color: Annotated[str | None, typer.Option(help="RGB | BGR | GRAY: the channel order the model expects.")] = None,
    mean: Annotated[str | None, typer.Option(help="x = (pixel - mean) / std: one value or one per channel, "
                                                  "e.g. 127.5 (insightface) or 123.7,116.3,103.5.")] = None,
    std: Annotated[str | None, typer.Option(help="e.g. 127.5 (insightface), 128 (SphereFace), 1 (normalised "
                                                 "inside the graph).")] = None,
    template: Annotated[str | None, typer.Option(help="Alignment: sphereface (112x96), arcface (112x112), dlib "
                                                      "(150x150) or none (the detected box resized).")] = None,
    size: Annotated[str | None, typer.Option(help="HxW of the input (default: read from the input shape).")] = None,
    embedding: Annotated[str | None, typer.Option(help="The output that is the embedding (default: the only "
                                                       "one).")] = None,
    inputs: Annotated[str | None, typer.Option(help="TensorFlow: NAME:SHAPE of the input, e.g. "
                                                    "input_x:-1,28,28,1 (-1: any batch).")] = None,
    outputs: Annotated[str | None, typer.Option(help="TensorFlow: output nodes, e.g. output:0. ONNX: roles, "
                                                     "e.g. mu:mu,sigma_sq:sigma_sq.")] = None,
    trust_pickle: Annotated[bool, typer.Option(help="PyTorch: allow a full pickle load, which can run code "
                                                    "from the file (only for files you trust).")] = False,
) -> None:
    """Bring a face model in: read what the graph says, take the rest from the flags, run it once to prove the
    card, and write OUT with its model card (a missing fact is one error naming the flag)."""
    from faceembed.convert import import_model
    from faceembed.convert.onnx_model import parse_size
    from faceembed.data.templates import TEMPLATE_NAMES
    from faceembed.models import MODELS

    check_choices(("layout", layout, ("NCHW", "NHWC")), ("color", color, ("RGB", "BGR", "GRAY")),
                  ("template", template, TEMPLATE_NAMES), ("arch", arch if source.suffix.lower() not in
                                                           (".onnx", ".pb") else None, tuple(MODELS)))
    if size is not None:
        try:
            parse_size(size)
        except FaceembedError:
            raise FaceembedError(f"--size must look like 112x96 (height x width), not {size!r}") from None

    print_json(import_model(source, out, arch=arch, trust_pickle=trust_pickle, inputs=inputs, outputs=outputs,
                            layout=layout, color=color, mean=mean, std=std, template=template, size=size,
                            embedding=embedding))


@app.command(rich_help_panel=PANEL)
def card(
    model: Annotated[str, typer.Argument(help="A model: a name (faceembed models), .onnx or faceembed checkpoint "
                                             "(.pt).")],
) -> None:
    """Print a model's card: input, layout, colour, normalisation, alignment, batch, outputs, thresholds (for a
    built-in model, whether they are the shipped ones or the user's calibration)."""
    from faceembed.models.card_io import model_card_report

    print_json(model_card_report(model))


@app.command(rich_help_panel=PANEL)
def models() -> None:
    """List the built-in models (what, input, licence, where the weights come from, LFW accuracy measured here)
    and the models imported into the cache by name."""
    from faceembed.models.registry import list_models
    from faceembed.models.user_calibration import calibration_of

    listed = list_models()
    for entry in listed["builtin"]:
        entry["calibration"] = calibration_of(entry["name"])
    print_json(listed)


@app.command(rich_help_panel=PANEL)
def calibrate(
    model: Annotated[str, typer.Option(help="Model file or name (e.g. dlib-resnet).")],
    data: Annotated[Path, typer.Option(help="The LFW folder (images/, pairs.txt).")] = Path("../shared/data/lfw"),
    pairs: Annotated[Path | None, typer.Option(help="Pairs file whose images are used (DATA/pairs.txt).")] = None,
    landmarks: Annotated[Path | None, typer.Option(help="Landmark file (default DATA/lfw_landmark.txt).")] = None,
    far: Annotated[str, typer.Option(help="Comma-separated false-accept rates.")] = "1e-2,1e-3,1e-4",
    write: Annotated[bool, typer.Option(help="Store the thresholds in the model's card (a built-in model: as the "
                                             "user's calibration, kept apart from the shipped card).")] = True,
    reset: Annotated[bool, typer.Option(help="A built-in model: forget the user's calibration (the shipped "
                                             "thresholds come back); measures nothing.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the measurement as JSON.")] = None,
    progress: Progress = True,
) -> None:
    """Measure the similarity threshold at each false-accept rate (and the accuracy-optimal one) on LFW and write
    them, with the protocol, into the model's card."""
    from faceembed.faces.calibrate import calibrate_model, reset_calibration
    from faceembed.files import write_json

    if reset:
        print_json(reset_calibration(model))
        return

    try:
        fars = tuple(float(v) for v in far.split(","))
    except ValueError:
        fars = ()
    if not fars or not all(0 < f < 1 for f in fars):
        raise FaceembedError(f"--far takes comma-separated rates between 0 and 1 (e.g. 1e-3), not {far!r}")
    result = calibrate_model(model, data, pairs, landmarks, fars, write, progress=progress)
    if json_out:
        write_json(json_out, result)
    print_json({k: result[k] for k in ("model", "written", "at_far", "best_accuracy", "ten_fold_accuracy",
                                       "genuine_pairs", "impostor_pairs")})
