"""Cutting crops out of one decoded frame in numpy: the tubes' and the report's crops, after a run.

The same arithmetic as the bundles' compiled sampler (:func:`facecrop.runtime.warp.sample_crops`), so
a crop cut here from a frame equals the bundle's for the same matrix, bit for bit, without importing
torch's Python package (a run of an aoti bundle never does). Conventions: ``(x, y)`` pixels, pixel
centres at integer coordinates, ``crop_mat`` maps frame pixels to crop pixels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cut_crops"]


def cut_crops(frame: np.ndarray, crop_mat: np.ndarray, size: int) -> np.ndarray:
    """Crops ``[N, S, S, 3]`` uint8 of one frame ``[H, W, 3]`` uint8 through ``crop_mat [N, 3, 3]``: the
    arithmetic of :func:`~facecrop.runtime.warp.sample_crops` (bilinear, zero outside the frame, pixel centres at integers, in
    float32) in numpy, for the runtime's per-frame work after a run (tubes, reports), which then needs
    no torch: 0.3 ms a 112 px crop, where eager ``sample_crops`` takes 1.8 (its word gathers pay off
    compiled) and importing torch's Python package 1.5 s.

    Example:
        >>> frame = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
        >>> shift = np.array([[[1.0, 0.0, -1.0], [0.0, 1.0, -2.0], [0.0, 0.0, 1.0]]])
        >>> cut_crops(frame, shift, 2)[0, :, :, 0].tolist()
        [[27, 30], [39, 42]]
    """
    height, width = frame.shape[:2]
    pixels = np.ascontiguousarray(frame).reshape(height * width, 3)
    crops = np.zeros((len(crop_mat), size, size, 3), np.uint8)
    steps = np.arange(size, dtype=np.float32)
    for n, mat in enumerate(np.asarray(crop_mat, np.float32)):
        a, b, c, d, e, f = mat[0, 0], mat[0, 1], mat[0, 2], mat[1, 0], mat[1, 1], mat[1, 2]
        det = a * e - b * d
        if not np.isfinite(det) or det == 0:
            continue  # a singular matrix: a black crop, as sample_crops gives
        ia, ib, id_, ie = e / det, -b / det, -d / det, a / det  # crop -> image, as invert_affine_2x3
        ic, if_ = -(ia * c + ib * f), -(id_ * c + ie * f)
        xs = ia * steps[None, :] + ib * steps[:, None] + ic  # [S, S]
        ys = id_ * steps[None, :] + ie * steps[:, None] + if_
        x0f, y0f = np.floor(xs), np.floor(ys)
        fx, fy = xs - x0f, ys - y0f
        x0, y0 = x0f.astype(np.int64), y0f.astype(np.int64)
        wx0 = np.where((x0 >= 0) & (x0 < width), 1 - fx, 0).astype(np.float32)[..., None]
        wx1 = np.where((x0 >= -1) & (x0 < width - 1), fx, 0).astype(np.float32)[..., None]
        wy0 = np.where((y0 >= 0) & (y0 < height), 1 - fy, 0).astype(np.float32)[..., None]
        wy1 = np.where((y0 >= -1) & (y0 < height - 1), fy, 0).astype(np.float32)[..., None]
        xa, xb = np.clip(x0, 0, width - 1), np.clip(x0 + 1, 0, width - 1)
        ya, yb = np.clip(y0, 0, height - 1) * width, np.clip(y0 + 1, 0, height - 1) * width
        tap = pixels.take  # flat pixel indices: one gather of 3 bytes a tap
        top = wx0 * tap(ya + xa, axis=0) + wx1 * tap(ya + xb, axis=0)
        bottom = wx0 * tap(yb + xa, axis=0) + wx1 * tap(yb + xb, axis=0)
        crops[n] = np.clip(np.rint(wy0 * top + wy1 * bottom), 0, 255)
    return crops
