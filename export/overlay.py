"""Overlay video: the source frames with boxes and landmarks drawn from a results .npz (numpy and PyAV only)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from facecrop.runtime.sources import read_frames
from facecrop.runtime.video_out import VideoOut

COLORS = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                   (145, 30, 180), (70, 240, 240), (240, 50, 230)], np.uint8)  # one per face id


def draw_faces(img: np.ndarray, bbox: np.ndarray, lms: np.ndarray | None, valid: np.ndarray,
               face_idx: np.ndarray | None = None) -> np.ndarray:
    """Draw on a copy of ``img`` (RGB uint8 [H, W, 3]) the valid faces' boxes and points.

    Args:
        bbox: [K, 4] (x1, y1, x2, y2) pixels. lms: [K, L, 2] (x, y) pixels or None. valid: [K] bool.
        face_idx: [K] face ids (one colour each, the same in every frame), or None to colour by slot.
    """
    out = img.copy()
    height, width = out.shape[:2]
    thick = max(1, round(min(height, width) / 240))
    for k in np.flatnonzero(valid):
        color = COLORS[(k if face_idx is None else face_idx[k]) % len(COLORS)]
        x1, y1, x2, y2 = np.round(bbox[k]).astype(int)
        x1, x2 = np.clip([x1, x2], 0, width - 1)
        y1, y2 = np.clip([y1, y2], 0, height - 1)
        out[y1:y1 + thick, x1:x2 + 1] = color
        out[max(y2 - thick + 1, 0):y2 + 1, x1:x2 + 1] = color
        out[y1:y2 + 1, x1:x1 + thick] = color
        out[y1:y2 + 1, max(x2 - thick + 1, 0):x2 + 1] = color
        for x, y in np.round(lms[k]).astype(int) if lms is not None else ():
            if 0 <= x < width and 0 <= y < height:
                out[max(y - thick, 0):y + thick + 1, max(x - thick, 0):x + thick + 1] = (255, 255, 255)
    return out


def write_overlay(video: str | Path, results: str | Path, output: str | Path) -> Path:
    """Write ``output`` (MP4, H.264 where available) showing ``results`` drawn over ``video``.

    Frames are matched to results by decoding order (``frame_index``), read as the run read them
    (upright RGB, :func:`facecrop.runtime.sources.read_frames`). The overlay is written at the source's
    average frame rate; its timestamps are not the source's (use ``pts_seconds`` for those).
    """
    with np.load(results, allow_pickle=False) as data:
        valid, bbox = data["valid"], data["bbox"]
        lms = data["lms"] if "lms" in data.files else None
        face_idx = data["face_idx"] if "face_idx" in data.files else None  # results before face ids had none
    with av.open(str(video)) as source:
        rate = source.streams.video[0].average_rate or 25
    out = None
    try:
        for i, img, _ in read_frames(video, len(valid)):
            img = draw_faces(img, bbox[i], lms[i] if lms is not None else None, valid[i],
                             face_idx[i] if face_idx is not None else None)
            if out is None:
                out = VideoOut(output, img.shape[1], img.shape[0], Fraction(rate).limit_denominator(1001))
            out.write(img)
    except BaseException:
        if out is not None:
            out.discard()
        raise
    if out is None:
        raise ValueError(f"{video} has no frames to draw on")
    return out.close()
