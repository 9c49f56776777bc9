"""What the crop models share: the keys they return and how they run on a video."""

from __future__ import annotations

from torch import nn

from facecrop.detect.base import run_on_video

CROP_KEYS = ("conf", "bbox", "lms", "imgs_crop", "crop_mat")


class BaseCropModel(nn.Module):
    """Base of the crop models (Medusa's ``medusa.crop.base.BaseCropModel``)."""

    def crop_faces_video(self, vid, batch_size: int = 32, save_imgs: bool = False):
        """Crops of every face in every frame of a video (a path, or a :class:`~facecrop.io.VideoLoader`),
        as a ``BatchResults``; ``save_imgs=True`` keeps the frames too (as ``imgs``)."""
        return run_on_video(self, vid, batch_size, save_imgs)
