"""Crop matrices: the ArcFace/MICA aligned crop and the DECA/EMOCA box crop.

Both return ``crop_mat``, an affine (..., 3, 3) matrix mapping original-image
pixels (x right, y down, pixel centres at integer coordinates) to crop pixels;
``facecrop.geometry.warp_crops`` cuts the crops with it and its inverse maps
crops or crop points back into the image. Pure tensor ops, batched over leading
dims, export- and compile-clean.
"""

from __future__ import annotations

import torch

from facecrop.geometry import estimate_similarity

__all__ = ["TEMPLATE", "align_crop_matrix", "bbox_crop_matrix", "square_side"]

#: ArcFace 5-point template in 112x112 crop space, shape (5, 2): left eye, right eye,
#: nose tip, left mouth corner, right mouth corner, (x, y) pixels. float32 like
#: InsightFace's ``arcface_dst``, so the float64 values match it bit for bit.
TEMPLATE = torch.tensor(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=torch.float32,
)

# DECA's box constants: the landmark extent is enlarged by 1.1, then by its `scale` 1.25.
_DECA_EXTENT = 1.1
_DECA_SCALE = 1.25


def square_side(output_size: int | tuple[int, int]) -> int:
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"output_size must be a positive int or (h, w) of ints, got {output_size!r}")
    if size[0] != size[1]:
        raise ValueError(
            f"output_size must be square (a similarity cannot map a square onto a "
            f"rectangle), got {output_size!r}"
        )
    return size[0]


def _check_landmarks(points: torch.Tensor, name: str, count: int | None = None) -> None:
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(points).__name__}")
    want = "(..., 5, 2)" if count == 5 else "(..., L, 2)"
    if points.ndim < 2 or points.shape[-1] != 2 or (count is not None and points.shape[-2] != count):
        raise ValueError(f"{name} must have shape {want}, got {tuple(points.shape)}")
    if count is None and points.shape[-2] == 0:
        raise ValueError(f"{name} must hold at least one point, got {tuple(points.shape)}")


def align_crop_matrix(
    kps: torch.Tensor, output_size: int | tuple[int, int] = 112, template: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop matrix of the ArcFace/MICA aligned crop from 5 keypoints.

    The least-squares similarity (Umeyama, with scale, no reflection) from ``kps``
    to ``template`` (default :data:`TEMPLATE`) scaled by ``output_size / 112``.

    Difference from InsightFace 0.7.3 ``face_align.estimate_norm(lmk, image_size)``:
    it agrees for sizes divisible by 112 (112, 224, 448, ...), but for sizes
    divisible by 128 and not by 112 (128, 256, 384, 512) it scales the template by
    ``size / 128`` and shifts it right by ``8 * size / 128`` pixels, and it rejects
    every other size. facecrop follows the SPEC (scale by ``size / 112``, any size).

    Args:
        kps: detector keypoints of shape (..., 5, 2): left eye, right eye, nose tip,
            left and right mouth corners, (x, y) image pixels.
        output_size: side of the square crop, an int or a square ``(h, w)``.
        template: 5 points of shape (5, 2) in 112x112 crop space.

    Returns:
        - crop_mat: image -> crop matrices of shape (..., 3, 3).
        - valid: bool of shape (...); False for degenerate or non-finite keypoints,
          whose ``crop_mat`` is the identity.

    Example:
        >>> crop_mat, valid = align_crop_matrix(TEMPLATE * 2, 112)
        >>> torch.allclose(crop_mat[:2], torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]), atol=1e-5)
        True
    """
    _check_landmarks(kps, "kps", count=5)
    side = square_side(output_size)
    dtype = torch.promote_types(kps.dtype, torch.float32) if kps.is_floating_point() else torch.float32
    template = TEMPLATE if template is None else template
    template = template.to(device=kps.device, dtype=dtype) * (side / 112.0)  # [5, 2]
    return estimate_similarity(kps, template)


def bbox_crop_matrix(
    lms: torch.Tensor, output_size: int | tuple[int, int] = 224, scale: float = _DECA_SCALE,
    scale_orig: float = _DECA_EXTENT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Square box and crop matrix of the DECA/EMOCA box crop around landmarks.

    ``left, right, top, bottom`` are the landmarks' x/y extremes; the box is a square
    of side ``((right - left) + (bottom - top)) / 2 * 1.1 * 1.25`` centred on the
    middle of that extent (DECA's box, without DECA's rounding of the side to an
    int, as the SPEC states). The crop matrix is the similarity mapping the box's
    top-left, bottom-left and top-right corners to ``(0, 0)``, ``(0, S - 1)`` and
    ``(S - 1, 0)``; for a square box it is exact, a pure scale ``(S - 1) / side``
    plus translation, written here in closed form.

    The side is floored at 1 pixel so that degenerate landmarks (e.g. the all-zero
    padding rows of a fixed-size batch) still give a finite, invertible matrix; no
    real face comes near that floor.

    Args:
        lms: landmarks of shape (..., L, 2), (x, y) image pixels.
        output_size: side ``S`` of the square crop, an int or a square ``(h, w)``.
        scale, scale_orig: DECA's enlargements of the landmark extent (Medusa's ``scale`` and
            ``scale_orig``): the side is the mean extent times ``scale_orig * scale``.

    Returns:
        - square_box: boxes (x1, y1, x2, y2) of shape (..., 4), ``x1 < x2``, ``y1 < y2``.
        - crop_mat: image -> crop matrices of shape (..., 3, 3).

    Example:
        >>> lms = torch.tensor([[100.0, 100.0], [180.0, 100.0], [140.0, 180.0]])
        >>> box, crop_mat = bbox_crop_matrix(lms, 224)
        >>> box
        tensor([ 85.,  85., 195., 195.])
        >>> crop_mat[:2]
        tensor([[   2.0273,    0.0000, -172.3182],
                [   0.0000,    2.0273, -172.3182]])
    """
    _check_landmarks(lms, "lms")
    side_out = square_side(output_size)
    if not lms.is_floating_point():
        lms = lms.to(torch.float32)
    left, top = lms.amin(-2).unbind(-1)  # [...], [...]
    right, bottom = lms.amax(-2).unbind(-1)  # [...], [...]
    size = ((right - left) + (bottom - top)) / 2 * scale_orig * scale
    size = size.clamp_min(1.0)
    cx = right - (right - left) / 2
    cy = bottom - (bottom - top) / 2
    x1, y1 = cx - size / 2, cy - size / 2
    square_box = torch.stack([x1, y1, cx + size / 2, cy + size / 2], dim=-1)  # [..., 4]

    scale = (side_out - 1) / size  # [...]
    zero, one = torch.zeros_like(scale), torch.ones_like(scale)
    crop_mat = torch.stack(
        [scale, zero, -scale * x1, zero, scale, -scale * y1, zero, zero, one], dim=-1
    ).unflatten(-1, (3, 3))  # [..., 3, 3]
    return square_box, crop_mat
