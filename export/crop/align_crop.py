"""``AlignCropModel``: the ArcFace/MICA aligned crop (Medusa's ``medusa.crop.align_crop``).

The crop matrix is :func:`facecrop.crop.core.align_crop_matrix`, the function the fused
module runs too.
"""

from __future__ import annotations

from facecrop.crop.base import CROP_KEYS, BaseCropModel
from facecrop.crop.core import TEMPLATE, square_side
from facecrop.detect.base import as_detector, run_eager
from facecrop.detect.scrfd import SCRFDetector
from facecrop.pipeline import FacePipeline

__all__ = ["TEMPLATE", "AlignCropModel"]


class AlignCropModel(BaseCropModel):
    """ArcFace/MICA aligned crop: similarity of the 5 detector points to ``template``.

    Args:
        output_size: crop ``(S, S)``; the template is scaled by ``S / 112``.
        template: ``[5, 2]`` points in 112x112 crop space (default :data:`TEMPLATE`).
        detector: :class:`SCRFDetector` or an instance.

    ``forward(imgs)`` adds ``imgs_crop [N, 3, S, S]`` uint8 and ``crop_mat [N, 3, 3]``
    to the detector's outputs; ``lms`` stay in image space.
    """

    def __init__(self, output_size=(112, 112), template=TEMPLATE, detector=SCRFDetector, device="cpu"):
        super().__init__()
        self.detector = as_detector(detector, device)
        self.pipeline = FacePipeline(self.detector.head, None, "align", square_side(output_size), template)
        self.pipeline.to(self.detector.device)

    def forward(self, imgs) -> dict:
        return run_eager(self.pipeline, self.detector, imgs, CROP_KEYS)

    def __repr__(self) -> str:
        return f"AlignCropModel({self.pipeline.extra_repr()}, detector={self.detector!r})"
