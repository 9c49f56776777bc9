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
import warnings
from pathlib import Path

import av
import numpy as np
import torch

from facecrop.runtime.decode_worker import quarter_turns
from facecrop.runtime.decoder import upright
from facecrop.runtime.video_out import VideoOut


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
    if tensor.dtype.is_floating_point and tensor.numel() and 0 < float(tensor.amax()) <= 1 and float(tensor.amin()) >= 0:
        # A torchvision ToTensor() slip: such a picture is nearly black at 0-255, and finds no face.
        # Medusa does not rescale, so neither does facecrop: it says so, once (Python shows a warning
        # once per place it is raised, and this is the one place).
        warnings.warn("float image with every value within 0-1: facecrop (as Medusa and InsightFace) takes "
                      "pixels in 0-255; multiply by 255", ImageScaleWarning)
    return tensor


class ImageScaleWarning(UserWarning):
    """An image whose values look like 0-1 where 0-255 is expected."""


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


#: DataLoader options Medusa's ``VideoLoader`` passes on to torch's ``DataLoader``; decoding here is one
#: sequential PyAV reader, so they are accepted and have nothing to tune.
_DATALOADER_OPTIONS = {"num_workers", "pin_memory", "prefetch_factor", "persistent_workers", "shuffle", "drop_last"}
DATASET_TYPES = ("iterable", "map", "subset")


