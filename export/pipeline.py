"""The end-to-end module: frames in, padded faces, landmarks and crops out.

One ``nn.Module`` with static shapes (``K = max_faces`` rows per frame and a
validity mask), built from the same functional cores as the eager
Medusa-compatible classes, so the eager API, ``torch.compile``,
``torch.export``, AOTInductor and TensorRT all run the code the tests check.

Output conventions (``B`` frames, ``K`` faces, ``L`` points, ``S`` crop side):
``valid [B, K]`` bool; ``conf [B, K]``; ``bbox [B, K, 4]`` (x1, y1, x2, y2;
the square DECA box for box crops); ``lms [B, K, L, 2]`` (x, y); ``overflow
[B]`` bool (the frame had more than K faces: the K best are kept, the rest
left out); ``crop_mat [B, K, 3, 3]`` (frame pixels -> crop pixels);
``imgs_crop [B, K, 3, S, S]`` uint8 RGB. Rows of invalid faces are zero.
Frames are RGB ``[B, 3, H, W]``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from facecrop.crop.core import TEMPLATE, align_crop_matrix, bbox_crop_matrix
from facecrop.detect.core import SCRFDHead, as_uint8
from facecrop.geometry import sample_crops, warp_crops
from facecrop.landmark.core import LandmarkHead
from facecrop.pipeline_config import PipelineConfig
from facecrop.runtime.bundle import MAX_SIDE, MIN_SIDE

CROP_KINDS = ("none", "align", "bbox")
DEFAULT_CROP_SIZE = {"align": 112, "bbox": 224}


def trim_faces(faces: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the trailing face columns that are invalid in every frame (eager use only).

    Valid faces come first in each frame, so this keeps every valid face and
    spares the landmark net and the warps the padding rows. The width depends
    on the data, so traced modules never call it.
    """
    keep = int(faces["valid"].sum(1).max()) if faces["valid"].numel() else 0
    return {k: (v[:, :keep] if v.ndim >= 2 else v) for k, v in faces.items()}


def check_frame_batch(frames: torch.Tensor) -> None:
    """Raise ValueError unless ``frames`` is RGB ``[B, 3, H, W]`` (uint8 or float) with sides in the bundle bounds."""
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a torch.Tensor, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must have shape [B, 3, H, W] (RGB, B >= 1), got {tuple(frames.shape)}")
    if frames.dtype != torch.uint8 and not frames.is_floating_point():
        raise TypeError(f"frames must be uint8 or float (0-255), got {frames.dtype}")
    height, width = frames.shape[2:]
    if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
        raise ValueError(f"frame size {width}x{height} is outside {MIN_SIDE} to {MAX_SIDE} px a side")


