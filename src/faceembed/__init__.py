"""faceembed: train, export, run offline and evaluate deep face-embedding models.

The Python API (imported lazily: ``import faceembed`` loads no model and no runtime)::

    import faceembed as fe
    model = fe.load_model("dlib-resnet")            # a built-in name, an imported name, or a model file
    analyzer = fe.FaceAnalyzer(model)               # MTCNN + alignment from the model's card
    faces = analyzer.faces("photo.jpg")             # or a numpy RGB array: box, score, landmarks, embedding
                                                    # (PFE models: sigma_sq, uncertainty, quality)
    match = analyzer.compare("a.jpg", "b.jpg")      # score, threshold, far, same
    gallery = fe.Gallery.from_folder("people/", analyzer)   # add / remove / save / load / search / quality
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "FaceAnalyzer": "faceembed.faces.analyzer",
    "Face": "faceembed.faces.analyzer",
    "Match": "faceembed.faces.analyzer",
    "Gallery": "faceembed.faces.gallery",
    "Collection": "faceembed.faces.collection",
    "FaceModel": "faceembed.faces.embed",
    "ModelCard": "faceembed.models.card",
    "read_card": "faceembed.models.card_io",
    "list_models": "faceembed.models.registry",
    "read_image": "faceembed.data.images",
    "FaceembedError": "faceembed.errors",
    "NoFaceError": "faceembed.errors",
    "NoThresholdsError": "faceembed.errors",
    "LowQualityError": "faceembed.errors",
    "cluster_folder": "faceembed.faces.cluster",
    "cluster_faces": "faceembed.faces.cluster",
    "cluster_into_store": "faceembed.faces.people_store",
    "evaluate_people": "faceembed.faces.cluster_eval",
    "list_people": "faceembed.faces.people_edit",
    "rename_person": "faceembed.faces.people_edit",
    "merge_people": "faceembed.faces.people_edit",
    "split_person": "faceembed.faces.people_edit",
    "not_person": "faceembed.faces.people_edit",
}

__all__ = ["load_model", *_API, "__version__"]


def load_model(model: Any = "dlib-resnet", backend: str | None = None, threads: int | None = None) -> Any:
    """A face model ready to embed aligned faces: a built-in name (``faceembed models``), the name of a model
    imported into the cache, or a model file (``.onnx`` with a card, faceembed ``.pt``). ``backend``: ort
    (default for ``.onnx``), openvino, or torch (default for ``.pt``)."""
    from faceembed.faces.embed import FaceModel

    return FaceModel.load(model, backend, threads)


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'faceembed' has no attribute {name!r}")
