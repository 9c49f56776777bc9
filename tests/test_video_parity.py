"""One bundle per backend, every video shape, against InsightFace 0.7.3 frame by frame.

Each backend's bundle (det_500m at 224, aligned crop 112) is exported once, with no
frame size, and runs ``process_video`` on real-photo videos of six shapes (square,
portrait, odd ratios, odd sides, 720p, 1080p). The reference is InsightFace's own
``SCRFD.detect`` + ``norm_crop`` on the same decoded frames.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.video_parity import SHAPES, compare, insightface_reference, make_video
from conftest import real_model
from facecrop import bundle as fb
from facecrop.pipeline import build_pipeline
from facecrop.pipeline_config import PipelineConfig
from facecrop.runtime import load_bundle, process_video

FRAMES = 6


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """``{shape name: (video path, InsightFace reference)}``."""
    folder = tmp_path_factory.mktemp("parity")
    model = real_model("det_500m")
    out = {}
    for seed, (name, size) in enumerate(SHAPES.items()):
        video = make_video(folder / name.replace(" ", "_"), size, FRAMES, seed=seed)
        out[name] = (video, insightface_reference(video, model))
    return out


@pytest.mark.parametrize("backend", ["torchscript", "export", pytest.param("aoti", marks=pytest.mark.slow)])
def test_one_bundle_matches_insightface_on_every_shape(backend, videos, tmp_path):
    model = real_model("det_500m")
    config = PipelineConfig(detector=str(model), crop="align", max_faces=8)
    bundle = load_bundle(fb.write_bundle(build_pipeline(config), config, backend=backend, out_root=tmp_path,
                                         source_models={"detector": model}))
    rows = {}
    for name, (video, ref) in videos.items():
        out = process_video(bundle, video, tmp_path / f"{video.stem}.npz", batch_size=4, save_crops=True,
                            progress=False)
        with np.load(out, allow_pickle=False) as data:
            rows[name] = compare({k: data[k] for k in data.files}, ref)
    print(f"\n{backend}: " + "; ".join(f"{n}: {r['matched']} faces, count {r['count_agree']:.0%}, "
                                        f"box p99 {r['box_p99']:.3f} max {r['box_max']:.3f} px, "
                                        f"crop MAD {r['crop_mad']:.3f}" for n, r in rows.items()))
    frames = sum(r["frames"] for r in rows.values())
    agree = sum(r["count_agree"] * r["frames"] for r in rows.values()) / frames
    assert agree >= 0.99, rows
    assert sum(r["matched"] for r in rows.values()) >= 60, rows
    for name, r in rows.items():
        assert r["box_p99"] <= 1.0 and r["box_max"] <= 5.0, (name, r)
        assert r["crop_mad"] <= 1.0, (name, r)


def test_no_face_frames_agree(videos):
    # Frame 3 of every video is the blurred background: neither pipeline finds a face there.
    for name, (_, ref) in videos.items():
        assert len(ref.boxes[3]) == 0, name
        assert all(len(b) >= 1 for i, b in enumerate(ref.boxes) if i != 3), name
