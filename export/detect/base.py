"""What the eager Medusa-compatible classes share: ragged rows, no-face outputs, video runs.

The fused module pads every frame to ``K`` faces with a validity mask; Medusa's classes return
one row per detected face instead (``img_idx [N]`` says which image), and only ``n_img`` (plus
the class's keys set to ``None``) when nothing was found at all.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from facecrop.io import to_batches
from facecrop.pipeline import FacePipeline


def ragged(padded: dict[str, torch.Tensor], keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Padded per-frame outputs ``[B, K, ...]`` -> Medusa's rows ``[N, ...]`` of valid faces.

    Rows are ordered by frame, then by score; ``img_idx [N]`` says which frame.
    """
    frame, slot = padded["valid"].nonzero(as_tuple=True)
    out = {key: padded[key][frame, slot] for key in keys}
    out["img_idx"] = frame
    return out


def _concat_rows(outputs: list[dict], n_img: int, none_keys: tuple[str, ...]) -> dict:
    """Concatenate per-batch rows whose ``img_idx`` are already global.

    With no detection at all, Medusa returns ``n_img`` alone, plus ``none_keys`` set to ``None``.
    """
    if sum(len(o["img_idx"]) for o in outputs) == 0:
        return {**{key: None for key in none_keys}, "n_img": n_img}
    out = {key: torch.cat([o[key] for o in outputs]) for key in outputs[0]}
    out["n_img"] = n_img
    return out


@torch.no_grad()
def rows_per_image(imgs, device, run_batch, none_keys: tuple[str, ...] = ()) -> dict:
    """Medusa's dict of rows for any accepted images: ``run_batch(frames [b, 3, H, W])`` gives one
    batch's rows with ``img_idx`` counted within the batch; they are offset and concatenated."""
    outputs, seen = [], 0
    for frames in to_batches(imgs, device):
        out = run_batch(frames)
        out["img_idx"] = out["img_idx"] + seen
        outputs.append(out)
        seen += frames.shape[0]
    return _concat_rows(outputs, seen, none_keys)


def run_eager(pipeline: FacePipeline, detector, imgs, keys: tuple[str, ...], none_keys: tuple[str, ...] = (),
              **options) -> dict:
    """Run ``pipeline`` on any accepted images -> Medusa's dict of rows plus ``img_idx``, ``n_img``.

    ``options`` go to :meth:`FacePipeline.forward_dict` (e.g. ``landmark_crops=True``).
    """

    def run_batch(frames):
        padded = pipeline.forward_dict(frames, trim=True, **options)
        detector.warn_if_overflow(padded["overflow"])
        return ragged(padded, keys)

    return rows_per_image(imgs, detector.device, run_batch, none_keys)


def run_on_video(model: nn.Module, vid, batch_size: int, save_imgs: bool = False):
    """Medusa's video loop: every batch of ``vid`` (a path or a :class:`~facecrop.io.VideoLoader`)
    through ``model``, gathered in a :class:`~facecrop.containers.BatchResults`."""
    from facecrop.containers import BatchResults
    from facecrop.io import VideoLoader

    if isinstance(vid, (str, Path)):
        vid = VideoLoader(vid, batch_size=batch_size, device=model.device)
    elif not isinstance(vid, VideoLoader):
        raise TypeError(f"vid must be a video path or a VideoLoader, got {type(vid).__name__}")
    results = BatchResults(0, model.device)
    for batch in vid:
        batch = batch.to(model.device, dtype=torch.float32)
        results.add(**model(batch))
        if save_imgs:
            results.add(imgs=batch)
    results.concat()
    return results


class BaseDetector(nn.Module):
    """Base of the detectors (Medusa's ``medusa.detect.base.BaseDetector``)."""

    def detect_faces_video(self, vid, batch_size: int = 32):
        """All detections in a video (a path, or a :class:`~facecrop.io.VideoLoader`) as a ``BatchResults``."""
        return run_on_video(self, vid, batch_size)
