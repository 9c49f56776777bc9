"""Drawing faces onto frames and writing pictures and videos.

A thin layer over :mod:`torchvision.utils` (boxes, keypoints, grids) and PyAV
(video encoding), used by :meth:`facecrop.containers.results.BatchResults.visualize` and
the examples.

Conventions:
    - Images are RGB uint8 tensors of shape (3, H, W) (or (T, 3, H, W) for a
      video), pixel values 0-255.
    - Boxes are ``(x1, y1, x2, y2)`` pixels, points ``(x, y)`` pixels, x right,
      y down.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from PIL import Image, ImageFont
from torchvision.utils import draw_bounding_boxes, draw_keypoints, make_grid

from facecrop.runtime.video_out import VideoOut

__all__ = ["FACE_COLORS", "face_color", "draw_faces", "save_image", "save_grid", "write_video"]

# matplotlib's "Set1" palette (Medusa colours tracked faces with ``cm.Set1``),
# spelled out so that drawing does not need matplotlib.
FACE_COLORS = (
    (228, 26, 28),
    (55, 126, 184),
    (77, 175, 74),
    (152, 78, 163),
    (255, 127, 0),
    (255, 255, 51),
    (166, 86, 40),
    (247, 129, 191),
    (153, 153, 153),
)
_LABEL_FONT = "DejaVuSans.ttf"
LANDMARK_COLOR = (0, 255, 0)
TEMPLATE_COLOR = (0, 0, 255)


def face_color(face_id: int) -> tuple[int, int, int]:
    """RGB colour of tracked face ``face_id`` (the palette repeats after 9 faces)."""
    return FACE_COLORS[int(face_id) % len(FACE_COLORS)]


def _check_image(img: torch.Tensor, name: str = "img") -> None:
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(img).__name__}")
    if img.ndim != 3 or img.shape[0] != 3:
        raise ValueError(f"{name} must have shape (3, H, W), got {tuple(img.shape)}")
    if img.dtype != torch.uint8:
        raise TypeError(f"{name} must be uint8 (RGB 0-255), got {img.dtype}")


@torch.no_grad()
def draw_faces(
    img: torch.Tensor,
    bbox: torch.Tensor | None = None,
    lms: torch.Tensor | None = None,
    labels: list[str] | None = None,
    colors: list[tuple[int, int, int]] | None = None,
    template: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw face boxes, landmarks and template points onto one image.

    Line width and point radius grow with the face size so that they stay
    visible on large frames and do not swamp small crops.

    Args:
        img: RGB image of shape (3, H, W), uint8.
        bbox: boxes (x1, y1, x2, y2) of shape (K, 4), drawn with ``labels`` and
            ``colors`` (one per box; red when None).
        lms: landmarks of shape (K, L, 2), drawn in green.
        labels: K strings written above the boxes (e.g. confidences).
        colors: K RGB tuples, one per box.
        template: template points of shape (K, P, 2) or (P, 2), drawn in blue.

    Returns:
        a new uint8 image of shape (3, H, W).

    Example:
        >>> img = torch.zeros(3, 64, 64, dtype=torch.uint8)
        >>> out = draw_faces(img, bbox=torch.tensor([[8.0, 8.0, 40.0, 48.0]]))
        >>> out.shape, out.dtype, int(out[0, 8, 20])
        (torch.Size([3, 64, 64]), torch.uint8, 255)
    """
    _check_image(img)
    if bbox is not None and (bbox.ndim != 2 or bbox.shape[-1] != 4):
        raise ValueError(f"bbox must have shape (K, 4), got {tuple(bbox.shape)}")
    if lms is not None and (lms.ndim != 3 or lms.shape[-1] != 2):
        raise ValueError(f"lms must have shape (K, L, 2), got {tuple(lms.shape)}")
    if template is not None and template.shape[-1] != 2:
        raise ValueError(f"template must have shape (K, P, 2) or (P, 2), got {tuple(template.shape)}")

    size = _face_size(img, bbox, lms)
    out = img.cpu()
    if bbox is not None and bbox.shape[0] > 0:
        font = _label_font()
        out = draw_bounding_boxes(
            out,
            bbox.detach().cpu().float(),
            labels=labels,
            colors=colors or (255, 0, 0),
            width=max(1, round(size / 40)),
            font=font,
            font_size=max(10, round(size / 8)) if font else None,
            label_colors=(255, 255, 255),
            fill_labels=True,
        )
    if lms is not None and lms.shape[0] > 0:
        radius = max(1, round(size / 60))
        out = draw_keypoints(out, lms.detach().cpu().float(), colors=LANDMARK_COLOR, radius=radius)
    if template is not None:
        template = template.detach().cpu().float()
        if template.ndim == 2:
            template = template.unsqueeze(0)
        radius = max(1, round(size / 80))
        out = draw_keypoints(out, template, colors=TEMPLATE_COLOR, radius=radius)
    return out


