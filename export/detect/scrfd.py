"""``SCRFDetector``: Medusa's face detector API on top of the static-shape core."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from facecrop.detect.core import SCRFDHead
from facecrop.io import to_batches


def ragged(padded: dict[str, torch.Tensor], keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Padded per-frame outputs ``[B, K, ...]`` -> Medusa's rows ``[N, ...]`` of valid faces.

    Rows are ordered by frame, then by score; ``img_idx [N]`` says which frame.
    """
    frame, slot = padded["valid"].nonzero(as_tuple=True)
    out = {key: padded[key][frame, slot] for key in keys}
    out["img_idx"] = frame
    return out


def concat_outputs(outputs: list[dict], n_img: int) -> dict:
    """Concatenate per-batch Medusa outputs whose ``img_idx`` are already global."""
    out = {key: torch.cat([o[key] for o in outputs]) for key in outputs[0]}
    out["n_img"] = n_img
    return out


class SCRFDetector(nn.Module):
    """SCRFD face detector with Medusa's constructor, defaults and outputs.

    Args:
        model_path: model name (``det_10g``, ``det_2.5g``, ``det_500m``) or ``.onnx`` path.
        det_size: detector input ``(width, height)``.
        det_threshold: minimum score.
        nms_threshold: IoU above which the lower-scoring of two boxes is dropped.
        max_faces: most faces kept per image (the highest scores; a warning says when more were found).
        device: where the network runs.
        model_dir: where named models are looked up (see :mod:`facecrop.zoo`).

    ``forward(imgs)`` takes paths, RGB tensors ``[B, 3, H, W]``/``[3, H, W]`` or
    NumPy ``[H, W, 3]`` arrays (0-255) and returns a dict: ``conf [N]``,
    ``bbox [N, 4]`` (x1, y1, x2, y2), ``lms [N, 5, 2]`` (eyes, nose, mouth
    corners as ``(x, y)``), ``img_idx [N]`` and ``n_img``, in input-image pixels.

    Example:
        >>> detector = SCRFDetector("det_500m")  # doctest: +SKIP
        >>> out = detector("photo.jpg")  # doctest: +SKIP
        >>> out["bbox"].shape  # doctest: +SKIP
        torch.Size([6, 4])
    """

    def __init__(
        self,
        model_path: str = "det_10g",
        det_size: tuple[int, int] = (224, 224),
        det_threshold: float = 0.3,
        nms_threshold: float = 0.3,
        max_faces: int = 32,
        device: str | torch.device = "cpu",
        model_dir=None,
    ):
        super().__init__()
        from facecrop.zoo import resolve_model

        self.model_path = resolve_model(model_path, model_dir=model_dir)
        self.head = SCRFDHead(self.model_path, det_size, det_threshold, nms_threshold, max_faces)
        self.device = torch.device(device)
        self.to(self.device)
        self._warned_overflow = False

    def detect_padded(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """Static-shape detection: ``[B, 3, H, W]`` -> padded ``[B, K, ...]`` dict (see :func:`select_faces`)."""
        faces = self.head(frames.to(self.device))
        self.warn_if_overflow(faces["overflow"])
        return faces

    def warn_if_overflow(self, overflow: torch.Tensor) -> None:
        """Warn once per detector when a frame had more than ``max_faces`` faces."""
        if not self._warned_overflow and bool(overflow.any()):
            self._warned_overflow = True
            warnings.warn(f"more than max_faces={self.head.max_faces} faces in a frame; "
                          "kept the highest-scoring ones", stacklevel=4)

    @torch.no_grad()
    def forward(self, imgs) -> dict:
        outputs, seen = [], 0
        for frames in to_batches(imgs, self.device):
            out = ragged(self.detect_padded(frames), ("conf", "bbox", "lms"))
            out["img_idx"] = out["img_idx"] + seen
            outputs.append(out)
            seen += frames.shape[0]
        return concat_outputs(outputs, seen)

    def __repr__(self) -> str:
        return f"SCRFDetector(model_path={str(self.model_path)!r}, {self.head.extra_repr()}, device={self.device})"
