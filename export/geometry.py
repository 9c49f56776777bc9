"""2-D similarity estimation, point transforms and batched crop warping.

The functional core shared by the eager Medusa-compatible modules and the
fused static-shape module: pure tensor ops, batched over leading dimensions,
with no data-dependent Python branching, so every function here traces,
compiles with ``torch.compile(fullgraph=True)`` and passes ``torch.export``.

Conventions:
    - Points are ``(x, y)`` pixels, x right, y down; pixel centres lie at
      integer coordinates (the convention of ``cv2.warpAffine``).
    - A matrix named ``dst_mat_src`` has shape ``(..., 3, 3)`` and maps
      homogeneous ``src`` points to ``dst`` points: ``p_dst = M @ [x, y, 1]``.
      All matrices here are affine: their last row is ``[0, 0, 1]``.
    - ``crop_mat`` is such a matrix mapping original-image pixels to crop
      pixels.
"""

from __future__ import annotations

import torch

from facecrop.runtime.warp import invert_affine_2x3, sample_crops

__all__ = ["estimate_similarity", "invert_affine", "sample_crops", "transform_points", "valid_slots", "warp_crops"]


def _check_points(points: torch.Tensor, name: str) -> None:
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(points).__name__}")
    if points.ndim < 2 or points.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (..., N, 2), got {tuple(points.shape)}")


def _check_matrix(mat: torch.Tensor, name: str) -> None:
    if not isinstance(mat, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mat).__name__}")
    if mat.ndim < 2 or mat.shape[-2:] != (3, 3):
        raise ValueError(f"{name} must have shape (..., 3, 3), got {tuple(mat.shape)}")
    if not mat.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {mat.dtype}")


def _float_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype if dtype.is_floating_point else torch.float32


