"""``faceembed demo photos --quick``: raw LFW photos -> identities, end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (SHARED / "weights" / "mobilefacenet_casia_112x96.ckpt").is_file()
                       or importlib.util.find_spec("mtcnn") is None,
                       reason="../shared/data (or the mtcnn package) not found: real-data test skipped"),
]


def test_photos_demo_quick(tmp_path, monkeypatch):
    from faceembed.demo import DEMOS

    monkeypatch.setenv("FACEEMBED_CACHE", str(tmp_path / "cache"))
    result = DEMOS["photos"](tmp_path / "run", tmp_path / "r.json", data=SHARED, quick=True, progress=False)
    assert result["photos"] == 120 and result["people"] == 12 and result["failed"] == 0
    assert result["rank1"] >= 0.95 and result["rank5"] >= result["rank1"]
    assert result["photos_per_s"] > 0 and result["numpy_vs_faiss"]["top1_agreement"] == 1.0
    assert json.loads((tmp_path / "r.json").read_text())["rank1"] == result["rank1"]
    assert (tmp_path / "run" / "cmc.png").is_file()
