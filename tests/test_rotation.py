"""Phone videos: frames stored sideways with a display rotation are processed upright, as players show them.

Real video (12 frames spread over Medusa's ``2.mp4``, two people) is stored upright and, the same
pictures turned, with each display rotation, losslessly (x264 at qp 0 in yuv444p: every file decodes
to the same pixels once turned). The rotated files must give the upright file's results exactly, and
InsightFace's on the upright frames.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from benchmarks.video_parity import compare, insightface_reference
from conftest import real_media, real_model
from facecrop.io import VideoLoader
from facecrop.overlay import write_overlay
from facecrop.runtime import process_video
from test_runtime import npz

ROTATIONS = [90, 180, -90]  # as PyAV reports them: degrees counterclockwise, in [-180, 180]


def store(path, frames: np.ndarray, rotation: int = 0):
    """Encode RGB ``frames [n, H, W, 3]`` losslessly, displayed turned ``rotation`` degrees counterclockwise."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        if rotation:
            stream.set_display_rotation(rotation)
        for img in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """``{rotation: video}``: the upright clip (0) and the same pictures stored sideways or upside down."""
    folder = tmp_path_factory.mktemp("rotation")
    with av.open(str(real_media("2.mp4"))) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    upright = np.stack([frames[i] for i in np.linspace(0, len(frames) - 1, 12).round().astype(int)])
    out = {0: store(folder / "upright.mp4", upright)}
    for rotation in ROTATIONS:
        # Stored turned clockwise by ``rotation``: the display rotation turns it back.
        stored = np.rot90(upright, -rotation // 90, axes=(1, 2))
        out[rotation] = store(folder / f"stored_{rotation}.mp4", stored, rotation)
    return out


def test_clips_are_stored_sideways(clips):
    for rotation, video in clips.items():
        with av.open(str(video)) as container:
            frame = next(container.decode(video=0))
        assert frame.rotation == (rotation if rotation != 180 else -180)
        assert (frame.width, frame.height) == ((378, 642) if rotation in (90, -90) else (642, 378))


@pytest.mark.parametrize("rotation", ROTATIONS)
def test_rotated_video_gives_the_upright_results(bundle, clips, rotation, tmp_path):
    want = npz(process_video(bundle, clips[0], tmp_path / "upright.npz", progress=False, save_crops=True))
    got = npz(process_video(bundle, clips[rotation], tmp_path / "rotated.npz", progress=False, save_crops=True))
    assert (want["rotation"] == 0).all() and (got["rotation"] == rotation % 360).all()
    assert want["valid"].sum() >= 20  # two people in (nearly) every frame
    for name in ("valid", "conf", "bbox", "lms", "crop_mat", "imgs_crop", "face_idx"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_rotated_video_matches_insightface_on_upright_frames(bundle, clips, tmp_path):
    reference = insightface_reference(clips[0], real_model("det_500m"))
    got = npz(process_video(bundle, clips[90], tmp_path / "r.npz", progress=False, save_crops=True))
    row = compare(got, reference)
    assert row["count_agree"] == 1.0 and row["matched"] >= 20, row
    assert row["box_max"] <= 0.1 and row["crop_mad"] <= 0.5, row


def test_loader_and_overlay_show_rotated_video_upright(bundle, clips, tmp_path):
    upright, rotated = VideoLoader(clips[0], batch_size=12), VideoLoader(clips[-90], batch_size=12)
    assert rotated.get_metadata() == upright.get_metadata()
    assert torch.equal(torch.cat(list(rotated)), torch.cat(list(upright)))
    results = process_video(bundle, clips[-90], tmp_path / "r.npz", progress=False)
    with av.open(str(write_overlay(clips[-90], results, tmp_path / "overlay.mp4"))) as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (642, 378)  # drawn on the upright frames
