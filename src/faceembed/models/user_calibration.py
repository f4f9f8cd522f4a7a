"""User calibrations of built-in models: ``faceembed calibrate --model dlib-resnet`` measures thresholds on the
user's data; they are kept apart from the shipped card, in ``CACHE/calibrations/NAME.json`` (the thresholds as
the card holds them), applied whenever the built-in's checkpoint is made or looked up, shown by
``faceembed card NAME`` and removed by ``faceembed calibrate --model NAME --reset`` (the shipped thresholds
come back)."""

from __future__ import annotations

import json
from pathlib import Path

from faceembed.errors import InputFormatError
from faceembed.files import cache_dir, write_json
from faceembed.models.card import ModelCard, Thresholds


def calibration_path(name: str) -> Path:
    """Where the user's calibration of built-in model ``name`` is kept."""
    return cache_dir() / "calibrations" / f"{name}.json"


def read_user_thresholds(name: str) -> Thresholds | None:
    """The user's thresholds for built-in ``name``, or None when it has none."""
    path = calibration_path(name)
    if not path.is_file():
        return None
    try:
        return Thresholds(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise InputFormatError(f"not a calibration file ({exc}); remove it with 'faceembed calibrate --model "
                               f"{name} --reset'", path) from None


def write_user_thresholds(name: str, thresholds: Thresholds) -> Path:
    """Keep ``thresholds`` as the user's calibration of built-in ``name`` (atomically); returns the file."""
    path = calibration_path(name)
    write_json(path, dict(vars(thresholds)))
    return path


def remove_user_thresholds(name: str) -> bool:
    """Forget the user's calibration of ``name``; True when there was one."""
    path = calibration_path(name)
    if path.is_file():
        path.unlink()
        return True
    return False


def with_user_calibration(name: str, shipped: ModelCard) -> ModelCard:
    """The card built-in ``name`` runs with: ``shipped`` with the user's thresholds when there are some."""
    user = read_user_thresholds(name)
    return shipped if user is None else shipped.replace(thresholds=user)


def calibration_of(name: str) -> str:
    """``"shipped"``, or the file of the user's calibration of built-in ``name``."""
    path = calibration_path(name)
    return str(path) if path.is_file() else "shipped"
