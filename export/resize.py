"""Bilinear resizing that reproduces OpenCV's ``cv2.resize(..., INTER_LINEAR)``.

InsightFace resizes uint8 frames with OpenCV, which computes in fixed point:
weights are rounded to multiples of 1/2048 and the vertical pass truncates
with shifts. A float bilinear resize differs from it by up to 0.75 grey levels
per pixel, enough to move SCRFD scores by 3e-3; the integer emulation below
matches OpenCV's vectorised path bit for bit on all but ~0.3% of pixels (those
off by one), which keeps scores within 1e-3 of InsightFace.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
_COEF_SCALE = 1 << _COEF_BITS


def _taps(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices ``i0, i1 [n_out]`` and fixed-point weights ``w0, w1 [n_out]`` (sum 2048)."""
    pos = (torch.arange(n_out, device=device, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    i0 = pos.floor()
    frac = pos - i0
    i0 = i0.long()
    # Outside the first/last pixel centre OpenCV repeats the edge pixel (weight 1 on it).
    frac = torch.where((i0 < 0) | (i0 >= n_in - 1), torch.zeros_like(frac), frac)
    i0 = i0.clamp(0, n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w0 = torch.round((1 - frac) * _COEF_SCALE).int()
    return i0, i1, w0, _COEF_SCALE - w0


def resize_bilinear(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``[B, C, H, W]`` to ``size = (new_h, new_w)`` as OpenCV's INTER_LINEAR does.

    uint8 input gives uint8 output computed in OpenCV's fixed point; float input
    gives float output (OpenCV resizes float images in floating point, which is
    ``F.interpolate(mode='bilinear', align_corners=False)`` without antialiasing).
    """
    if frames.dtype != torch.uint8:
        return F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
    new_h, new_w = size
    height, width = frames.shape[-2:]
    i0, i1, w0, w1 = _taps(width, new_w, frames.device)
    j0, j1, v0, v1 = _taps(height, new_h, frames.device)
    # OpenCV filters every source row horizontally, then blends pairs of rows. Only the four taps of
    # each output pixel matter, so gather those from the uint8 frame first: the work is that of the
    # output, not of the (much larger) input frame.
    rows0, rows1, cols0, cols1 = j0[:, None], j1[:, None], i0[None, :], i1[None, :]
    top_h = frames[..., rows0, cols0].int() * w0 + frames[..., rows0, cols1].int() * w1  # [B, C, new_h, new_w]
    bottom_h = frames[..., rows1, cols0].int() * w0 + frames[..., rows1, cols1].int() * w1  # scaled by 2048
    # OpenCV's VResizeLinearVec_32s8u: drop 4 bits, multiply, keep the high 16 bits, round the last 2.
    top = (v0[:, None] * (top_h >> 4)) >> 16
    bottom = (v1[:, None] * (bottom_h >> 4)) >> 16
    return ((top + bottom + 2) >> 2).clamp(0, 255).to(torch.uint8)
