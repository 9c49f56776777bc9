"""``SCRFDetector``: Medusa's face detector API on top of the static-shape core."""

from __future__ import annotations

import os
import warnings

import torch

from facecrop.defaults import DEVICE
from facecrop.detect.base import BaseDetector, ragged, rows_per_image
from facecrop.detect.core import SCRFDHead

#: The detector used when none is named: Medusa's ``det_10g`` unless ``$FACECROP_DETECTOR`` names another
#: (a name such as ``det_500m`` or an ``.onnx`` path), so that Medusa code runs unchanged with it.
DEFAULT_DETECTOR = "det_10g"


def default_detector() -> str:
    return os.environ.get("FACECROP_DETECTOR") or DEFAULT_DETECTOR


def _square_det_size(det_size) -> tuple[int, int]:
    size = tuple(det_size) if isinstance(det_size, (tuple, list)) else None
    if size is None or len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"det_size must be two positive ints, e.g. (640, 640), got {det_size!r}")
    if size[0] != size[1]:
        raise ValueError(f"det_size should indicate a square image, e.g. (640, 640), got {det_size!r}")
    return size


def as_detector(detector, device, **kwargs) -> "SCRFDetector":
    """Medusa passes the detector class (built with ``device`` and ``kwargs``) or an instance."""
    if isinstance(detector, type) and issubclass(detector, SCRFDetector):
        return detector(device=device, **kwargs)
    if not isinstance(detector, SCRFDetector):
        raise TypeError(f"detector must be SCRFDetector or an instance of it, got {detector!r}")
    if kwargs:
        raise TypeError(f"detector options {sorted(kwargs)} need the detector class, not an instance")
    return detector


class SCRFDetector(BaseDetector):
    """SCRFD face detector with Medusa's constructor, defaults and outputs.

    Args:
        det_size: detector input ``(S, S)``; square, as in Medusa (default 640).
        det_threshold: minimum score.
        nms_threshold: IoU above which the lower-scoring of two boxes is dropped.
        device: where the network runs (kept as given, like Medusa's ``.device``).
        model_path: facecrop's extra: a model name (``det_10g``, ``det_2.5g``, ``det_500m``) or an
            ``.onnx`` path; default :func:`default_detector`.
        max_faces: most faces kept per image (the highest scores; a warning says when more were found).
        model_dir: where named models are looked up (see :mod:`facecrop.zoo`).

    ``forward(imgs)`` takes paths, RGB tensors ``[B, 3, H, W]``/``[3, H, W]`` or
    NumPy ``[H, W, 3]`` arrays (0-255) and returns a dict: ``conf [N]``,
    ``bbox [N, 4]`` (x1, y1, x2, y2), ``lms [N, 5, 2]`` (eyes, nose, mouth
    corners as ``(x, y)``), ``img_idx [N]`` and ``n_img``, in input-image pixels;
    with no face in any image, ``n_img`` alone (as Medusa).

    Example:
        >>> detector = SCRFDetector(model_path="det_500m")  # doctest: +SKIP
        >>> out = detector("photo.jpg")  # doctest: +SKIP
        >>> out["bbox"].shape, str(detector)  # doctest: +SKIP
        (torch.Size([6, 4]), 'scrfd')
    """

    def __init__(
        self,
        det_size: tuple[int, int] = (640, 640),
        det_threshold: float = 0.3,
        nms_threshold: float = 0.3,
        device: str | torch.device = DEVICE,
        model_path: str | os.PathLike | None = None,
        max_faces: int = 32,
        model_dir=None,
    ):
        super().__init__()
        from facecrop.zoo import resolve_model

        self.det_size = _square_det_size(det_size)
        self.det_threshold, self.nms_threshold = det_threshold, nms_threshold
        self.model_path = resolve_model(model_path or default_detector(), model_dir=model_dir)
        self.head = SCRFDHead(self.model_path, self.det_size, det_threshold, nms_threshold, max_faces)
        self.device = device
        self.to(device).eval()
        self._warned_overflow = False

    def __str__(self) -> str:
        return "scrfd"

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

    def forward(self, imgs) -> dict:
        def run_batch(frames):
            return ragged(self.detect_padded(frames), ("conf", "bbox", "lms"))

        return rows_per_image(imgs, self.device, run_batch)

    def __repr__(self) -> str:
        return f"SCRFDetector(model_path={str(self.model_path)!r}, {self.head.extra_repr()}, device={self.device})"
