"""What the crop models share: the keys they return and how they run on a video."""

from __future__ import annotations

from torch import nn

CROP_KEYS = ("conf", "bbox", "lms", "imgs_crop", "crop_mat")


class BaseCropModel(nn.Module):
    """Base of the crop models (Medusa's ``medusa.crop.base.BaseCropModel``)."""
