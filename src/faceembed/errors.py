"""Typed errors. The CLI prints a FaceembedError as one line and exits 2 (bad input) or 1 (internal)."""

from __future__ import annotations

from pathlib import Path


class FaceembedError(Exception):
    """Base class of every error faceembed raises on purpose.

    ``exit_code`` is 2 for bad user input and 1 for internal failures.
    """

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None, position: str | None = None):
        self.message = message
        self.path = Path(path) if path is not None else None
        self.position = position
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """``file:position: message`` with the parts that are known."""
        where = ""
        if self.path is not None:
            where = str(self.path)
            if self.position:
                where += f":{self.position}"
            where += ": "
        return f"{where}{self.message}"


class InputFormatError(FaceembedError):
    """A file exists but its contents are not what its format says (bad magic, truncated, malformed line)."""


class MissingInputError(FaceembedError):
    """A file or folder the command needs does not exist."""


class ShapeMismatchError(FaceembedError):
    """A tensor's shape or dtype does not match what the model or format expects."""


class CheckpointError(FaceembedError):
    """A checkpoint cannot be loaded: wrong format, another model, or missing tensors."""


class NonFiniteError(FaceembedError):
    """NaN or Inf found in model outputs or features."""


class ParityError(FaceembedError):
    """An exported model disagrees with PyTorch beyond the tolerance."""

    exit_code = 1


class BackendUnavailableError(FaceembedError):
    """A requested backend or execution provider is not installed on this machine."""


class NoFaceError(InputFormatError):
    """A photo in which no face was found."""


class NoThresholdsError(FaceembedError):
    """A model whose card holds no calibrated thresholds was asked for a same / different decision."""


class LowQualityError(FaceembedError):
    """A face whose quality (PFE uncertainty, see :mod:`faceembed.faces.quality`) is below the ``min_quality``
    asked for; ``quality`` holds it."""

    def __init__(self, message: str, path: str | Path | None = None, quality: float | None = None):
        self.quality = quality
        super().__init__(message, path)
