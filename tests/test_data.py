"""Offline example data: the pictures, the video, its ground truth, VideoLoader.

The ground truth is checked against a real detector (InsightFace's SCRFD on the
real det_500m weights), so "the face is where the ground truth says" is not just
the generator agreeing with itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import real_model
from facecrop.data import (
    example_image_ground_truth,
    example_video_ground_truth,
    get_example_image,
    get_example_video,
)

from facecrop.io import VideoLoader

N_FRAMES = 120


@pytest.fixture(scope="module", autouse=True)
def cache_dir(example_cache):
    return example_cache


@pytest.fixture(scope="module")
def scrfd():
    """InsightFace's own SCRFD (the reference implementation) on det_500m at 640x640."""
    import onnxruntime
    from insightface.model_zoo.scrfd import SCRFD

    onnxruntime.set_default_logger_severity(3)  # its dynamic-shape warnings drown the output
    det = SCRFD(str(real_model("det_500m")))
    det.prepare(-1, input_size=(640, 640), det_thresh=0.5, nms_thresh=0.4)

    def detect(img: torch.Tensor):  # [3, H, W] RGB -> boxes [n, 5], points [n, 5, 2]
        bgr = img.permute(1, 2, 0).to(torch.uint8).numpy()[:, :, ::-1].copy()
        return det.detect(bgr, input_size=(640, 640))

    return detect


@pytest.mark.parametrize("n_faces", [0, 1, 2, 3, 4, 5])
def test_example_video_has_that_many_faces_in_every_frame(n_faces, scrfd):
    loader = get_example_video(n_faces, return_videoloader=True, n_frames=5, batch_size=5)
    assert (loader.n_frames, loader.height, loader.width) == (5, 512, 512)
    frames = next(iter(loader))
    assert [len(scrfd(frame)[0]) for frame in frames] == [n_faces] * 5
    assert not torch.equal(frames[0], frames[2])  # the camera moves
    with pytest.raises(ValueError, match="n_faces"):
        get_example_video(6)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("n_faces", [0, 1, 2, 3, 4, 5])
def test_example_image_has_the_faces_its_ground_truth_says(n_faces, scrfd):
    img = get_example_image(n_faces)
    assert img.shape == (1, 3, 512, 512) and img.dtype == torch.float32
    assert 0 <= img.min() and img.max() <= 255 and img.max() > 200

    gt = example_image_ground_truth(n_faces)
    boxes, points = scrfd(img[0])
    assert len(boxes) == n_faces == gt["bbox"].shape[0]
    for box, pts in zip(boxes, points):
        # each detection is one ground-truth face, with its 5 points in the same order
        k = int(np.argmin(np.linalg.norm(gt["lms"].numpy() - pts, axis=-1).mean(-1)))
        assert _iou(box[:4], gt["bbox"][k].numpy()) > 0.6
        assert np.linalg.norm(gt["lms"][k].numpy() - pts, axis=-1).max() < 6.0


def test_example_image_options(cache_dir):
    (path,) = get_example_image(load=False)  # a list even for one image, as Medusa's
    assert path.suffix == ".png" and path.parent.parent == cache_dir
    mtime = path.stat().st_mtime_ns
    assert get_example_image(load=False) == [path] and path.stat().st_mtime_ns == mtime  # cached
    # As Medusa's: the default image is the example video's first frame (the picture it encodes).
    first = next(iter(get_example_video(n_frames=10, return_videoloader=True, batch_size=1)))
    default = get_example_image()
    assert default.shape == first.shape == (1, 3, 384, 480)
    assert (default - first).abs().mean() < 2.0  # H.264 at high quality: within 2 grey levels on average

    pair = get_example_image([1, 3], dtype=torch.uint8, channels_last=True)
    assert pair.shape == (2, 512, 512, 3) and pair.dtype == torch.uint8
    # one face is the astronaut photo itself (scikit-image's, unchanged)
    from skimage import data

    assert torch.equal(pair[0], torch.from_numpy(data.astronaut()))
    assert get_example_image([0, 2], load=False) == get_example_image(0, load=False) + get_example_image(2, load=False)
    for bad in (-1, 6, 1.5, "2", True):
        with pytest.raises(ValueError, match="n_faces"):
            get_example_image(bad)
    assert not list(cache_dir.rglob(".*")), "temporary files left in the cache"


def test_example_video_file_and_loader(cache_dir):
    path = get_example_video(n_frames=10)
    assert path.is_file() and path.parent.parent == cache_dir
    mtime = path.stat().st_mtime_ns
    loader = get_example_video(n_frames=10, return_videoloader=True, batch_size=4)
    assert loader.path == path and path.stat().st_mtime_ns == mtime  # made once, then reused
    assert (loader.n_frames, loader.fps, loader.height, loader.width, len(loader)) == (10, 24.0, 384, 480, 3)
    batches = list(loader)
    assert [b.shape for b in batches] == [(4, 3, 384, 480)] * 2 + [(2, 3, 384, 480)]
    assert all(b.dtype == torch.float32 for b in batches)  # Medusa's loader yields float32, 0-255
    assert all(torch.equal(b, b.round()) and 0 <= b.min() and b.max() <= 255 for b in batches)
    assert loader.get_metadata() == loader._metadata == {"img_size": (480, 384), "n_img": 10, "fps": 24}
    assert isinstance(loader.get_metadata()["fps"], int)
    # iterating again starts from the first frame
    assert torch.equal(next(iter(loader)), batches[0])
    assert not list(cache_dir.rglob(".*")), "temporary files left in the cache"


