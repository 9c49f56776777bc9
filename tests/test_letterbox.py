"""The in-graph letterbox against InsightFace's: ``cv2.resize`` (INTER_LINEAR) pasted on a zero canvas.

Real photos at many sizes and aspect ratios (wider, taller, square, odd, up- and downscaled), in
both memory layouts, eager and compiled with symbolic frame sizes.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import real_model
from facecrop.detect.letterbox import letterbox

DET_SIZE = (224, 224)
SIZES = [(854, 480), (642, 378), (480, 640), (720, 720), (1920, 1080), (100, 37), (17, 300)]  # (width, height)


class RecordingSession:
    """Stands between InsightFace's SCRFD and its onnxruntime session, keeping the blob it is given."""

    def __init__(self, session):
        self.session, self.blobs = session, []

    def run(self, names, feeds):
        self.blobs.append(next(iter(feeds.values())))
        return self.session.run(names, feeds)

    def __getattr__(self, name):
        return getattr(self.session, name)


@pytest.fixture(scope="module")
def insightface_canvas():
    """``rgb [H, W, 3] -> (canvas uint8 [det_h, det_w, 3], scale)`` as InsightFace's ``SCRFD.detect`` makes it.

    The canvas is recovered from the blob ``SCRFD`` hands onnxruntime (``(pixel - 127.5) / 128``,
    RGB); the scale from the extent of the pasted picture (a real photo has no black bottom row).
    """
    from insightface.model_zoo.scrfd import SCRFD

    detector = SCRFD(str(real_model("det_500m")))
    detector.session = RecordingSession(detector.session)

    def canvas_of(rgb: np.ndarray) -> tuple[np.ndarray, float]:
        detector.detect(np.ascontiguousarray(rgb[..., ::-1]), input_size=DET_SIZE)  # InsightFace takes BGR
        blob = detector.session.blobs.pop()[0]  # [3, det_h, det_w]
        canvas = np.clip(np.rint(blob * 128.0 + 127.5), 0, 255).astype(np.uint8).transpose(1, 2, 0)
        rows = np.flatnonzero(canvas.any(axis=(1, 2)))
        return canvas, float(rows[-1] + 1) / rgb.shape[0]

    return canvas_of


def photo(t1_rgb, size) -> np.ndarray:
    return np.ascontiguousarray(cv2.resize(t1_rgb, size, interpolation=cv2.INTER_AREA))


def as_frames(images: list[np.ndarray], channels_last: bool = True) -> torch.Tensor:
    frames = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return frames if channels_last else frames.contiguous()


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_equals_insightface_on_real_photos(t1_rgb, size, insightface_canvas):
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
