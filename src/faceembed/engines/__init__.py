"""Engines that run faceembed's jobs: ``local`` (processes on this machine) or ``ray`` (Ray Data, a local
instance or a cluster). Every job takes the same options dataclass on either engine
(:class:`~faceembed.batch.infer.InferOptions`, :class:`~faceembed.faces.align_files.AlignOptions`,
:class:`~faceembed.faces.embed.EmbedOptions`); :class:`Engine` is the one place that picks the implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.errors import FaceembedError

ENGINES = ("local", "ray")


def check_engine(engine: str, address: str | None = None, num_workers: int | None = None) -> None:
    """Refuse an unknown ``--engine`` and Ray-only options given to the local engine."""
    if engine not in ENGINES:
        raise FaceembedError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "local" and (address is not None or num_workers is not None):
        raise FaceembedError("--address and --num-workers need --engine ray")
    if num_workers is not None and num_workers < 1:
        raise FaceembedError(f"--num-workers must be >= 1, not {num_workers}")


@dataclass(frozen=True)
class Engine:
    """Where a job runs: ``name`` local | ray; for Ray, the cluster ``address`` (default: a local instance)
    and ``num_workers`` (default: one per CPU)."""

    name: str = "local"
    address: str | None = None
    num_workers: int | None = None

    def __post_init__(self) -> None:
        check_engine(self.name, self.address, self.num_workers)

    @property
    def is_ray(self) -> bool:
        return self.name == "ray"

    def infer(self, model: str | Path, inputs: str | Path, output_dir: str | Path, **options: Any) -> Any:
        """``infer`` over tensor files (:class:`~faceembed.batch.infer.InferOptions` fields)."""
        if self.is_ray:
            from faceembed.engines.ray.infer import infer_files_ray

            return infer_files_ray(model, inputs, output_dir, self.address, self.num_workers, **options)
        from faceembed.batch.infer import infer_files

        return infer_files(model, inputs, output_dir, **options)

    def align(self, image_root: str | Path, landmarks: dict[str, np.ndarray], relpaths: list[str],
              out_dir: str | Path, workers: int | None = None, landmarks_source: dict | None = None,
              **options: Any) -> Any:
        """``align`` of photos onto a template (:class:`~faceembed.faces.align_files.AlignOptions` fields)."""
        if self.is_ray:
            from faceembed.engines.ray.align import align_dataset_ray

            return align_dataset_ray(image_root, landmarks, relpaths, out_dir, self.num_workers or workers,
                                     self.address, landmarks_source, **options)
        from faceembed.faces.align_files import align_dataset

        return align_dataset(image_root, landmarks, relpaths, out_dir, workers, landmarks_source, **options)

    def embed(self, root: str | Path | None, relpaths: list[str], model: Any,
              landmarks: dict[str, np.ndarray] | None = None, workers: int | None = None, **options: Any) -> Any:
        """Detect, align and embed photos (:class:`~faceembed.faces.embed.EmbedOptions` fields); ``model``: a
        name, a file, or (local engine) a loaded :class:`~faceembed.faces.embed.FaceModel`."""
        from faceembed.faces.embed import FaceModel, embed_images

        if self.is_ray:
            from faceembed.engines.ray.embed import embed_images_ray

            path = model.path if isinstance(model, FaceModel) else model
            return embed_images_ray(root, relpaths, path, landmarks, self.num_workers, self.address, **options)
        loaded = model if isinstance(model, FaceModel) else FaceModel.load(model)
        return embed_images(root, relpaths, loaded, landmarks, workers, **options)


LOCAL = Engine()
