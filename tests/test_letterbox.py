"""The in-graph letterbox against InsightFace's: ``cv2.resize`` (INTER_LINEAR) pasted on a zero canvas.

Real photos at many sizes and aspect ratios (wider, taller, square, odd, up- and downscaled), in
both memory layouts, eager and compiled with symbolic frame sizes.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from facecrop.detect.letterbox import letterbox

DET_SIZE = (224, 224)
SIZES = [(854, 480), (642, 378), (480, 640), (720, 720), (1920, 1080), (100, 37), (17, 300)]  # (width, height)


def insightface_canvas(rgb: np.ndarray, det_size=DET_SIZE) -> tuple[np.ndarray, float]:
    """``SCRFD.detect``'s resize and canvas, verbatim in its arithmetic: uint8 ``[det_h, det_w, 3]`` and the scale."""
    im_ratio = float(rgb.shape[0]) / rgb.shape[1]
    model_ratio = float(det_size[1]) / det_size[0]
    if im_ratio > model_ratio:
        new_height = det_size[1]
        new_width = int(new_height / im_ratio)
    else:
        new_width = det_size[0]
        new_height = int(new_width * im_ratio)
    canvas = np.zeros((det_size[1], det_size[0], 3), dtype=np.uint8)
    canvas[:new_height, :new_width] = cv2.resize(rgb, (max(new_width, 1), max(new_height, 1)))
    return canvas, float(new_height) / rgb.shape[0]


def photo(t1_rgb, size) -> np.ndarray:
    return np.ascontiguousarray(cv2.resize(t1_rgb, size, interpolation=cv2.INTER_AREA))


def as_frames(images: list[np.ndarray], channels_last: bool = True) -> torch.Tensor:
    frames = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return frames if channels_last else frames.contiguous()


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_equals_opencv_on_real_photos(t1_rgb, size):
    rgb = photo(t1_rgb, size)
    want, want_scale = insightface_canvas(rgb)
    canvas, scale = letterbox(as_frames([rgb]), DET_SIZE)
    got = canvas[0].permute(1, 2, 0).numpy()
    diff = np.abs(got.astype(int) - want.astype(int))
    # OpenCV's fixed-point path, emulated: off by one grey level on a few pixels at most.
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())
    assert float(scale) == pytest.approx(want_scale, rel=1e-6)


def test_layouts_and_batches_agree(t1_rgb, astronaut_rgb):
    images = [photo(t1_rgb, (642, 378)), cv2.resize(astronaut_rgb, (642, 378))]
    planar, _ = letterbox(as_frames(images, channels_last=False), DET_SIZE)
    packed, _ = letterbox(as_frames(images), DET_SIZE)
    single, _ = letterbox(as_frames(images[1:]), DET_SIZE)
    assert torch.equal(planar, packed)
    assert torch.equal(packed[1:], single)


@pytest.mark.slow
def test_compiled_with_symbolic_sizes_equals_eager(t1_rgb):
    compiled = torch.compile(lambda frames: letterbox(frames, DET_SIZE), dynamic=True, fullgraph=True)
    for size in [(854, 480), (480, 640), (1920, 1080)]:
        frames = as_frames([photo(t1_rgb, size)] * 2)
        want, want_scale = letterbox(frames, DET_SIZE)
        got, scale = compiled(frames)
        assert torch.equal(got, want), size
        assert float(scale) == float(want_scale)


def test_refuses_float_frames():
    with pytest.raises(TypeError, match="uint8"):
        letterbox(torch.zeros(1, 3, 32, 32), DET_SIZE)