class VideoLoader:
    """Iterate over a video file in batches of RGB frames (Medusa's ``medusa.io.VideoLoader``).

    Args:
        video_path: video file.
        dataset_type: ``'iterable'`` or ``'map'`` (every frame, in order) or ``'subset'`` (only the
            frames listed in ``frames``, in order; the video is decoded up to the last of them).
        batch_size: frames per batch (the last batch may be smaller).
        device: device of the returned batches.
        frames: frame indices for ``dataset_type='subset'``.
        **kwargs: torch ``DataLoader`` options Medusa accepts (``num_workers``, ``pin_memory``, ...);
            accepted, with nothing to tune here.

    Attributes:
        fps: frame rate (frames per second, float). n_frames: frames in the video.
        height, width: frame size in pixels.

    Each iteration opens the file afresh and yields float32 tensors ``(B, 3, H, W)``, 0-255 RGB;
    ``len()`` is the number of batches.

    Example:
        >>> from facecrop.data import get_example_video
        >>> loader = VideoLoader(get_example_video(n_frames=8), batch_size=3)
        >>> [b.shape[0] for b in loader], loader.get_metadata()["fps"]
        ([3, 3, 2], 24)
    """

    def __init__(self, video_path: str | os.PathLike, dataset_type: str = "iterable", batch_size: int = 32,
                 device: str | torch.device = "cpu", frames=None, **kwargs):
        if dataset_type not in DATASET_TYPES:
            raise ValueError(f"dataset_type must be one of {DATASET_TYPES}, got {dataset_type!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        unknown = set(kwargs) - _DATALOADER_OPTIONS
        if unknown:
            raise TypeError(f"VideoLoader got unexpected keyword arguments {sorted(unknown)}")
        self.path = Path(video_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no video file at {self.path}")
        self.dataset_type, self.batch_size, self.device = dataset_type, batch_size, device
        with av.open(str(self.path)) as container:
            stream = container.streams.video[0]
            self.fps = float(stream.average_rate)
            self.height, self.width = stream.codec_context.height, stream.codec_context.width
            decoded = container.decode(stream)
            first = next(decoded, None)
            if first is not None and quarter_turns(first) % 2:  # frames come upright, as players show them
                self.height, self.width = self.width, self.height
            # The container's count is absent (0) for some formats; then count by decoding.
            self.n_frames = stream.frames or (first is not None) + sum(1 for _ in decoded)
        self.frames = self._check_frames(frames)
        self._metadata = {"img_size": (self.width, self.height), "n_img": self.n_frames, "fps": round(self.fps)}

    def _check_frames(self, frames) -> list[int] | None:
        if self.dataset_type != "subset":
            if frames is not None:
                raise ValueError(f"frames= selects a subset: pass dataset_type='subset' (got {self.dataset_type!r})")
            return None
        if frames is None or len(frames) == 0:
            raise ValueError("dataset_type='subset' needs frames=, a non-empty list of frame indices")
        frames = [int(f) for f in frames]
        outside = [f for f in frames if not 0 <= f < self.n_frames]
        if outside:
            raise ValueError(f"frames {outside} are outside the video's {self.n_frames} frames (0-{self.n_frames - 1})")
        return sorted(set(frames))

    @property
    def dataset(self) -> range | list[int]:
        """The indices of the frames this loader yields (Medusa's ``len(loader.dataset)`` counts them)."""
        return self.frames if self.frames is not None else range(self.n_frames)

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self):
        wanted = set(self.frames) if self.frames is not None else None
        last = max(wanted) if wanted else None
        with av.open(str(self.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            batch = []
            for index, frame in enumerate(container.decode(stream)):
                if wanted is not None and index not in wanted:
                    continue
                batch.append(upright(frame.to_ndarray(format="rgb24"), quarter_turns(frame)))
                if len(batch) == self.batch_size:
                    yield self._to_tensor(batch)
                    batch = []
                if index == last:
                    break
            if batch:
                yield self._to_tensor(batch)

    def _to_tensor(self, frames: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).to(self.device, torch.float32)

    def get_metadata(self) -> dict:
        """Medusa's metadata: ``img_size`` (W, H), ``n_img`` (frames) and ``fps`` (int)."""
        return dict(self._metadata)

    def close(self) -> None:
        """Medusa's loader closes its reader; each iteration here opens and closes its own."""

    def __repr__(self) -> str:
        return (
            f"VideoLoader({str(self.path)!r}, dataset_type={self.dataset_type!r}, batch_size={self.batch_size}, "
            f"device='{self.device}', n_frames={self.n_frames}, fps={self.fps:g}, size={self.width}x{self.height})"
        )


class VideoWriter:
    """Write RGB frames to a video file with PyAV (Medusa's ``medusa.io.VideoWriter``).

    Args:
        path: output file (its extension picks the container, e.g. ``.mp4``).
        fps: frame rate (rounded to an int, as Medusa's).
        codec: FFmpeg encoder, e.g. ``'libx264'`` or ``'mpeg4'``.
        pix_fmt: pixel format the encoder gets (``'yuv420p'`` needs even sizes).
        size: ``(width, height)``; default: the first frames' size.

    :meth:`write` takes one frame or a batch: ``(3, H, W)``, ``(B, 3, H, W)``, ``(H, W, 3)`` or
    ``(B, H, W, 3)``, tensor or array, 0-255. The video is written by
    :class:`~facecrop.runtime.video_out.VideoOut`, under a temporary name renamed into place by
    :meth:`close`, so an interrupted run never leaves a truncated file there.

    Example:
        >>> writer = VideoWriter("/tmp/facecrop-doctest.mp4", fps=24)
        >>> writer.write(torch.zeros(2, 3, 64, 64)); writer.close()
    """

    def __init__(self, path: str | os.PathLike, fps: float, codec: str = "libx264", pix_fmt: str = "yuv420p",
                 size: tuple[int, int] | None = None):
        self.path, self.fps, self.codec, self.pix_fmt = Path(path), int(round(fps)), codec, pix_fmt
        self.size = tuple(size) if size is not None else None
        self._out: VideoOut | None = None  # opened at the first frames, whose size it takes by default

    def write(self, imgs) -> None:
        """Append one frame or a batch of frames (see the class docstring for the layouts)."""
        if isinstance(imgs, torch.Tensor):
            imgs = imgs.detach().cpu().numpy()
        imgs = np.asarray(imgs)
        if imgs.ndim == 3:
            imgs = imgs[None]
        if imgs.ndim != 4 or 3 not in (imgs.shape[1], imgs.shape[3]):
            raise ValueError(f"frames must be (B, 3, H, W) or (B, H, W, 3) RGB, got shape {imgs.shape}")
        if imgs.shape[1] == 3 and imgs.shape[3] != 3:
            imgs = imgs.transpose(0, 2, 3, 1)
        imgs = np.ascontiguousarray(np.clip(np.round(imgs), 0, 255).astype(np.uint8))
        height, width = imgs.shape[1:3]
        if self.size is None:
            self.size = (width, height)
        if (width, height) != self.size:
            raise ValueError(f"frames of {width}x{height} cannot join a {self.size[0]}x{self.size[1]} video")
        if self._out is None:
            self._out = VideoOut(self.path, width, height, self.fps, codec=self.codec, pix_fmt=self.pix_fmt)
        for img in imgs:
            self._out.write(img)

    def close(self) -> None:
        """Flush the encoder and move the finished file into place (nothing written: an error, no file)."""
        if self._out is None:
            raise ValueError(f"no frames were written to {self.path}")
        self._out.close()
