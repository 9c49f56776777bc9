"""``BboxCropModel`` (the DECA/EMOCA box crop) and ``InsightfaceBboxCropModel`` (Medusa's ``medusa.crop.bbox_crop``).

The box and crop matrix are :func:`facecrop.crop.core.bbox_crop_matrix`, the function the
fused module runs too.
"""

from __future__ import annotations

import torch

from facecrop.crop.base import CROP_KEYS, BaseCropModel
from facecrop.crop.core import square_side
from facecrop.defaults import DEVICE
from facecrop.detect.base import ragged, rows_per_image, run_eager
from facecrop.detect.core import as_uint8
from facecrop.detect.scrfd import SCRFDetector, as_detector
from facecrop.geometry import sample_crops
from facecrop.landmark.core import LandmarkHead, landmark_crop_matrix
from facecrop.pipeline import FacePipeline

__all__ = ["BboxCropModel", "InsightfaceBboxCropModel"]


class BboxCropModel(BaseCropModel):
    """DECA/EMOCA box crop around the landmarks (``bbox`` becomes the square box).

    Args:
        lms_model_name: ``'2d106det'``, ``'1k3d68'`` (or a landmark ONNX path).
        output_size: crop ``(S, S)``.
        scale, scale_orig: DECA's enlargements of the landmark extent (1.25 and 1.1).
        device: where the nets run (kept as given).
        detector: facecrop's extra: :class:`SCRFDetector` or an instance.
        model_dir: where named models are looked up.

    ``forward(imgs)`` adds ``imgs_crop [N, 3, S, S]`` uint8 and ``crop_mat [N, 3, 3]``
    (image -> crop pixels) to the landmark model's outputs. With no face: ``n_img`` and
    ``lms``, ``imgs_crop``, ``crop_mat`` set to ``None``.
    """

    def __init__(self, lms_model_name="2d106det", output_size=(224, 224), scale=1.25, scale_orig=1.1,
                 device=DEVICE, detector=SCRFDetector, model_dir=None):
        super().__init__()
        from facecrop.zoo import resolve_model

        self.output_size, self.scale, self.scale_orig, self.device = output_size, scale, scale_orig, device
        self.detector = as_detector(detector, device)
        landmarks = LandmarkHead(resolve_model(lms_model_name, model_dir=model_dir))
        self.pipeline = FacePipeline(self.detector.head, landmarks, "bbox", square_side(output_size),
                                     box_scale=(scale, scale_orig)).to(device)

    def __str__(self) -> str:
        return "bboxcrop"

    def forward(self, imgs) -> dict:
        return run_eager(self.pipeline, self.detector, imgs, CROP_KEYS, ("lms", "imgs_crop", "crop_mat"))

    def __repr__(self) -> str:
        return f"BboxCropModel({self.pipeline.extra_repr()}, detector={self.detector!r})"


class InsightfaceBboxCropModel(BaseCropModel):
    """InsightFace's crop around each detected box, as its landmark models take it.

    ``scale = output_size / (scale_factor * max(w, h))``, the box centre at the crop centre
    (:func:`facecrop.landmark.core.landmark_crop_matrix`).

    Args:
        output_size: crop ``(S, S)`` (192 for the landmark nets).
        scale_factor: the crop's side over the box's longer side.
        device: where the nets run (kept as given).
        detector: facecrop's extra: :class:`SCRFDetector` or an instance.

    ``forward(imgs)`` adds ``imgs_crop [N, 3, S, S]`` (uint8) and ``crop_mat [N, 3, 3]`` to the
    detector's outputs; with no face, ``n_img``, ``imgs_crop=None`` and ``crop_mat=None``.
    """

    def __init__(self, output_size=(192, 192), scale_factor=1.5, device=DEVICE, detector=SCRFDetector):
        super().__init__()
        self.output_size, self.scale_factor, self.device = output_size, scale_factor, device
        self.side = square_side(output_size)
        self.detector = as_detector(detector, device)

    def __str__(self) -> str:
        return "insightfacebboxcrop"

    def forward(self, imgs) -> dict:
        def run_batch(frames):
            out = ragged(self.detector.detect_padded(frames), ("conf", "bbox", "lms"))
            out["crop_mat"] = landmark_crop_matrix(out["bbox"], self.side, self.scale_factor)
            crops = sample_crops(as_uint8(frames), out["crop_mat"], out["img_idx"], (self.side, self.side))
            out["imgs_crop"] = crops.round().clamp(0, 255).to(torch.uint8)
            return out

        return rows_per_image(imgs, self.device, run_batch, ("imgs_crop", "crop_mat"))
