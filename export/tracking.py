"""Face tracking across frames: stable face ids and the removal of rarely seen faces.

Medusa's ``medusa.tracking``: :func:`sort_faces` gives every detection a ``face_idx``
by greedy nearest-landmark matching to the faces tracked so far; :func:`filter_faces`
keeps the detections of faces present in enough frames.

Conventions: per-detection tensors have the N detections on their first axis;
``img_idx`` (N,) long says which frame each came from; landmarks are (x, y) pixels.
"""

from __future__ import annotations

import torch

from facecrop.runtime.track import OnlineTracker

__all__ = ["filter_faces", "sort_faces"]


def sort_faces(lms: torch.Tensor, img_idx: torch.Tensor, dist_threshold: float = 250) -> torch.Tensor:
    """Give each detection a face identity that is stable across frames (Medusa's tracker).

    Frames are visited in order of ``img_idx`` and each frame's detections, in the order given (it
    decides which of two new faces gets the lower id), go through
    :class:`facecrop.runtime.track.OnlineTracker` (the algorithm is described there), the tracker
    ``facecrop run`` uses for the ``face_idx`` of its results: the same detections get the same ids.

    Args:
        lms: landmarks (or any points) of shape (N, L, C).
        img_idx: frame index of each detection, shape (N,), integer.
        dist_threshold: distance in pixels (over all L*C coordinates together) at or above which a
            detection is a new face.

    Returns:
        face ids of shape (N,), int64, numbered 0, 1, ... in order of appearance.

    Example:
        >>> lms = torch.tensor([[[0.0, 0.0]], [[500.0, 0.0]], [[490.0, 5.0]], [[10.0, 5.0]]])
        >>> sort_faces(lms, torch.tensor([0, 0, 1, 1]))
        tensor([0, 1, 1, 0])
    """
    if lms.ndim < 2 or lms.shape[0] != img_idx.shape[0]:
        raise ValueError(
            f"lms must have shape (N, ...) with N = len(img_idx) = {img_idx.shape[0]}, got {tuple(lms.shape)}"
        )
    face_idx = torch.zeros_like(img_idx, dtype=torch.int64)
    tracker = OnlineTracker(dist_threshold)
    # Rows of each frame, frames in increasing order (one sort, not one scan per frame).
    order = torch.argsort(img_idx, stable=True)
    counts = torch.unique_consecutive(img_idx[order], return_counts=True)[1]
    for det in torch.split(order, counts.tolist()):
        face_idx[det] = tracker.update(lms[det]).to(face_idx.device)
    return face_idx


def filter_faces(face_idx: torch.Tensor, n_img: int, present_threshold: float = 0.1) -> torch.Tensor:
    """Which detections belong to faces present in at least ``present_threshold`` of the frames.

    Args:
        face_idx: face id of each detection, shape (N,).
        n_img: number of frames.
        present_threshold: minimum fraction of frames (detections of the face / n_img).

    Returns:
        a bool mask of shape (N,).

    Example:
        >>> filter_faces(torch.tensor([0, 0, 0, 1]), n_img=10, present_threshold=0.2)
        tensor([ True,  True,  True, False])
    """
    _, inverse, counts = face_idx.unique(return_inverse=True, return_counts=True)
    return (counts.float() / max(n_img, 1) >= present_threshold)[inverse]


def _ensure_consecutive_face_idx(face_idx: torch.Tensor) -> torch.Tensor:
    """The same identities renumbered ``0, 1, ...`` in order (Medusa's helper of the same name).

    Example:
        >>> _ensure_consecutive_face_idx(torch.tensor([0, 5, 1, 5]))
        tensor([0, 2, 1, 2])
    """
    return torch.unique(face_idx, return_inverse=True)[1]
