"""The configuration of an end-to-end pipeline: what a bundle was built from."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Optional


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that fixes an end-to-end module's behaviour and output shapes.

    There is no frame size: the module letterboxes each batch at its own size.

    Attributes:
        detector: SCRFD model name (``det_10g``, ``det_2.5g``, ``det_500m``) or ``.onnx`` path.
        landmarks: ``None``, ``'2d106det'``, ``'1k3d68'`` or an ``.onnx`` path.
        crop: ``'none'``, ``'align'`` (ArcFace/MICA, 5 detector points) or ``'bbox'`` (DECA box).
        det_size: ``(width, height)`` of the detector input.
        crop_size: side of the square crops in pixels (default 112 for align, 224 for bbox).
        max_faces: faces kept per frame, K; the outputs are padded to K with a validity mask. 32 keeps
            every face of a crowded frame (30 faces) at a cost within the noise at 1-6 faces (the crops
            are sampled for the faces that exist); frames with more faces are reported (``overflow``).
        det_threshold: minimum detector score.
        nms_threshold: IoU above which the lower-scoring box is suppressed.
    """

    detector: str = "det_10g"
    landmarks: Optional[str] = None
    crop: Literal["none", "align", "bbox"] = "align"
    det_size: tuple[int, int] = (224, 224)
    crop_size: Optional[int] = None
    max_faces: int = 32
    det_threshold: float = 0.3
    nms_threshold: float = 0.3

    def to_dict(self) -> dict:
        return asdict(self)
