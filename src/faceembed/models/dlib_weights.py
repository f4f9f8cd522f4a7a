"""Read dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as data and convert it
into a faceembed checkpoint (arch ``"dlib_resnet"``, see :mod:`faceembed.models.dlib_resnet`). dlib is never
imported: the ``.dat`` file is parsed here byte by byte.

The file is shipped by the ``face_recognition_models`` PyPI package (dlib's models, public domain / CC0); its
folder is found with ``importlib.util.find_spec`` without importing the package (whose ``__init__`` needs
``pkg_resources``).

The file format is read by :mod:`faceembed.models.dlib_format`. The converted checkpoint is cached
(``$FACEEMBED_CACHE`` or ``~/.cache/faceembed``, file ``dlib_resnet.pt``) and made on first use by
:func:`dlib_resnet_checkpoint`. Its input spec is ``mean=0, scale=256`` (the pixels divided by 256, as dlib does);
the per-channel mean, which the scalar ``InputSpec.mean`` cannot hold, is the model's fixed ``input_mean`` buffer
(``avg / 256``, subtracted first in ``forward``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faceembed.errors import CheckpointError, MissingInputError
from faceembed.files import cache_dir
from faceembed.models.card import ModelCard
from faceembed.models.checkpoint import InputSpec, read_header, save_checkpoint
from faceembed.models.dlib_format import DlibNet, parse_dlib_net
from faceembed.models.user_calibration import with_user_calibration

if TYPE_CHECKING:  # torch and the module only where weights are converted: a cached checkpoint's path needs neither
    import torch

    from faceembed.models.dlib_resnet import DlibResNet

DLIB_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
#: Input spec of the converted model: pixels / 256; the per-channel mean is the model's ``input_mean`` buffer.
DLIB_RESNET_INPUT = InputSpec(150, 150, 3, mean=0.0, scale=256.0, color="RGB", input_name="input",
                              output_names=("embedding",))


# ---- conversion ---------------------------------------------------------------------------------------

def state_dict_from_dlib(net: DlibNet, path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The parsed network's weights as the state dict of :class:`DlibResNet`, after checking that every
    layer's type and hyper-parameters are the ones the module implements (:func:`dlib_layer_plan`)."""
    import torch

    from faceembed.models.dlib_resnet import dlib_layer_plan

    plan = dlib_layer_plan()
    kinds = [layer.kind for layer in net.layers]
    expected = [p[0] for p in plan]
    if kinds != expected:
        first = next((i for i, (a, b) in enumerate(zip(kinds, expected, strict=False)) if a != b),
                     min(len(kinds), len(expected)))
        raise CheckpointError(f"dlib network is not dlib_face_recognition_resnet_model_v1: layer {first} is "
                              f"{kinds[first] if first < len(kinds) else 'missing'}, expected "
                              f"{expected[first] if first < len(expected) else 'nothing'} "
                              f"({len(kinds)} layers, expected {len(expected)})", path)
    if net.input.get("nr", 150) != 150 or net.input.get("nc", 150) != 150:
        raise CheckpointError(f"dlib input is {net.input.get('nr')}x{net.input.get('nc')}, expected 150x150", path)
    state: dict[str, torch.Tensor] = {
        "input_mean": torch.tensor(net.input["avg_rgb"], dtype=torch.float32).reshape(1, 3, 1, 1) / 256.0
    }
    for i, (layer, (kind, name, hyper)) in enumerate(zip(net.layers, plan, strict=True)):
        for key, want in hyper.items():
            if layer.info.get(key) != want:
                raise CheckpointError(f"dlib layer {i} ({layer.version}): {key}={layer.info.get(key)!r}, "
                                      f"expected {want!r}", path)
        if kind == "con":
            state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(layer.arrays["weight"]))
            state[f"{name}.bias"] = torch.from_numpy(layer.arrays["bias"].reshape(-1))
        elif kind == "affine":
            state[f"{name}.weight"] = torch.from_numpy(layer.arrays["gamma"].reshape(-1))
            state[f"{name}.bias"] = torch.from_numpy(layer.arrays["beta"].reshape(-1))
        elif kind == "fc":
            state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(layer.arrays["weight"].T))
    return state


def face_recognition_models_dir() -> Path:
    """The ``models`` folder of the installed ``face_recognition_models`` package (located without
    importing it)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingInputError("the 'face_recognition_models' package (dlib's models) is not installed: "
                                "pip install face_recognition_models")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    if not folder.is_dir():
        raise MissingInputError("the 'face_recognition_models' package has no models folder", folder)
    return folder


def dlib_model_path(name: str = DLIB_MODEL_FILE) -> Path:
    """Path of one of dlib's model files in ``face_recognition_models`` (must exist)."""
    path = face_recognition_models_dir() / name
    if not path.is_file():
        raise MissingInputError("dlib model file not found", path)
    return path