def estimate_similarity(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src to dst.

    Umeyama's estimate without reflection, as ``skimage.transform.SimilarityTransform``
    and InsightFace's ``estimate_norm`` compute it. In 2-D the rotation-constrained
    optimum has a closed form: with centred points ``p = src - mean``, ``q = dst - mean``,

        a = sum(p_x q_x + p_y q_y) / sum(|p|^2),  b = sum(p_x q_y - p_y q_x) / sum(|p|^2),

    the matrix is ``[[a, -b, tx], [b, a, ty], [0, 0, 1]]``. This is exactly Umeyama's
    SVD solution with its determinant correction (the best *proper* rotation), so
    point sets whose best fit would be a reflection get the same answer as skimage.

    Args:
        src: source points of shape (..., N, 2).
        dst: destination points of shape (..., N, 2); leading dims broadcast with ``src``.

    Returns:
        - dst_mat_src: matrices of shape (..., 3, 3) in the promoted floating dtype
          (float32 for integer inputs).
        - valid: bool tensor of shape (...). False where the fit is undefined: a
          non-finite input point, all ``src`` points (numerically) equal, all ``dst``
          points equal, or a best-fit scale of zero (skimage returns NaN for the
          latter). Invalid entries hold the identity, so nothing non-finite spreads.

    Example:
        >>> src = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> dst = torch.tensor([[3.0, 3.0], [3.0, 5.0], [1.0, 3.0]])  # x2, +90 deg, +(3, 3)
        >>> mat, valid = estimate_similarity(src, dst)
        >>> mat
        tensor([[ 0., -2.,  3.],
                [ 2.,  0.,  3.],
                [ 0.,  0.,  1.]])
        >>> valid
        tensor(True)
    """
    _check_points(src, "src")
    _check_points(dst, "dst")
    if src.shape[-2] != dst.shape[-2]:
        raise ValueError(
            f"src and dst must hold the same number of points, got src {tuple(src.shape)} "
            f"and dst {tuple(dst.shape)}"
        )
    dtype = _float_dtype(src, dst)
    src, dst = src.to(dtype), dst.to(dtype)
    n = src.shape[-2]

    src_finite = torch.isfinite(src).flatten(-2).all(-1)  # [...]
    dst_finite = torch.isfinite(dst).flatten(-2).all(-1)  # [...]
    # Zero non-finite points before the arithmetic so that NaN cannot reach other entries.
    src = torch.where(torch.isfinite(src), src, torch.zeros_like(src))
    dst = torch.where(torch.isfinite(dst), dst, torch.zeros_like(dst))

    src_mean = src.mean(-2)  # [..., 2]
    dst_mean = dst.mean(-2)  # [..., 2]
    p = src - src_mean.unsqueeze(-2)  # [..., N, 2]
    q = dst - dst_mean.unsqueeze(-2)  # [..., N, 2]
    src_var = (p * p).flatten(-2).sum(-1)  # [...]
    dst_var = (q * q).flatten(-2).sum(-1)  # [...]

    # Centring leaves a rounding residue of about eps * max|x| per coordinate, so a
    # spread below that level is no spread at all (e.g. all points equal).
    eps = torch.finfo(dtype).eps
    src_tol = n * (4 * eps * src.abs().flatten(-2).amax(-1)) ** 2
    dst_tol = n * (4 * eps * dst.abs().flatten(-2).amax(-1)) ** 2
    safe_var = torch.where(src_var > src_tol, src_var, torch.ones_like(src_var))

    a = (p[..., 0] * q[..., 0] + p[..., 1] * q[..., 1]).sum(-1) / safe_var  # [...]
    b = (p[..., 0] * q[..., 1] - p[..., 1] * q[..., 0]).sum(-1) / safe_var  # [...]
    tx = dst_mean[..., 0] - (a * src_mean[..., 0] - b * src_mean[..., 1])
    ty = dst_mean[..., 1] - (b * src_mean[..., 0] + a * src_mean[..., 1])

    zero, one = torch.zeros_like(a), torch.ones_like(a)
    dst_mat_src = torch.stack(
        [a, -b, tx, b, a, ty, zero, zero, one], dim=-1
    ).unflatten(-1, (3, 3))  # [..., 3, 3]

    # (a^2 + b^2) * src_var is the dst variance the fit explains; a fraction below eps
    # means the best scale is zero and the matrix cannot be inverted.
    explained = (a * a + b * b) * src_var
    valid = (
        src_finite
        & dst_finite
        & (src_var > src_tol)
        & (dst_var > dst_tol)
        & (explained > eps * dst_var)
        & torch.isfinite(dst_mat_src).flatten(-2).all(-1)
    )
    eye = torch.eye(3, dtype=dtype, device=dst_mat_src.device)
    dst_mat_src = torch.where(valid[..., None, None], dst_mat_src, eye)
    return dst_mat_src, valid


def transform_points(mat: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply affine matrices to 2-D points.

    Args:
        mat: affine matrices of shape (..., 3, 3) (last row ``[0, 0, 1]``; it is not read).
        points: points of shape (..., N, 2); leading dims broadcast with ``mat``.

    Returns:
        the transformed points, shape (..., N, 2).

    Example:
        >>> mat = torch.tensor([[2.0, 0.0, 1.0], [0.0, 2.0, -1.0], [0.0, 0.0, 1.0]])
        >>> transform_points(mat, torch.tensor([[1.0, 1.0], [0.0, 0.5]]))
        tensor([[3., 1.],
                [1., 0.]])
    """
    _check_matrix(mat, "mat")
    _check_points(points, "points")
    linear = mat[..., :2, :2]  # [..., 2, 2]
    shift = mat[..., :2, 2]  # [..., 2]
    return points.to(mat.dtype) @ linear.transpose(-1, -2) + shift.unsqueeze(-2)


def invert_affine(mat: torch.Tensor) -> torch.Tensor:
    """Inverse of affine matrices (..., 3, 3), e.g. ``crop_mat`` -> crop-to-image ("uncrop").

    Example:
        >>> invert_affine(torch.tensor([[2.0, 0.0, 4.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]]))[:2].abs()
        tensor([[0.5000, 0.0000, 2.0000],
                [0.0000, 0.5000, 0.0000]])
    """
    _check_matrix(mat, "mat")
    last = torch.zeros_like(mat[..., 2:, :])
    last[..., 2] = 1
    return torch.cat([invert_affine_2x3(mat), last], dim=-2)


def valid_slots(valid: torch.Tensor) -> torch.Tensor:
    """Flat indices ``[N]`` (int64, ascending) of the True entries of ``valid [B, K]``: slot = frame * K + k.

    N depends on the data (a symbolic size under ``torch.export``), so what follows works
    for the faces that exist only.
    """
    return valid.reshape(-1).nonzero()[:, 0]


def warp_crops(frames: torch.Tensor, crop_mat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Cut K affine-warped crops out of every frame (see :func:`sample_crops` for the semantics).

    Args:
        frames: images of shape (B, C, H, W), uint8 or floating point (e.g. RGB 0-255).
        crop_mat: affine image -> crop matrices of shape (B, K, 3, 3).
        size: crop ``(h, w)`` in pixels.

    Returns:
        crops of shape (B, K, C, h, w), float32 (float64 for float64 frames).

    Example:
        >>> frames = torch.arange(16.0).view(1, 1, 4, 4)
        >>> shift = torch.tensor([[[[1.0, 0.0, -1.0], [0.0, 1.0, -2.0], [0.0, 0.0, 1.0]]]])
        >>> warp_crops(frames, shift, (2, 3))[0, 0, 0]
        tensor([[ 9., 10., 11.],
                [13., 14., 15.]])
    """
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a torch.Tensor, got {type(frames).__name__}")
    if frames.ndim != 4:
        raise ValueError(f"frames must have shape (B, C, H, W), got {tuple(frames.shape)}")
    if frames.dtype != torch.uint8 and not frames.is_floating_point():
        raise TypeError(f"frames must be uint8 or floating point, got {frames.dtype}")
    _check_matrix(crop_mat, "crop_mat")
    if crop_mat.ndim != 4 or crop_mat.shape[0] != frames.shape[0]:
        raise ValueError(
            f"crop_mat must have shape (B, K, 3, 3) with B = frames.shape[0] = {frames.shape[0]}, "
            f"got {tuple(crop_mat.shape)}"
        )
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"size must be two positive ints (h, w), got {size!r}")
    batch, k = crop_mat.shape[:2]
    frame_index = torch.arange(batch, device=frames.device).repeat_interleave(k)  # [B*K]
    crops = sample_crops(frames, crop_mat.reshape(batch * k, 3, 3), frame_index, size)
    return crops.view(batch, k, *crops.shape[1:])
