"""``BboxCropModel``: the DECA/EMOCA box crop (Medusa's ``medusa.crop.bbox_crop``).

The box and crop matrix are :func:`facecrop.crop.core.bbox_crop_matrix`, the function the
fused module runs too.
"""

from __future__ import annotations

from facecrop.crop.base import CROP_KEYS, BaseCropModel
from facecrop.crop.core import square_side
from facecrop.detect.base import as_detector, run_eager
from facecrop.detect.scrfd import SCRFDetector
from facecrop.landmark.core import LandmarkHead
from facecrop.pipeline import FacePipeline

__all__ = ["BboxCropModel"]


class BboxCropModel(BaseCropModel):
    """DECA/EMOCA box crop around the landmarks (``bbox`` becomes the square box).

    Args:
        lms_model_name: ``'2d106det'``, ``'1k3d68'`` or a landmark ONNX path.
        output_size: crop ``(S, S)``.
        detector: :class:`SCRFDetector` or an instance.

    ``forward(imgs)`` adds ``imgs_crop [N, 3, S, S]`` uint8 and ``crop_mat [N, 3, 3]``
    (image -> crop pixels) to the landmark model's outputs.
    """

    def __init__(self, lms_model_name="2d106det", output_size=(224, 224), detector=SCRFDetector,
                 device="cpu", model_dir=None):
        super().__init__()
        from facecrop.zoo import resolve_model

        self.detector = as_detector(detector, device)
        landmarks = LandmarkHead(resolve_model(lms_model_name, model_dir=model_dir))
        self.pipeline = FacePipeline(self.detector.head, landmarks, "bbox", square_side(output_size))
        self.pipeline.to(self.detector.device)

    def forward(self, imgs) -> dict:
        return run_eager(self.pipeline, self.detector, imgs, CROP_KEYS)

    def __repr__(self) -> str:
        return f"BboxCropModel({self.pipeline.extra_repr()}, detector={self.detector!r})"
