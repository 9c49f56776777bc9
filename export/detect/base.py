"""What the eager Medusa-compatible classes share: build on a detector, run, return ragged rows."""

from __future__ import annotations

import torch

from facecrop.detect.scrfd import SCRFDetector, concat_outputs, ragged
from facecrop.io import to_batches
from facecrop.pipeline import FacePipeline


def as_detector(detector, device) -> SCRFDetector:
    """Medusa passes the detector class (built with its defaults) or an instance."""
    if isinstance(detector, type):
        return detector(device=device)
    if not isinstance(detector, SCRFDetector):
        raise TypeError(f"detector must be SCRFDetector or an instance of it, got {type(detector).__name__}")
    return detector


@torch.no_grad()
def run_eager(pipeline: FacePipeline, detector: SCRFDetector, imgs, keys: tuple[str, ...]) -> dict:
    """Run ``pipeline`` on any accepted images -> Medusa's dict of rows plus ``img_idx``, ``n_img``."""
    outputs, seen = [], 0
    for frames in to_batches(imgs, detector.device):
        padded = pipeline.forward_dict(frames, trim=True)
        detector.warn_if_overflow(padded["overflow"])
        out = ragged(padded, keys)
        out["img_idx"] = out["img_idx"] + seen
        outputs.append(out)
        seen += frames.shape[0]
    return concat_outputs(outputs, seen)