def _slot_crops(frames: torch.Tensor, crop_mat: torch.Tensor, valid: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 crops ``[B, K, 3, size, size]`` of ``crop_mat [B, K, 3, 3]``; rows where ``valid [B, K]`` is False are zero."""
    crops = warp_crops(frames, crop_mat, (size, size))  # [B, K, 3, S, S]
    crops = crops * valid[..., None, None, None].to(crops.dtype)
    return crops.round_().clamp_(0, 255).to(torch.uint8)


def cut_crops(frames: torch.Tensor, crop_mat: torch.Tensor, valid: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 crops ``[B, K, 3, size, size]`` of the faces, gathered from the uint8 frames; invalid rows are zero.

    Compiled or exported, only about as many crops as the batch has faces are sampled: the valid
    slots are packed first, and ``torch.cond`` picks 1, 2 or 4 crops a frame on average, or all K
    slots, as the faces need; the crops are then scattered back to their slots. At 1-6 faces a
    frame (3.5 on average, K = 8) this samples 32 crops a batch of 8 where sampling the first 1, 4
    or K slots of every frame sampled 64. Sampling exactly the valid faces (a data-dependent count)
    compiles into several unfused kernels that were 2x slower than sampling every slot. Eager
    callers trim the unused slots first (:func:`trim_faces`), so there every slot is sampled at
    once; both paths give the same crops (every bundle is checked against the eager module when it
    is written).
    """
    if not torch.compiler.is_compiling():
        return _slot_crops(frames, crop_mat, valid, size)
    flat_valid = valid.reshape(-1)
    packed = torch.argsort((~flat_valid).to(torch.uint8), stable=True)  # [B*K] slots, the valid ones first
    # The branches take the frames as [B, H, W, 3], contiguous for channels-last frames, so that they
    # read them in place whatever layout a branch assumes for its inputs.
    return _packed_crops(frames.permute(0, 2, 3, 1), crop_mat, valid, packed, size, 1)


def _packed_crops(pixels, crop_mat, valid, packed, size: int, per_frame: int) -> torch.Tensor:
    """Sample ``B * per_frame`` crops, the first of ``packed``, when the batch has no more faces, else try twice as many."""
    batch, k = valid.shape
    if per_frame >= k:
        return _slot_crops(pixels.permute(0, 3, 1, 2), crop_mat, valid, size)

    def fewer(pixels, crop_mat, valid, packed):
        # The first B * per_frame of ``packed``. Sizes come from the branch's own inputs (a slice by
        # B * per_frame gets a size of its own that export assumes to be >= 2: batch 1 then fails).
        slots = packed.view(k, -1)[:per_frame].reshape(-1)
        crops = sample_crops(pixels.permute(0, 3, 1, 2), crop_mat.reshape(-1, 3, 3)[slots], slots // k, (size, size))
        crops = crops * valid.reshape(-1)[slots][:, None, None, None].to(crops.dtype)
        crops = crops.round_().clamp_(0, 255).to(torch.uint8)
        out = crops.new_zeros((valid.numel(), *crops.shape[1:])).index_copy_(0, slots, crops)
        return out.view(*valid.shape, *crops.shape[1:])

    def more(pixels, crop_mat, valid, packed):
        return _packed_crops(pixels, crop_mat, valid, packed, size, 2 * per_frame)

    return torch.cond(valid.sum() > batch * per_frame, more, fewer, (pixels, crop_mat, valid, packed))


class FacePipeline(nn.Module):
    """Detector, optional landmarks and optional crop fused into one static-shape module.

    Args:
        detector: the SCRFD head (fixes det size, thresholds and ``K``).
        landmarks: a landmark head, or ``None`` to keep the detector's 5 points.
        crop: ``'none'``, ``'align'`` (similarity of the 5 detector points to
            ``template``) or ``'bbox'`` (DECA box from the landmarks; needs ``landmarks``).
        crop_size: side of the square crops (default 112 for align, 224 for bbox).
        template: ``[5, 2]`` aligned-crop template in 112x112 space.
        box_scale: DECA's ``(scale, scale_orig)`` enlargements of the landmark extent (box crop).

    ``forward(frames)`` returns a tuple in the order of ``output_names`` (what
    exported programs carry); :meth:`forward_dict` returns the same as a dict.
    """

    def __init__(
        self,
        detector: SCRFDHead,
        landmarks: Optional[LandmarkHead] = None,
        crop: str = "none",
        crop_size: Optional[int] = None,
        template: torch.Tensor = TEMPLATE,
        box_scale: tuple[float, float] = (1.25, 1.1),
    ):
        super().__init__()
        if crop not in CROP_KINDS:
            raise ValueError(f"crop must be one of {CROP_KINDS}, got {crop!r}")
        if crop == "bbox" and landmarks is None:
            raise ValueError("crop='bbox' needs a landmark model (the DECA box is built from the landmarks)")
        template = torch.as_tensor(template, dtype=torch.float32)
        if template.shape != (5, 2):
            raise ValueError(f"template must have shape (5, 2), got {tuple(template.shape)}")
        self.detector = detector
        self.landmarks = landmarks
        self.crop = crop
        self.crop_size = int(crop_size or DEFAULT_CROP_SIZE.get(crop, 0))
        self.box_scale = (float(box_scale[0]), float(box_scale[1]))
        self.register_buffer("align_template", template, persistent=False)
        names = ["valid", "conf", "bbox", "lms", "overflow"]
        if crop != "none":
            names += ["crop_mat", "imgs_crop"]
        self.output_names = tuple(names)

    def forward_dict(self, frames: torch.Tensor, trim: bool = False,
                     landmark_crops: bool = False) -> dict[str, torch.Tensor]:
        """Run the pipeline; ``trim=True`` (eager only) skips padding columns, see :func:`trim_faces`.

        ``landmark_crops=True`` (eager only) adds the landmark net's 192x192 input crops and their
        matrices as ``lms_imgs_crop [B, K, 3, S, S]`` (uint8) and ``lms_crop_mat [B, K, 3, 3]``.
        """
        check_frame_batch(frames)
        frames = as_uint8(frames)  # InsightFace's numbers come from uint8 frames
        faces = self.detector(frames)
        if trim:
            faces = trim_faces(faces)
        valid = faces["valid"]
        out = {"valid": valid, "conf": faces["conf"], "bbox": faces["bbox"], "lms": faces["lms"],
               "overflow": faces["overflow"]}
        if self.landmarks is not None and landmark_crops:
            out["lms"], out["lms_imgs_crop"], out["lms_crop_mat"] = self.landmarks(
                frames, faces["bbox"], valid, return_crops=True)
        elif self.landmarks is not None:
            out["lms"] = self.landmarks(frames, faces["bbox"], valid)
        if self.crop == "align":
            crop_mat, ok = align_crop_matrix(faces["lms"], self.crop_size, self.align_template)
        elif self.crop == "bbox":
            out["bbox"], crop_mat = bbox_crop_matrix(out["lms"], self.crop_size, *self.box_scale)
            ok = torch.ones_like(valid)
        if self.crop != "none":
            valid = valid & ok
            out["valid"] = valid
            mask = valid.to(crop_mat.dtype)
            out["crop_mat"] = crop_mat * mask[..., None, None]
            out["bbox"] = out["bbox"] * mask[..., None]
            out["imgs_crop"] = cut_crops(frames, out["crop_mat"], valid, self.crop_size)
        return out

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.forward_dict(frames)
        return tuple(out[name] for name in self.output_names)

    def extra_repr(self) -> str:
        return f"crop={self.crop!r}, crop_size={self.crop_size}, outputs={self.output_names}"


def build_pipeline(config: PipelineConfig, model_dir=None) -> FacePipeline:
    """Build the end-to-end module a bundle is made from.

    Model names are resolved (and SHA-256 checked) by :func:`facecrop.zoo.resolve_model`.
    """
    from facecrop.zoo import resolve_model

    if config.crop == "bbox" and config.landmarks is None:
        raise ValueError("crop='bbox' needs landmarks ('2d106det' or '1k3d68')")
    detector = SCRFDHead(
        resolve_model(config.detector, model_dir=model_dir),
        det_size=tuple(config.det_size),
        det_threshold=config.det_threshold,
        nms_threshold=config.nms_threshold,
        max_faces=config.max_faces,
    )
    landmarks = LandmarkHead(resolve_model(config.landmarks, model_dir=model_dir)) if config.landmarks else None
    return FacePipeline(detector, landmarks, config.crop, config.crop_size).eval()