@functools.cache
def _label_font() -> str | None:
    """A scalable font for box labels, or None for PIL's small built-in one.

    torchvision only takes a font file name; DejaVu Sans is on most Linux systems
    (PIL finds it by name in the system font folders).
    """
    try:
        ImageFont.truetype(_LABEL_FONT, 10)
    except OSError:
        return None
    return _LABEL_FONT


def _face_size(img: torch.Tensor, bbox: torch.Tensor | None, lms: torch.Tensor | None) -> float:
    """Side length (px) of the smallest face, to scale line widths; the image's when unknown."""
    if bbox is not None and bbox.shape[0] > 0:
        wh = (bbox[:, 2:] - bbox[:, :2]).clamp(min=1)
    elif lms is not None and lms.shape[0] > 0:
        wh = (lms.amax(dim=1) - lms.amin(dim=1)).clamp(min=1)
    else:
        return float(min(img.shape[1:]))
    return float(wh.prod(dim=1).sqrt().min())


def save_image(path: str | os.PathLike, img: torch.Tensor) -> Path:
    """Write one RGB uint8 image of shape (3, H, W) as PNG or JPEG (chosen by the suffix)."""
    _check_image(img)
    path = Path(path)
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"path must end in .png, .jpg or .jpeg, got {path.name!r}")
    # PIL rather than torchvision.io, whose image codecs are deprecated since 0.29.
    Image.fromarray(img.permute(1, 2, 0).cpu().numpy()).save(path, quality=95)
    return path


def save_grid(path: str | os.PathLike, imgs: torch.Tensor, nrow: int = 8) -> Path:
    """Write images of shape (N, 3, H, W), uint8, as one grid picture (``nrow`` per row)."""
    if not isinstance(imgs, torch.Tensor) or imgs.ndim != 4:
        raise ValueError(f"imgs must be a tensor of shape (N, 3, H, W), got {getattr(imgs, 'shape', type(imgs))}")
    grid = make_grid(imgs.cpu(), nrow=nrow, padding=2)  # uint8 in, uint8 out
    return save_image(path, grid)


def write_video(path: str | os.PathLike, frames: torch.Tensor, fps: float = 24) -> Path:
    """Encode frames into an MP4 file (:class:`facecrop.runtime.video_out.VideoOut`: H.264 if available,
    else MPEG-4, written under a temporary name and renamed, odd sizes padded by one black pixel); the
    same frames give the same bytes.

    Args:
        path: output file; its suffix should be ``.mp4``.
        frames: RGB frames of shape (T, 3, H, W), uint8, T >= 1.
        fps: frame rate.

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must have shape (T, 3, H, W), got {getattr(frames, 'shape', type(frames))}")
    if frames.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8 (RGB 0-255), got {frames.dtype}")
    if frames.shape[0] == 0:
        raise ValueError("frames must hold at least one frame, got 0")
    out = VideoOut(path, frames.shape[3], frames.shape[2], fps, reproducible=True)
    try:
        for frame in frames.permute(0, 2, 3, 1).cpu().numpy():
            out.write(frame)
    except BaseException:
        out.discard()
        raise
    return out.close()
