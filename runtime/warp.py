"""Cutting crops out of frames through affine matrices: the sampler under every crop facecrop makes.

The fused module cuts its crops with :func:`sample_crops` (compiled into the bundle); the runtime's
tube writer cuts the smoothed crops from decoded frames with :func:`facecrop.runtime.cut.cut_crops`,
the same arithmetic in numpy (bit for bit, tested), so both give the same pixels for the same matrix. Conventions as in :mod:`facecrop.geometry`: ``(x, y)``
pixels, pixel centres at integer coordinates, ``crop_mat`` maps image pixels to crop pixels.
"""

from __future__ import annotations

import torch

from .pixels import pixel_pairs

__all__ = ["invert_affine_2x3", "sample_crops"]


def invert_affine_2x3(mat: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of affine (..., 3, 3) matrices, returned as (..., 2, 3).

    Closed form rather than ``torch.linalg.inv``: exact for the affine case, no
    LAPACK/cuSOLVER call, and it lowers to plain elementwise ops in every backend.
    A singular matrix gives non-finite entries (callers sanitise).
    """
    a, b, c = mat[..., 0, 0], mat[..., 0, 1], mat[..., 0, 2]
    d, e, f = mat[..., 1, 0], mat[..., 1, 1], mat[..., 1, 2]
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    ic = -(ia * c + ib * f)
    if_ = -(id_ * c + ie * f)
    return torch.stack([ia, ib, ic, id_, ie, if_], dim=-1).unflatten(-1, (2, 3))


def sample_crops(frames: torch.Tensor, crop_mat: torch.Tensor, frame_index: torch.Tensor,
                 size: tuple[int, int]) -> torch.Tensor:
    """Cut N affine-warped crops, each from its own frame, by gathering bilinear taps.

    Bilinear interpolation, zero outside the frame, pixel centres at integer
    coordinates: the semantics of ``cv2.warpAffine(frame, crop_mat[:2], (w, h))``
    with ``INTER_LINEAR`` and ``BORDER_CONSTANT`` 0, and of kornia's
    ``warp_affine(..., align_corners=True)``.

    The four taps of every crop pixel are gathered straight from ``frames`` in
    their own dtype (uint8 video frames stay uint8), so the cost is that of the
    crops alone: no whole-frame conversion, and for channels-last frames
    (``frames.contiguous(memory_format=torch.channels_last)``, the runtime's
    layout) no copy either; other layouts are transposed once.

    Args:
        frames: images of shape (B, C, H, W), uint8 or floating point (e.g. RGB 0-255).
        crop_mat: affine image -> crop matrices of shape (N, 3, 3).
        frame_index: int64 of shape (N,): the frame each crop is cut from.
        size: crop ``(h, w)`` in pixels.

    Returns:
        crops of shape (N, C, h, w): float32, or ``frames.dtype`` for float64 frames
        (round and clamp to get uint8 pixels). Crops whose matrix is singular or
        non-finite come out all zeros.

    Example:
        >>> frames = torch.arange(16.0).view(1, 1, 4, 4)
        >>> shift = torch.tensor([[[1.0, 0.0, -1.0], [0.0, 1.0, -2.0], [0.0, 0.0, 1.0]]])
        >>> sample_crops(frames, shift, torch.tensor([0]), (2, 3))[0, 0]
        tensor([[ 9., 10., 11.],
                [13., 14., 15.]])
    """
    batch, channels, height, width = frames.shape
    h, w = size
    dtype = torch.float64 if frames.dtype == torch.float64 else torch.float32
    src_mat_crop = invert_affine_2x3(crop_mat.to(dtype))[..., None, None]  # [N, 2, 3, 1, 1]
    ys = torch.arange(h, dtype=dtype, device=frames.device).view(h, 1)  # [h, 1]
    xs = torch.arange(w, dtype=dtype, device=frames.device).view(1, w)  # [1, w]
    x_src = src_mat_crop[:, 0, 0] * xs + src_mat_crop[:, 0, 1] * ys + src_mat_crop[:, 0, 2]  # [N, h, w]
    y_src = src_mat_crop[:, 1, 0] * xs + src_mat_crop[:, 1, 1] * ys + src_mat_crop[:, 1, 2]  # [N, h, w]
    # Anything left of -1 or right of W samples only zeros, so clamping there changes nothing but keeps
    # the index arithmetic in range, and sending NaN/inf (singular matrices) out of the frame gives zeros.
    x_src = torch.nan_to_num(x_src, nan=-2.0, posinf=-2.0, neginf=-2.0).clamp(-2.0, width + 1.0)
    y_src = torch.nan_to_num(y_src, nan=-2.0, posinf=-2.0, neginf=-2.0).clamp(-2.0, height + 1.0)
    # Stacked into one buffer, the source coordinates are computed once per crop pixel: left to
    # themselves, compilers inline their arithmetic (matrix inverse, NaN checks) into every gathered
    # tap of every channel. Stacking these rather than the taps' offsets and weights (6x the bytes)
    # took 32 crops from 480p frames from 9.45 to 7.82 ms compiled (same pixels).
    x_src, y_src = torch.stack([x_src, y_src]).unbind(0)
    x0f, y0f = x_src.floor(), y_src.floor()
    fx, fy = x_src - x0f, y_src - y0f  # [N, h, w]
    # Offsets within a frame fit in int32 (4096 x 4096 x 3 < 2^31), and int32 index arithmetic
    # vectorises twice as wide; only the frame's base offset needs int64.
    x0, y0 = x0f.int(), y0f.int()
    # A tap outside the frame weighs 0 (the zero border); its index is clamped only to stay in range.
    wx0 = torch.where((x0 >= 0) & (x0 < width), 1 - fx, 0.0)
    wx1 = torch.where((x0 >= -1) & (x0 < width - 1), fx, 0.0)
    wy0 = torch.where((y0 >= 0) & (y0 < height), 1 - fy, 0.0)
    wy1 = torch.where((y0 >= -1) & (y0 < height - 1), fy, 0.0)
    if width < 2:  # a pixel pair needs two columns: a zero column, which the zero weights above never read
        frames = torch.nn.functional.pad(frames, (0, 1))
    columns = frames.shape[3]
    # The taps x0 and x0 + 1 of a row are read as one pixel pair (x, x + 1) (see facecrop.runtime.pixels), x = x0
    # clamped to [0, W - 2]: where x0 is -1 only the pair's first pixel weighs, where it is W - 1 only its second.
    pair_x = x0.clamp(0, columns - 2)
    first = torch.where(x0 < 0, wx1, torch.where(x0 > columns - 2, 0.0, wx0))
    second = torch.where(x0 < 0, 0.0, torch.where(x0 > columns - 2, wx0, wx1))
    read = pixel_pairs(frames)
    row_stride = columns * channels
    base = (frame_index * (height * row_stride)).view(-1, 1, 1)  # [N, 1, 1]: the frame in the flat buffer
    col = pair_x * channels
    # Every offset is in range by construction, so the reads need no bounds checks. Both rows' pairs are
    # read once for all channels (the channels of a pixel lie side by side in channels-last frames).
    top, bottom = (read(base + (row.clamp(0, height - 1) * row_stride + col)) for row in (y0, y0 + 1))
    planes = []
    for c in range(channels):
        p00, p01, p10, p11 = (t.to(dtype) for t in (top[c], top[channels + c], bottom[c], bottom[channels + c]))
        planes.append(wy0 * (first * p00 + second * p01) + wy1 * (first * p10 + second * p11))
    crops = torch.stack(planes, 1)  # [N, C, h, w]
    return crops

