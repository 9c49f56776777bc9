"""README's main job (examples/quickstart.py): one bundle, exported once, serves videos of two sizes."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from conftest import REPO, model_dir, real_model
from facecrop.runtime.tubes import DROP_REASONS
from test_runtime import make_video


@pytest.fixture
def quickstart(monkeypatch):
    real_model("det_500m")
    monkeypatch.setenv("FACECROP_MODEL_DIR", str(model_dir()))
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    sys.modules.pop("quickstart", None)
    import quickstart

    return quickstart


def test_one_bundle_serves_two_video_sizes(quickstart, tmp_path, photo_frames, capsys):
    first = make_video(tmp_path / "wide.mp4", photo_frames[:6])  # 640x360
    second = make_video(tmp_path / "tall.mp4", np.ascontiguousarray(photo_frames[6:12, :, 100:388]))  # 288x360
    out = tmp_path / "out"
    assert quickstart.main([str(first), "--out", str(out)]) == 0
    manifest = (out / "bundles" / "quickstart" / "1.0.0" / "manifest.json").stat().st_mtime_ns
    with np.load(out / "results.npz", allow_pickle=False) as r:
        assert len(r["frame_index"]) == 6 and r["valid"].sum() >= 5
    capsys.readouterr()
    assert quickstart.main([str(second), "--out", str(out)]) == 0
    assert "[facecrop export]" not in capsys.readouterr().err  # the bundle was not exported again
    assert (out / "bundles" / "quickstart" / "1.0.0" / "manifest.json").stat().st_mtime_ns == manifest
    with np.load(out / "results.npz", allow_pickle=False) as r:
        assert len(r["frame_index"]) == 6 and (r["valid"].sum(1) >= 4).all()  # t1's faces in a portrait cut
        assert r["bbox"][r["valid"]][:, 2].max() <= 288 + 5  # in the tall video's own pixels
    assert (out / "overlay.mp4").stat().st_size > 0
    with np.load(out / "results.npz", allow_pickle=False) as r:
        crops = sorted((out / "results.crops").glob("face_*/tube_*/frame_*.png"))
        assert len(crops) == len(r["tube_frame_index"])  # 6 frames: shorter than a tube (16), so none
        assert (r["tube_drop"][r["valid"]] == DROP_REASONS.index("tube too short")).all()
