"""``RetinafaceLandmarkModel``: Medusa's landmark API (2d106det / 1k3d68)."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from facecrop.defaults import DEVICE
from facecrop.detect.base import run_eager
from facecrop.detect.scrfd import SCRFDetector, as_detector
from facecrop.landmark.core import LandmarkHead
from facecrop.pipeline import FacePipeline

_KEYS = ("conf", "bbox", "lms", "lms_imgs_crop", "lms_crop_mat")


class RetinafaceLandmarkModel(nn.Module):
    """Detect faces, then find 106 (``'2d106det'``) or 68 (``'1k3d68'``) landmarks per face.

    Args:
        model_name: ``'2d106det'`` or ``'1k3d68'`` (facecrop also takes an ``.onnx`` path here).
        model_path: an ONNX file to use instead; ``model_name`` becomes its stem, as in Medusa.
        device: where the nets run (kept as given).
        detector: facecrop's extra: :class:`SCRFDetector` (built with its defaults) or an instance.
        model_dir: where named models are looked up.

    ``forward(imgs)`` returns, as Medusa's: ``conf [N]``, ``bbox [N, 4]``, ``lms [N, 106, 2]`` or
    ``[N, 68, 2]`` in input-image pixels, ``img_idx [N]``, ``n_img``, and the landmark net's inputs
    ``imgs_crop [N, 3, 192, 192]`` (uint8) with their ``crop_mat [N, 3, 3]``. With no face:
    ``n_img`` and ``lms``, ``imgs_crop``, ``crop_mat`` set to ``None``.

    Example:
        >>> model = RetinafaceLandmarkModel("2d106det", detector=SCRFDetector(model_path="det_500m"))  # doctest: +SKIP
        >>> model("photo.jpg")["lms"].shape  # doctest: +SKIP
        torch.Size([6, 106, 2])
    """

    def __init__(self, model_name: str = "2d106det", model_path: str | os.PathLike | None = None,
                 device=DEVICE, detector=SCRFDetector, model_dir=None):
        super().__init__()
        from facecrop.zoo import resolve_model

        if model_path is not None:
            model_name = Path(model_path).stem.split(".")[0]
        self.model_name = Path(model_name).stem if str(model_name).endswith(".onnx") else model_name
        self.device = device
        self.detector = as_detector(detector, device)
        self.model_path = resolve_model(model_path if model_path is not None else model_name, model_dir=model_dir)
        self.pipeline = FacePipeline(self.detector.head, LandmarkHead(self.model_path)).to(device)

    def forward(self, imgs) -> dict:
        out = run_eager(self.pipeline, self.detector, imgs, _KEYS, ("lms", "imgs_crop", "crop_mat"),
                        landmark_crops=True)
        if "lms_imgs_crop" in out:
            out["imgs_crop"], out["crop_mat"] = out.pop("lms_imgs_crop"), out.pop("lms_crop_mat")
        return out

    def __repr__(self) -> str:
        return f"RetinafaceLandmarkModel(model={str(self.model_path)!r}, detector={self.detector!r})"
