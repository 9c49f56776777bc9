"""One bundle per backend, every video shape, against InsightFace 0.7.3 frame by frame.

Each backend's bundle (det_500m at 224, aligned crop 112) is exported once, with no
frame size, and runs ``process_video`` on real-photo videos of six shapes (square,
portrait, odd ratios, odd sides, 720p, 1080p) and on Medusa's real videos (people
moving, talking, blur, compression, 0-3 people), 8 frames sampled across each, as stored
and cut or scaled to portrait and odd sizes. The reference is InsightFace's own
``SCRFD.detect`` + ``norm_crop`` on the same decoded frames.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from benchmarks.video_parity import SHAPES, compare, insightface_reference, make_video
from conftest import real_media, real_model
from facecrop import bundle as fb
from facecrop.pipeline import build_pipeline
from facecrop.pipeline_config import PipelineConfig
from facecrop.runtime import load_bundle, process_video

FRAMES = 6
REAL_FRAMES = 8
# name: (Medusa's video, what is done to its frames)
REAL_CLIPS = {"medusa 0 480x480": ("0.mp4", None), "medusa 1 720x720": ("1.mp4", None),
              "medusa 2 642x378": ("2.mp4", None), "medusa 3 720x720": ("3.mp4", None),
              "medusa example 480x384": ("example_vid.mp4", None),
              "medusa 2 left part, portrait 284x378": ("2.mp4", ("cut", 0, 284)),
              "medusa 1 middle, portrait 404x720": ("1.mp4", ("cut", 158, 404)),
              "medusa 3 scaled to odd 333x331": ("3.mp4", ("scale", 333, 331))}


def real_clip(name: str, change, path) -> Path:
    """``REAL_FRAMES`` frames spread over Medusa's video ``name``, changed, stored losslessly (ffv1)."""
    with av.open(str(real_media(name))) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    picked = [frames[i] for i in np.linspace(0, len(frames) - 1, REAL_FRAMES).round().astype(int)]
    if change and change[0] == "cut":  # columns left .. left + width: a portrait frame, faces upright
        left, width = change[1:]
        picked = [np.ascontiguousarray(f[:, left:left + width]) for f in picked]
    elif change:
        picked = [np.asarray(Image.fromarray(f).resize(change[1:], Image.BILINEAR)) for f in picked]
    height, width = picked[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        for rgb in picked:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """``{shape name: (video path, InsightFace reference)}``."""
    folder = tmp_path_factory.mktemp("parity")
    model = real_model("det_500m")
    out = {}
    for seed, (name, size) in enumerate(SHAPES.items()):
        video = make_video(folder / name.replace(" ", "_"), size, FRAMES, seed=seed)
        out[name] = (video, insightface_reference(video, model))
    for name, (source, change) in REAL_CLIPS.items():
        video = real_clip(source, change, folder / f"{name.replace(' ', '_')}.mkv")
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
    assert sum(r["matched"] for r in rows.values()) >= 100, rows
    assert sum(rows[name]["matched"] for name in REAL_CLIPS) >= 40, rows  # real faces, not only photos
    for name, r in rows.items():
        assert r["box_p99"] <= 1.0 and r["box_max"] <= 5.0, (name, r)
        assert r["crop_mad"] <= 1.0 or not r["matched"], (name, r)
    if backend == "aoti":
        # On a CPU with 2 cores or more two batches run at once (runtime/aoti.py, calls.py) ...
        assert bundle.parallel == (2 if os.cpu_count() >= 2 else 1)
        bundle.parallel = 1  # ... and give what one batch at a time gives
        for name in ("medusa 2 642x378", "1080p"):
            video = videos[name][0]
            serial = process_video(bundle, video, tmp_path / f"{video.stem}.serial.npz", batch_size=4,
                                   save_crops=True, progress=False)
            with np.load(serial) as one, np.load(tmp_path / f"{video.stem}.npz") as two:
                assert_same_results(one, two)


def assert_same_results(one, two) -> None:
    """Two runs' results files: ids, masks and frame data exactly; floats within float32 rounding (the
    two runs may split a sum over a different number of threads on a CPU with more than 2 cores)."""
    assert sorted(one.files) == sorted(two.files)
    tolerance = {"conf": 1e-5, "bbox": 1e-3, "lms": 1e-3, "crop_mat": 1e-4, "imgs_crop": 1}
    for key in one.files:
        if key in tolerance:
            np.testing.assert_allclose(one[key].astype(np.float64), two[key].astype(np.float64), rtol=0,
                                       atol=tolerance[key], err_msg=key)
        else:
            np.testing.assert_array_equal(one[key], two[key], err_msg=key)


def test_no_face_frames_agree(videos):
    # Frame 3 of every video is the blurred background: neither pipeline finds a face there.
    for name, (_, ref) in videos.items():
        if name in REAL_CLIPS:
            assert name != "medusa 0 480x480" or not any(len(b) for b in ref.boxes)  # the video with no face
            continue
        assert len(ref.boxes[3]) == 0, name
        assert all(len(b) >= 1 for i, b in enumerate(ref.boxes) if i != 3), name
