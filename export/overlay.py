"""Overlay video: the source frames with boxes and landmarks drawn from a results .npz (numpy and PyAV only)."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from facecrop.runtime.decode_worker import quarter_turns
from facecrop.runtime.decoder import upright

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

    Frames are matched to results by decoding order (``frame_index``). The overlay is written at the
    source's average frame rate; its timestamps are not the source's (use ``pts_seconds`` for those).
    """
    output = Path(output)
    with np.load(results, allow_pickle=False) as data:
        valid, bbox = data["valid"], data["bbox"]
        lms = data["lms"] if "lms" in data.files else None
        face_idx = data["face_idx"] if "face_idx" in data.files else None  # results before face ids had none
    tmp = output.with_name(f".{output.stem}.tmp{output.suffix or '.mp4'}")
    try:
        with av.open(str(video)) as source, av.open(str(tmp), "w", format="mp4") as target:
            src = source.streams.video[0]
            stream = None
            for i, frame in enumerate(source.decode(src)):
                if i >= len(valid):
                    break
                img = draw_faces(upright(frame.to_ndarray(format="rgb24"), quarter_turns(frame)), bbox[i], lms[i] if lms is not None else None, valid[i],
                                 face_idx[i] if face_idx is not None else None)
                img = np.pad(img, ((0, img.shape[0] % 2), (0, img.shape[1] % 2), (0, 0)))  # yuv420p needs even sizes
                if stream is None:
                    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
                    stream = target.add_stream(codec, rate=Fraction(src.average_rate or 25).limit_denominator(1001))
                    stream.width, stream.height, stream.pix_fmt = img.shape[1], img.shape[0], "yuv420p"
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    target.mux(packet)
            if stream is not None:
                for packet in stream.encode():
                    target.mux(packet)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return output
