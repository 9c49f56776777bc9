"""``RetinafaceLandmarkModel``: Medusa's landmark API (2d106det / 1k3d68)."""

from __future__ import annotations

import torch
from torch import nn

from facecrop.detect.scrfd import SCRFDetector
from facecrop.detect.base import as_detector, run_eager
from facecrop.landmark.core import LandmarkHead
from facecrop.pipeline import FacePipeline


class RetinafaceLandmarkModel(nn.Module):
    """Detect faces, then find 106 (``'2d106det'``) or 68 (``'1k3d68'``) landmarks per face.

    Args:
        model_name: ``'2d106det'``, ``'1k3d68'`` or a path to such an ONNX file.
        detector: :class:`SCRFDetector` (built with its defaults) or an instance.
        device: where the nets run.
        model_dir: where named models are looked up.

    ``forward(imgs)`` returns the detector's dict with ``lms [N, 106, 2]`` or
    ``[N, 68, 2]`` in input-image pixels.

    Example:
        >>> model = RetinafaceLandmarkModel("2d106det", detector=SCRFDetector("det_500m"))  # doctest: +SKIP
        >>> model("photo.jpg")["lms"].shape  # doctest: +SKIP
        torch.Size([6, 106, 2])
    """

    def __init__(self, model_name: str = "2d106det", detector=SCRFDetector, device="cpu", model_dir=None):
        super().__init__()
        from facecrop.zoo import resolve_model

        self.detector = as_detector(detector, device)
        self.model_path = resolve_model(model_name, model_dir=model_dir)
        self.pipeline = FacePipeline(self.detector.head, LandmarkHead(self.model_path)).to(self.detector.device)

    def forward(self, imgs) -> dict:
        return run_eager(self.pipeline, self.detector, imgs, ("conf", "bbox", "lms"))

    def __repr__(self) -> str:
        return f"RetinafaceLandmarkModel(model={str(self.model_path)!r}, detector={self.detector!r})"
