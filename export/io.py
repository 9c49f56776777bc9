"""Reading images and videos (Medusa's ``medusa.io``).

:func:`to_batches` turns what users pass as "images" into batches of RGB tensors.
Accepted: an image path; an RGB tensor ``[3, H, W]`` or ``[B, 3, H, W]``
(uint8, or float in 0-255); a NumPy array ``[H, W, 3]`` or ``[B, H, W, 3]``
(uint8 or float, RGB); or a list of any of these, possibly of different sizes.
:class:`VideoLoader` reads a video file in batches of frames.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import av
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


class VideoLoader:
    """Iterate over a video file in batches of RGB frames (decoded with PyAV).

    Args:
        path: video file.
        batch_size: frames per batch (the last batch may be smaller).
        device: device of the returned batches.

    Attributes:
        fps: frame rate (frames per second).
        n_frames: number of frames.
        height, width: frame size in pixels.

    Each iteration opens the file afresh and yields uint8 tensors of shape
    (B, 3, H, W); ``len()`` is the number of batches.

    Example:
        >>> from facecrop.data import get_example_video
        >>> loader = VideoLoader(get_example_video(n_frames=8), batch_size=3)
        >>> [b.shape[0] for b in loader], loader.fps
        ([3, 3, 2], 24.0)
    """

    def __init__(self, path: str | os.PathLike, batch_size: int = 32, device: str | torch.device = "cpu"):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no video file at {self.path}")
        self.batch_size = batch_size
        self.device = torch.device(device)
        with av.open(str(self.path)) as container:
            stream = container.streams.video[0]
            self.fps = float(stream.average_rate)
            self.height, self.width = stream.codec_context.height, stream.codec_context.width
            # The container's count is absent (0) for some formats; then count by decoding.
            self.n_frames = stream.frames or sum(1 for _ in container.decode(stream))

    def __len__(self) -> int:
        return math.ceil(self.n_frames / self.batch_size)

    def __iter__(self):
        with av.open(str(self.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            batch = []
            for frame in container.decode(stream):
                batch.append(frame.to_ndarray(format="rgb24"))
                if len(batch) == self.batch_size:
                    yield self._to_tensor(batch)
                    batch = []
            if batch:
                yield self._to_tensor(batch)

    def _to_tensor(self, frames: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous().to(self.device)

    def get_metadata(self) -> dict:
        """Medusa's metadata dict: ``img_size`` (W, H), ``n_img`` and ``fps``."""
        return {"img_size": (self.width, self.height), "n_img": self.n_frames, "fps": self.fps}

    def __repr__(self) -> str:
        return (
            f"VideoLoader({str(self.path)!r}, batch_size={self.batch_size}, device='{self.device}', "
            f"n_frames={self.n_frames}, fps={self.fps:g}, size={self.width}x{self.height})"
        )
