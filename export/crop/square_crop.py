"""``RandomSquareCropModel`` (Medusa's ``medusa.crop.square_crop``): a random square of the scene, resized."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from facecrop.crop.base import BaseCropModel
from facecrop.crop.core import square_side
from facecrop.defaults import DEVICE
from facecrop.io import to_batches


class RandomSquareCropModel(BaseCropModel):
    """The largest square of each image at a random offset along its longer side, resized.

    Args:
        output_size: ``(S, S)``.
        device: where the crops are made (kept as given).

    ``forward(imgs)`` returns ``{'imgs_crop': [B, 3, S, S]}`` (float, antialiased bilinear resize,
    as torchvision's ``Resize`` that Medusa uses). Offsets come from NumPy's global random state,
    like Medusa's: seed it for repeatable crops.
    """

    def __init__(self, output_size=(224, 224), device=DEVICE):
        super().__init__()
        self.output_size = output_size
        self.side = square_side(output_size)
        self.device = device

    def __str__(self) -> str:
        return "randomsquarecrop"

    def forward(self, imgs) -> dict:
        out = []
        for batch in to_batches(imgs, self.device):
            for img in batch.float():  # [3, H, W]
                height, width = img.shape[1:]
                side = min(height, width)
                top = np.random.randint(height - side) if height > side else 0
                left = np.random.randint(width - side) if width > side else 0
                square = img[None, :, top:top + side, left:left + side]
                out.append(F.interpolate(square, size=(self.side, self.side), mode="bilinear", antialias=True)[0])
        return {"imgs_crop": torch.stack(out)}
