"""Model commands: the built-in models, bring any face model in with its card (import), show a card, calibrate
its thresholds at a false-accept rate, compare two photos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faceembed.cli._app import Detector, Progress, app, check_choices, print_json
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
    model: Annotated[Path, typer.Argument(help="A model: .onnx or faceembed checkpoint (.pt).")],
) -> None:
    """Print a model's card: input, layout, colour, normalisation, alignment, batch, outputs, thresholds."""
    from faceembed.models.card_io import read_card

    print_json(read_card(model).to_dict())


@app.command(rich_help_panel=PANEL)
def models() -> None:
    """List the built-in models (what, input, licence, where the weights come from, LFW accuracy measured here)
    and the models imported into the cache by name."""
    from faceembed.models.registry import list_models

    print_json(list_models())


@app.command(rich_help_panel=PANEL)
def calibrate(
    model: Annotated[Path, typer.Option(help="Model file or name (e.g. dlib-resnet).")],
    data: Annotated[Path, typer.Option(help="The LFW folder (images/, pairs.txt).")] = Path("../shared/data/lfw"),
    pairs: Annotated[Path | None, typer.Option(help="Pairs file whose images are used (DATA/pairs.txt).")] = None,
    landmarks: Annotated[Path | None, typer.Option(help="Landmark file (default DATA/lfw_landmark.txt).")] = None,
    far: Annotated[str, typer.Option(help="Comma-separated false-accept rates.")] = "1e-2,1e-3,1e-4",
    write: Annotated[bool, typer.Option(help="Store the thresholds in the model's card.")] = True,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the measurement as JSON.")] = None,
    progress: Progress = True,
) -> None:
    """Measure the similarity threshold at each false-accept rate (and the accuracy-optimal one) on LFW and write
    them, with the protocol, into the model's card."""
    from faceembed.faces.calibrate import calibrate_model
    from faceembed.files import write_json

    try:
        fars = tuple(float(v) for v in far.split(","))
    except ValueError:
        fars = ()
    if not fars or not all(0 < f < 1 for f in fars):
        raise FaceembedError(f"--far takes comma-separated rates between 0 and 1 (e.g. 1e-3), not {far!r}")
    result = calibrate_model(model, data, pairs, landmarks, fars, write, progress=progress)
    if json_out:
        write_json(json_out, result)
    print_json({k: result[k] for k in ("model", "at_far", "best_accuracy", "ten_fold_accuracy", "genuine_pairs",
                                       "impostor_pairs")})


@app.command(rich_help_panel=PANEL)
def compare(
    first: Annotated[Path, typer.Argument(help="A photo (any image format).")],
    second: Annotated[Path, typer.Argument(help="Another photo.")],
    model: Annotated[str, typer.Option(help="Model file or name.")] = "dlib-resnet",
    far: Annotated[float, typer.Option(help="False-accept rate of the threshold (from the model's card).")] = 1e-3,
    detector: Detector = "mtcnn",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")] = None,
) -> None:
    """Are the faces in two photos the same person? Similarity, the threshold at --far, same or different."""
    from faceembed.faces.analyzer import FaceAnalyzer
    from faceembed.files import write_json

    check_choices(("detector", detector, ("mtcnn", "none")))
    if not 0 < far < 1:
        raise FaceembedError(f"--far must be a rate between 0 and 1 (e.g. 1e-3), not {far}")
    analyzer = FaceAnalyzer(model, detector=detector)
    match = analyzer.compare(first, second, far)
    for note in match.notes:
        typer.echo(f"faceembed: note: {note}", err=True)
    typer.echo(f"{'same' if match.same else 'different'}: similarity {match.score:.4f}, threshold {match.threshold:.4f}"
               f" at FAR {far:g} ({analyzer.card.name or Path(model).name}, {analyzer.card.thresholds.dataset})")
    if match.uncertainty is not None:  # PFE models: each face's uncertainty, and quality where the card has u_ref
        u = f"uncertainty {', '.join(f'{v:.4g}' for v in match.uncertainty)}"
        if None in match.quality:
            typer.echo(f"faces: {u} (the card has no quality reference)")
        else:
            typer.echo(f"faces: quality {', '.join(f'{v:.2f}' for v in match.quality)}; {u}")
    if json_out:
        write_json(json_out, {"first": str(first), "second": str(second), "model": str(model), **match.to_dict()})