def load_dlib_resnet(path: str | Path | None = None) -> tuple[DlibResNet, DlibNet]:
    """Parse the ``.dat`` file at ``path`` (default: the package's) into an eval-mode :class:`DlibResNet`."""
    from faceembed.models.dlib_resnet import DlibResNet

    path = Path(path) if path is not None else dlib_model_path()
    if not path.is_file():
        raise MissingInputError("dlib model file not found", path)
    net = parse_dlib_net(path.read_bytes(), path)
    model = DlibResNet()
    try:
        model.load_state_dict(state_dict_from_dlib(net, path), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"dlib weights do not fit: {str(exc).splitlines()[0]}", path) from None
    return model.eval(), net


#: Thresholds shipped with the built-in model, measured here with ``faceembed calibrate --model dlib-resnet
#: --no-write`` on LFW (README): cosine at FAR 1e-2 / 1e-3 / 1e-4 over the 29.6M impostor pairs among the 7,701
#: images of pairs.txt, and the accuracy-optimal threshold over its 6,000 pairs.
DLIB_LFW_THRESHOLDS: dict | None = {
    "metric": "cosine", "dataset": "LFW (pairs.txt)",
    "protocol": ("cosine; 7701 images of pairs.txt aligned from lfw_landmark.txt onto the 'dlib' template; FAR over "
                 "all 29640749 impostor pairs among them (8101 genuine); best_accuracy over the file's 6000 pairs"),
    "far": {"0.01": 0.9070947766304017, "0.001": 0.9260544180870057, "0.0001": 0.9410667419433595},
    "best_accuracy": 0.9048213362693787, "accuracy": 0.9908333333333333,
}


def dlib_card(source: str | None = DLIB_MODEL_FILE) -> ModelCard:
    """The built-in model's card: 150x150 RGB NHWC, pixels / 256 (the per-channel mean is inside the model),
    dlib's chip template, cosine similarity, and the thresholds measured on LFW."""
    from faceembed.models.card import OutputSpec, Thresholds

    thresholds = Thresholds(**DLIB_LFW_THRESHOLDS) if DLIB_LFW_THRESHOLDS else None
    return ModelCard("input", "NHWC", 150, 150, "RGB", (0.0,), (256.0,), "dlib", None,
                     (OutputSpec("embedding", "embedding"),), 128, "cosine", thresholds, "dlib_resnet",
                     "dlib-resnet", source)


def convert_dlib_resnet(out: str | Path, source: str | Path | None = None) -> Path:
    """Convert dlib's ``.dat`` (default: the ``face_recognition_models`` copy) into a faceembed checkpoint at
    ``out`` (atomic) and return it. ``extra`` records the source file's sha256 and the loss parameters."""
    source = Path(source) if source is not None else dlib_model_path()
    model, net = load_dlib_resnet(source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    save_checkpoint(out, "dlib_resnet", {}, model, DLIB_RESNET_INPUT, extra={
        "source": f"dlib {source.name} (face_recognition_models PyPI package; dlib models, public domain/CC0)",
        "source_sha256": digest,
        "dlib_input_avg_rgb": [float(v) for v in net.input["avg_rgb"]],
        "dlib_loss": {k: (float(v) if isinstance(v, float) else v) for k, v in net.loss.items()},
        "embedding_normalised": False,
        "metric": "euclidean distance < 0.6 means same person (dlib); cosine also works",
        "card": dlib_card().to_dict(),
    })
    return Path(out)


def dlib_resnet_checkpoint(path: str | Path | None = None) -> Path:
    """Path of a converted dlib ResNet checkpoint: ``path`` if given (must exist), else the cached one,
    converted from ``face_recognition_models`` on first use; its card is the shipped one with the user's
    calibration (:mod:`faceembed.models.user_calibration`) when there is one."""
    if path is not None:
        read_header(path)  # a valid checkpoint (torch-free once read: see read_header)
        return Path(path)
    target = cache_dir() / "dlib_resnet.pt"
    if target.is_file():
        try:
            payload = read_header(target)
        except CheckpointError:
            payload = None  # a corrupt cache entry is rebuilt
        if payload is not None and payload.get("arch") == "dlib_resnet":
            want = with_user_calibration("dlib-resnet", dlib_card())
            # a newer card, or a calibration made or reset (the header holds JSON values: compare like with like)
            if payload["extra"].get("card") != json.loads(json.dumps(want.to_dict())):
                from faceembed.models.card_io import write_card

                write_card(target, want)
            return target
    convert_dlib_resnet(target)
    return dlib_resnet_checkpoint()  # the user's calibration, if any, written into the new checkpoint's card


