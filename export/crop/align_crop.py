"""``AlignCropModel``: the ArcFace/MICA aligned crop (Medusa's ``medusa.crop.align_crop``).

The crop matrix is :func:`facecrop.crop.core.align_crop_matrix`, the function the fused
module runs too.
"""

from __future__ import annotations

import torch

from facecrop.crop.base import CROP_KEYS, BaseCropModel
from facecrop.crop.core import TEMPLATE, square_side
from facecrop.defaults import DEVICE
from facecrop.detect.base import run_eager
from facecrop.detect.scrfd import SCRFDetector, as_detector
from facecrop.pipeline import FacePipeline

__all__ = ["TEMPLATE", "AlignCropModel"]


class AlignCropModel(BaseCropModel):
    """ArcFace/MICA aligned crop: similarity of the 5 detector points to ``template``.

    Args:
        output_size: crop ``(S, S)``; the template is scaled by ``S / 112``.
        template: ``[5, 2]`` points in 112x112 crop space (default :data:`TEMPLATE`).
        detector: :class:`SCRFDetector` (built with ``device`` and ``kwargs``) or an instance.
        device: where the nets run (kept as given).
        **kwargs: passed to the detector class, e.g. ``det_size=(224, 224)``.

    Attributes:
        template: the template scaled to ``output_size``, ``[5, 2]``.

    ``forward(imgs)`` adds ``imgs_crop [N, 3, S, S]`` (float32 like Medusa's, whole grey levels)
    and ``crop_mat [N, 3, 3]`` (image -> crop pixels) to the detector's outputs; ``lms`` stay in
    image space. With no face: ``n_img``, ``imgs_crop=None``, ``crop_mat=None``.
    """

    def __init__(self, output_size=(112, 112), template=TEMPLATE, detector=SCRFDetector, device=DEVICE, **kwargs):
        super().__init__()
        self.output_size = output_size
        side = square_side(output_size)
        template = torch.as_tensor(template, dtype=torch.float32)
        self.template = template * (side / 112.0)
        self.device = device
        self.detector = as_detector(detector, device, **kwargs)
        self.pipeline = FacePipeline(self.detector.head, None, "align", side, template).to(device)

    def __str__(self) -> str:
        return "aligncrop"

    def forward(self, imgs) -> dict:
        out = run_eager(self.pipeline, self.detector, imgs, CROP_KEYS, ("imgs_crop", "crop_mat"))
        if out.get("imgs_crop") is not None:
            out["imgs_crop"] = out["imgs_crop"].float()
        return out

    def __repr__(self) -> str:
        return f"AlignCropModel({self.pipeline.extra_repr()}, detector={self.detector!r})"
