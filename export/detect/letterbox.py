"""InsightFace's letterbox, computed inside the graph at the frame's own size.

InsightFace resizes a frame keeping its aspect ratio so that it fits the
detector input, with OpenCV's ``cv2.resize(..., INTER_LINEAR)``, and pastes it
at the top-left of a zero canvas. Here the canvas has the static detector size
and each of its pixels *gathers* its four source taps, with indices and weights
computed by tensor arithmetic from the frame's height and width. So one traced,
exported or compiled graph serves frames of every size (the sizes are symbolic)
and gives, on each, the numbers InsightFace gives on that frame. The work is
that of the canvas, not of the (much larger) frame; on the CPU, only of the
image's part of it.

OpenCV resizes uint8 in fixed point: weights are rounded to multiples of
1/2048 and the vertical pass truncates with shifts. A float bilinear resize
differs from it by up to 0.75 grey levels per pixel, enough to move SCRFD
scores by 3e-3; the integer emulation below matches OpenCV's vectorised path
bit for bit on all but ~0.3% of pixels (those off by one), which keeps scores
within 1e-3 of InsightFace.
"""

from __future__ import annotations

import torch

from facecrop.runtime.pixels import pixel_pairs

_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
_COEF_SCALE = 1 << _COEF_BITS


def letterbox_extent(height: torch.Tensor, width: torch.Tensor, det_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(new_h, new_w)`` of a ``height x width`` frame letterboxed into ``det_size = (w, h)``.

    InsightFace's ``SCRFD.detect`` exactly, in float64 like Python: the side that
    limits fills the detector input and the other is ``int()``-truncated. Extreme
    aspect ratios (where InsightFace's ``cv2.resize`` would get a zero size) keep
    one pixel.

    Args:
        height, width: float64 scalar tensors (symbolic under export).

    Returns:
        float64 scalar tensors holding integers.
    """
    det_w, det_h = det_size
    ratio = height / width
    taller = ratio > det_h / det_w
    new_h = torch.where(taller, torch.full_like(ratio, det_h), torch.floor(det_w * ratio))
    new_w = torch.where(taller, torch.floor(det_h / ratio), torch.full_like(ratio, det_w))
    return new_h.clamp(min=1), new_w.clamp(min=1)


def _taps(n_in: torch.Tensor, n_new: torch.Tensor, n_out: int, n_in_int) -> tuple[torch.Tensor, ...]:
    """OpenCV's taps along one axis, for ``n_out`` canvas pixels of which the first ``n_new`` are the image.

    Returns source indices ``i0, i1 [n_out]`` (int64, in range), fixed-point weights
    ``w0, w1 [n_out]`` (int32, sum 2048) and ``inside [n_out]`` (bool: part of the image).
    """
    out = torch.arange(n_out, dtype=torch.float64, device=n_in.device)
    pos = (out + 0.5) * (n_in / n_new) - 0.5
    i0 = pos.floor()
    frac = pos - i0
    # Outside the first/last pixel centre OpenCV repeats the edge pixel (weight 1 on it).
    frac = torch.where((i0 < 0) | (i0 >= n_in - 1), torch.zeros_like(frac), frac)
    i0 = i0.long().clamp(0, n_in_int - 1)
    i1 = (i0 + 1).clamp(max=n_in_int - 1)
    w0 = torch.round((1 - frac) * _COEF_SCALE).int()
    return i0, i1, w0, _COEF_SCALE - w0, out < n_new


def _extent_size(extent: torch.Tensor, bound: int) -> int:
    """The letterboxed image's extent as a size, so that a compiled graph sizes the resize by it.

    The resize then skips InsightFace's zero padding (44% of the canvas for 16:9 frames): 0.83 ->
    0.47 ms/frame for 854x480 frames, compiled, one thread. A size computed from the symbolic sides
    instead would be an expression with an integer division that compiled kernels re-evaluate for
    every element (3x slower than the whole canvas); read from the tensor it is one plain symbol.
    """
    size = extent.long().item()  # an integer tensor: its item is a plain integer symbol
    torch._check(1 <= size)
    torch._check(size <= bound)
    return size


def _computed_once(*tables: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The same 1-D tables (of one length), stacked into one int32 buffer and taken apart again.

    Inductor inlines cheap pointwise producers into their consumers, so without this every
    gathered canvas element (x 3 channels x B frames) recomputed its taps' float64 arithmetic;
    a stacked buffer is computed once per call. In the compiled module this took the letterbox
    from 1.93 to 0.65 ms/frame (720p frames, one thread, profiler).
    """
    return torch.stack([t.to(torch.int32) for t in tables]).unbind(0)


def letterbox(frames: torch.Tensor, det_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Letterbox uint8 frames into the detector input as InsightFace does, at the frames' own size.

    Args:
        frames: uint8 RGB ``[B, 3, H, W]``; ``H`` and ``W`` may be symbolic. Channels-last frames
            (the runtime's) are read in place; others are transposed to it once.
        det_size: detector input ``(width, height)``.

    Returns:
        ``(canvas, det_scale)``: int32 ``[B, 3, det_h, det_w]`` (contiguous) holding the resized
        frame (0-255) at the top-left and zeros elsewhere, and the float32 scalar
        ``det_scale = new_h / H`` that maps frame pixels to canvas pixels.

    Example:
        >>> canvas, scale = letterbox(torch.full((1, 3, 100, 200), 7, dtype=torch.uint8), (64, 64))
        >>> canvas.shape, round(float(scale), 4), int(canvas[0, 0, 31, 63]), int(canvas[0, 0, 32, 0])
        (torch.Size([1, 3, 64, 64]), 0.32, 7, 0)
    """
    if frames.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8, got {frames.dtype}")
    batch, channels, height_int, width_int = frames.shape
    height = torch.scalar_tensor(height_int, dtype=torch.float64, device=frames.device)
    width = torch.scalar_tensor(width_int, dtype=torch.float64, device=frames.device)
    new_h, new_w = letterbox_extent(height, width, det_size)
    det_w, det_h = det_size
    # Resized: the image's extent on the CPU; the whole canvas where reading the extent would stall
    # a GPU stream, and in a trace, which would record its example's extent as a constant.
    if frames.device.type == "cpu" and not torch.jit.is_tracing():
        rows, cols = _extent_size(new_h, det_h), _extent_size(new_w, det_w)
    else:
        rows, cols = det_h, det_w
    i0, i1, w0, w1, inside_x = _taps(width, new_w, cols, width_int)
    j0, j1, v0, v1, inside_y = _taps(height, new_h, rows, height_int)
    # Each canvas pixel blends source pixels x and x + 1 of two source rows, read as one pair (see
    # facecrop.runtime.pixels). At the right edge OpenCV repeats the last pixel (i0 = i1 = W - 1, all the
    # weight on i0): that is the pair (W - 2, W - 1) with the weight on its second pixel.
    last = i0 > width_int - 2
    pair_x = i0.clamp(max=width_int - 2)
    cols_at, wx0, wx1, inside_cols = _computed_once(pair_x * channels, torch.where(last, 0, w0),
                                                    torch.where(last, w0, w1), inside_x)
    row_stride = width_int * channels
    rows0, rows1, wy0, wy1, inside_rows = _computed_once(j0 * row_stride, j1 * row_stride, v0, v1, inside_y)
    base = (torch.arange(batch, device=frames.device) * (height_int * row_stride)).view(-1, 1, 1)
    read = pixel_pairs(frames)
    # Each pair is read once for all channels: [B, rows, cols] each, pixel x's channels then x + 1's.
    top_pairs = read(base + (rows0[:, None] + cols_at[None, :]))
    bottom_pairs = read(base + (rows1[:, None] + cols_at[None, :]))
    planes = []
    for c in range(channels):
        # OpenCV filters every source row horizontally (weights scaled by 2048), then blends pairs of rows.
        top_h = top_pairs[c].int() * wx0 + top_pairs[channels + c].int() * wx1  # [B, rows, cols]
        bottom_h = bottom_pairs[c].int() * wx0 + bottom_pairs[channels + c].int() * wx1
        # OpenCV's VResizeLinearVec_32s8u: drop 4 bits, multiply, keep the high 16 bits, round the last 2.
        top = (wy0[:, None] * (top_h >> 4)) >> 16
        bottom = (wy1[:, None] * (bottom_h >> 4)) >> 16
        planes.append(((top + bottom + 2) >> 2).clamp(0, 255))
    resized = torch.stack(planes, 1)  # [B, C, rows, cols]
    resized = resized * (inside_rows[:, None] * inside_cols[None, :])  # all ones on the CPU
    # InsightFace's zero canvas around the image.
    canvas = torch.nn.functional.pad(resized, (0, det_w - cols, 0, det_h - rows))
    return canvas, (new_h / height).float()
