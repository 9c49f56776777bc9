"""Turn what users pass as "images" into batches of RGB tensors.

Accepted: an image path; an RGB tensor ``[3, H, W]`` or ``[B, 3, H, W]``
(uint8, or float in 0-255); a NumPy array ``[H, W, 3]`` or ``[B, H, W, 3]``
(uint8 or float, RGB); or a list of any of these, possibly of different sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def load_image(path: str | Path) -> torch.Tensor:
    """Read an image file as RGB uint8 ``[3, H, W]`` (with PIL: torchvision's decoders are deprecated)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot decode image {path}: {err}") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


def _as_tensor(img) -> torch.Tensor:
    """One item -> ``[B, 3, H, W]`` tensor (uint8 or float)."""
    if isinstance(img, (str, Path)):
        return load_image(img)[None]
    if isinstance(img, np.ndarray):
        if img.ndim not in (3, 4) or img.shape[-1] != 3:
            raise ValueError(f"expected a NumPy image [H, W, 3] or [B, H, W, 3] (RGB), got shape {img.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(img))
        tensor = tensor.permute(2, 0, 1)[None] if img.ndim == 3 else tensor.permute(0, 3, 1, 2)
    elif isinstance(img, torch.Tensor):
        if img.ndim not in (3, 4) or img.shape[-3] != 3:
            raise ValueError(f"expected an image tensor [3, H, W] or [B, 3, H, W] (RGB), got shape {tuple(img.shape)}")
        tensor = img[None] if img.ndim == 3 else img
    else:
        raise TypeError(f"expected an image path, tensor or NumPy array, got {type(img).__name__}")
    if tensor.dtype != torch.uint8 and not tensor.dtype.is_floating_point:
        raise TypeError(f"expected uint8 or float pixels (0-255), got dtype {tensor.dtype}")
    return tensor


def to_batches(imgs, device: str | torch.device = "cpu") -> list[torch.Tensor]:
    """Group images into batches of equal size, keeping their order.

    Returns:
        list of RGB tensors ``[b, 3, H, W]`` on ``device`` whose ``b`` sum to the
        number of images; consecutive images of one size share a batch.
    """
    items = list(imgs) if isinstance(imgs, (list, tuple)) else [imgs]
    if not items:
        raise ValueError("expected at least one image, got an empty list")
    batches: list[list[torch.Tensor]] = []
    for item in items:
        tensor = _as_tensor(item)
        if batches and batches[-1][-1].shape[1:] == tensor.shape[1:] and batches[-1][-1].dtype == tensor.dtype:
            batches[-1].append(tensor)
        else:
            batches.append([tensor])
    return [torch.cat(group).to(device) for group in batches]
