"""Medusa's crop models: the DECA box crop and the ArcFace/MICA aligned crop."""

from __future__ import annotations

import torch
from torch import nn

from facecrop.crops import TEMPLATE
from facecrop.detector import SCRFDetector
from facecrop.eager import as_detector, run_eager
from facecrop.landmarks import LandmarkHead
from facecrop.pipeline import FacePipeline

_KEYS = ("conf", "bbox", "lms", "imgs_crop", "crop_mat")


def _square(output_size) -> int:
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(size) != 2 or size[0] != size[1] or size[0] <= 0:
        raise ValueError(f"output_size must be a positive square (S, S), got {output_size!r}")
    return int(size[0])


class BboxCropModel(nn.Module):
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
        self.pipeline = FacePipeline(self.detector.head, landmarks, "bbox", _square(output_size))
        self.pipeline.to(self.detector.device)

    def forward(self, imgs) -> dict:
        return run_eager(self.pipeline, self.detector, imgs, _KEYS)

    def __repr__(self) -> str:
        return f"BboxCropModel({self.pipeline.extra_repr()}, detector={self.detector!r})"


class AlignCropModel(nn.Module):
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
        self.pipeline = FacePipeline(self.detector.head, None, "align", _square(output_size), template)
        self.pipeline.to(self.detector.device)

    def forward(self, imgs) -> dict:
        return run_eager(self.pipeline, self.detector, imgs, _KEYS)

    def __repr__(self) -> str:
        return f"AlignCropModel({self.pipeline.extra_repr()}, detector={self.detector!r})"