def test_video_loader_dataset_types_and_subset():
    path = get_example_video(n_frames=10)
    every = torch.cat(list(VideoLoader(path, batch_size=4)))
    mapped = VideoLoader(path, dataset_type="map", batch_size=4, num_workers=0, pin_memory=False)
    assert torch.equal(torch.cat(list(mapped)), every)
    subset = VideoLoader(path, dataset_type="subset", batch_size=2, frames=[7, 1, 4])
    assert len(subset) == 2 and len(subset.dataset) == 3 and len(mapped.dataset) == 10
    assert torch.equal(torch.cat(list(subset)), every[[1, 4, 7]])  # in video order
    subset.close()
    assert torch.equal(torch.cat(list(subset)), every[[1, 4, 7]])  # close() loses nothing


def test_video_loader_rejects_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError):
        VideoLoader(tmp_path / "missing.mp4")
    path = get_example_video(n_frames=10)
    with pytest.raises(ValueError, match="batch_size"):
        VideoLoader(path, batch_size=0)
    with pytest.raises(ValueError, match="dataset_type"):
        VideoLoader(path, dataset_type="stream")
    with pytest.raises(ValueError, match=r"frames \[10\] are outside the video's 10 frames"):
        VideoLoader(path, dataset_type="subset", frames=[3, 10])
    with pytest.raises(ValueError, match="needs frames="):
        VideoLoader(path, dataset_type="subset")
    with pytest.raises(ValueError, match="dataset_type='subset'"):
        VideoLoader(path, frames=[1])
    with pytest.raises(TypeError, match="unexpected keyword"):
        VideoLoader(path, colour="rgb")
    with pytest.raises(ValueError, match="n_frames"):
        get_example_video(n_frames=1)


def test_video_ground_truth_describes_the_motion():
    gt = example_video_ground_truth(N_FRAMES, second_face=True)
    mat, visible = gt["mat"], gt["visible"]
    assert mat.shape == (N_FRAMES, 2, 3, 3) and gt["lms"].shape == (N_FRAMES, 2, 5, 2)
    # Medusa's example video shows one face: so does the default, the main face alone.
    alone = example_video_ground_truth(N_FRAMES)
    assert alone["mat"].shape == (N_FRAMES, 1, 3, 3) and torch.equal(alone["lms"], gt["lms"][:, :1])
    assert (alone["visible"][:, 0] >= visible[:, 0] - 1e-4).all() and (alone["visible"][:, 0] > 0.9).all()

    # main face: pan (its nose moves right by about 100 px), zoom 1 -> 1.3 -> 1, rotation +-12 deg
    main = mat[:, 0]
    scale = torch.linalg.det(main[:, :2, :2]).sqrt()
    angle = torch.rad2deg(torch.atan2(main[:, 1, 0], main[:, 0, 0]))
    nose_x = gt["lms"][:, 0, 2, 0]
    assert nose_x[-1] - nose_x[0] > 90
    assert scale[0] == pytest.approx(1.0, abs=1e-3) and scale.max() == pytest.approx(1.3, abs=1e-2)
    assert angle.max() == pytest.approx(12.0, abs=0.5) and angle.min() == pytest.approx(-12.0, abs=0.5)
    assert (visible[:, 0] > 0.9).float().mean() > 0.8

    # second face: absent, enters, crosses in front of the main face, leaves, comes back
    second = visible[:, 1] > 0.9
    present = (visible[:, 1] > 0).int()
    changes = present.diff().nonzero().squeeze(1).tolist()
    assert len(changes) == 3, "second face must enter, leave, and enter again"
    crossing = visible[:, 0].argmin()
    assert visible[crossing, 0] < 0.6 and second[crossing]
    assert changes[0] < crossing < changes[1]
    assert second[-1]


@pytest.mark.parametrize("second_face", [False, True])
def test_video_frames_show_the_ground_truth(scrfd, second_face):
    """The decoded frames hold the faces where the ground truth puts them (real detector)."""
    gt = example_video_ground_truth(N_FRAMES, second_face=second_face)
    frames = torch.cat(list(get_example_video(n_frames=N_FRAMES, return_videoloader=True, batch_size=32,
                                              second_face=second_face)))
    assert frames.shape == (N_FRAMES, 3, 384, 480)
    errors, checked = [], 0
    for i in range(0, N_FRAMES, 2):
        if gt["visible"][i, 0] < 0.95:
            continue  # the crossing: overlapping faces are the tracking tests' business
        _, points = scrfd(frames[i])
        if not second_face:
            assert len(points) == 1, (i, len(points))  # one face in every frame, as in Medusa's video
        for k in range(gt["lms"].shape[1]):
            if gt["visible"][i, k] < 0.95:
                continue  # cut off by the frame edge: the detector's points are not a fair test
            checked += 1
            dists = np.linalg.norm(points - gt["lms"][i, k].numpy(), axis=-1).mean(-1) if len(points) else [math.inf]
            errors.append(float(np.min(dists)))
    assert checked > (60 if second_face else 50), checked  # of the 60 frames looked at
    errors = np.array(errors)
    # every fully visible face is detected, its 5 points on average within a few pixels
    assert errors.max() < 8.0, errors.max()
    assert np.median(errors) < 3.0, np.median(errors)
