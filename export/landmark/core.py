"""InsightFace landmark nets (2d106det, 1k3d68) as static-shape tensor functions.

Per face: a square crop of side ``1.5 * max(w, h)`` around the box centre is
warped to 192x192 (bilinear, zero border), the net sees raw 0-255 RGB (the
MXNet graphs normalise inside), and its output ``(p + 1) * 96`` in crop pixels
is mapped back with the inverse crop matrix. Shapes are fixed by the number of
frames and ``K`` faces per frame, so the fused module can reuse this as is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from facecrop.convert import ConvertedNet, convert_onnx, load_onnx
from facecrop.geometry import invert_affine, sample_crops, transform_points, valid_slots, warp_crops


@dataclass(frozen=True)
class LandmarkConfig:
    """What a landmark file is, read once from its output size.

    Attributes:
        input_size: side of the square input crop (192 for the official files).
        point_dims: values per point in the output (2 for 2d106det, 3 for 1k3d68).
        num_points: points in the output (106, or 1103 for 1k3d68).
        keep_last: how many of the last points are the landmarks (106, or 68).
    """

    input_size: int
    point_dims: int
    num_points: int
    keep_last: int


def read_landmark_config(output_size: int, input_size: int) -> LandmarkConfig:
    """Config from the flat output size of one face (212 -> 106 2-D points, 3309 -> 68 of 1103 3-D points).

    Raises:
        ValueError: the output is neither the 2d106det nor the 1k3d68 contract.
    """
    if output_size == 212:
        return LandmarkConfig(input_size, 2, 106, 106)
    if output_size == 3309:
        return LandmarkConfig(input_size, 3, 1103, 68)
    raise ValueError(
        "expected an InsightFace landmark model: one output 'fc1' of 212 values (2d106det, 106 x 2) "
        f"or 3309 values (1k3d68, 1103 x 3); this model outputs {output_size} values per face"
    )


def landmark_crop_matrix(bbox: torch.Tensor, input_size: int = 192, scale_factor: float = 1.5) -> torch.Tensor:
    """Matrix of the landmark crop around each box: image -> crop pixels.

    ``scale = input_size / (scale_factor * max(w, h))``; the box centre goes to the crop centre.

    Args:
        bbox: boxes ``[..., 4]`` (x1, y1, x2, y2) with positive size.

    Returns:
        ``[..., 3, 3]``: ``[[s, 0, c - cx*s], [0, s, c - cy*s], [0, 0, 1]]``, ``c = input_size / 2``.
    """
    size = torch.maximum(bbox[..., 2] - bbox[..., 0], bbox[..., 3] - bbox[..., 1])
    scale = input_size / (size * scale_factor)
    cx = (bbox[..., 0] + bbox[..., 2]) / 2
    cy = (bbox[..., 1] + bbox[..., 3]) / 2
    zero, one = torch.zeros_like(scale), torch.ones_like(scale)
    half = input_size / 2
    rows = [
        torch.stack([scale, zero, half - cx * scale], -1),
        torch.stack([zero, scale, half - cy * scale], -1),
        torch.stack([zero, zero, one], -1),
    ]
    return torch.stack(rows, -2)


def decode_landmarks(raw: torch.Tensor, config: LandmarkConfig) -> torch.Tensor:
    """Net output ``[..., D]`` -> landmarks ``[..., keep_last, 2]`` in crop pixels."""
    points = raw.reshape(raw.shape[:-1] + (config.num_points, config.point_dims))
    points = points[..., -config.keep_last :, :2]
    return (points + 1) * (config.input_size // 2)


class LandmarkHead(nn.Module):
    """Landmarks for ``K`` boxes per frame, static shapes.

    Args:
        model_path: path to a 2d106det / 1k3d68 ONNX file (or the same contract).

    ``forward(frames, bbox, valid)``: frames RGB ``[B, 3, H, W]`` (uint8), bbox
    ``[B, K, 4]``, valid ``[B, K]`` -> landmarks ``[B, K, L, 2]`` in frame pixels
    (rows of invalid faces are zero).
    """

    def __init__(self, model_path):
        super().__init__()
        model = load_onnx(model_path)
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        if len(dims) != 4 or dims[2] != dims[3] or dims[2] <= 0:
            raise ValueError(f"expected a landmark model with a square input [1, 3, S, S], got {dims}")
        size = dims[2]
        self.net: ConvertedNet = convert_onnx(model, size, size)
        with torch.no_grad():
            outputs = self.net(torch.zeros(1, 3, size, size))
        if len(outputs) != 1:
            raise ValueError(f"expected a landmark model with one output 'fc1', got {len(outputs)} outputs")
        self.config = read_landmark_config(outputs[0][0].numel(), size)

    @property
    def num_landmarks(self) -> int:
        return self.config.keep_last

    def forward(self, frames: torch.Tensor, bbox: torch.Tensor, valid: torch.Tensor,
                return_crops: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Landmarks ``[B, K, L, 2]``; with ``return_crops`` also the net's uint8 input crops
        ``[B, K, 3, S, S]`` and their ``crop_mat [B, K, 3, 3]`` (Medusa's landmark model returns them)."""
        batch, faces = valid.shape
        size = self.config.input_size
        # Padding rows get a unit box so their (unused) crop matrix stays finite.
        unit = torch.tensor([0.0, 0.0, 1.0, 1.0], device=bbox.device, dtype=bbox.dtype)
        all_mats = landmark_crop_matrix(torch.where(valid[..., None], bbox, unit), size)  # [B, K, 3, 3]
        # InsightFace warps uint8 frames into uint8 crops; rounding likewise takes the landmark
        # error against it from ~0.2 px to ~0.01 px (the nets are sensitive to sub-level noise).
        # The price: float differences of 1e-6 (another batch size, a fused kernel) can flip a
        # pixel across .5 and move landmarks by ~0.01 px, so landmark outputs of two backends
        # agree to ~0.02 px, not 1e-3.
        # The net, by far the costliest step per face, runs on the faces that exist only, and only
        # their crops are cut (K is 32 by default: most slots are empty).
        slots = valid_slots(valid)  # [N]
        crop_mat = all_mats.reshape(batch * faces, 3, 3)[slots]  # [N, 3, 3]
        crops = sample_crops(frames, crop_mat, slots // faces, (size, size)).round()  # [N, 3, S, S]
        # One blank crop more keeps the net's batch >= 1 (N may be 0) without a data-dependent
        # branch, which is what lets torch.export trace BatchNorm on a batch of symbolic size.
        crops = torch.cat([crops, crops.new_zeros((1,) + crops.shape[1:])])
        raw = self.net(crops)[0][:-1]  # [N, D]
        points = transform_points(invert_affine(crop_mat), decode_landmarks(raw, self.config))  # [N, L, 2]
        padded = points.new_zeros((batch * faces,) + points.shape[1:])
        points = padded.index_copy(0, slots, points).view(batch, faces, *points.shape[1:])
        if not return_crops:
            return points
        all_crops = warp_crops(frames, all_mats, (size, size)).round()  # [B, K, 3, S, S], the same pixels per slot
        return points, all_crops.to(torch.uint8), all_mats  # rows of invalid faces are not meaningful

    def extra_repr(self) -> str:
        return f"config={self.config}"
