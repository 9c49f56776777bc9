"""Stable face ids across frames, one frame at a time: Medusa's greedy landmark tracker, online.

The same algorithm serves the runtime (``face_idx`` in every results file, computed batch by batch
as frames come) and the eager API (:func:`facecrop.tracking.sort_faces` is a loop over
:class:`OnlineTracker`), so both give the same ids on the same detections. The tracker's state is
a few arrays that a checkpoint stores, so a resumed run continues with exactly the ids an
uninterrupted one gives.

Conventions: landmarks ``(x, y)`` pixels; a frame's detections in the order the detector gives
them (best score first); ids are int64, numbered 0, 1, ... in order of appearance. The arithmetic is
numpy's (float32 distances, as Medusa's ``torch.cdist``), so the runtime needs no torch for it.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import UsageError

__all__ = ["DEFAULT_DIST_THRESHOLD", "OnlineTracker", "track_frames"]

DEFAULT_DIST_THRESHOLD = 250.0  # Medusa's, in pixels over all landmark coordinates together


class OnlineTracker:
    """Give each frame's detections the ids of the faces tracked so far, or new ones.

    For each frame: the detections are visited from the one closest to any tracked face to the
    farthest; each gets its nearest still-unclaimed tracked face when the Euclidean distance
    between the flattened landmarks is below ``dist_threshold``, else a new id. Matched faces'
    landmarks are replaced by the new detection's; unmatched tracked faces keep their last
    landmarks, so a face that leaves and comes back near where it left keeps its id. Greedy and
    position-only: two faces crossing while one is missed can swap ids.

    Args:
        dist_threshold: distance in pixels (over all ``L * 2`` coordinates) at or above which a
            detection is a new face.

    Example:
        >>> tracker = OnlineTracker()
        >>> tracker.update(np.array([[[0.0, 0.0]], [[500.0, 0.0]]])).tolist()
        [0, 1]
        >>> tracker.update(np.array([[[490.0, 5.0]], [[10.0, 5.0]], [[2000.0, 0.0]]])).tolist()
        [1, 0, 2]
    """

    def __init__(self, dist_threshold: float = DEFAULT_DIST_THRESHOLD):
        if not dist_threshold > 0:
            raise UsageError(f"dist_threshold must be positive, got {dist_threshold!r}")
        self.dist_threshold = float(dist_threshold)
        self.tracked: np.ndarray | None = None  # [n_faces, L*2] float32: last landmarks of each face

    def update(self, lms):
        """Ids ``[n]`` int64 for one frame's detections ``lms [n, L, 2]`` (n may be 0): a numpy array, or a
        tensor on the same device when ``lms`` is a tensor."""
        if isinstance(lms, np.ndarray):
            return self._assign(lms)
        import torch

        lms = torch.as_tensor(lms)
        return torch.from_numpy(self._assign(lms.detach().cpu().numpy())).to(lms.device)

    def _assign(self, lms: np.ndarray) -> np.ndarray:
        if lms.ndim < 2:
            raise UsageError(f"lms must have shape (n, L, 2), got {tuple(lms.shape)}")
        flat = lms.reshape(lms.shape[0], math.prod(lms.shape[1:])).astype(np.float32)  # [n, L*2]; n may be 0
        n = flat.shape[0]
        if n == 0:
            return np.zeros(0, np.int64)
        if self.tracked is None:
            self.tracked = flat
            return np.arange(n, dtype=np.int64)
        tracked = self.tracked
        dists = np.sqrt(np.square(flat[:, None, :] - tracked[None, :, :]).sum(-1))  # [n, n_faces]
        assigned = np.full(n, -1, np.int64)
        free = np.ones(tracked.shape[0], bool)
        for det in np.argsort(dists.min(axis=1), kind="stable"):  # best-matching detections claim first
            if not free.any():
                break
            candidates = np.where(free, dists[det], np.inf)
            face = int(np.argmin(candidates))
            if candidates[face] < self.dist_threshold:
                assigned[det] = face
                free[face] = False
        matched = assigned >= 0
        tracked = tracked.copy()
        tracked[assigned[matched]] = flat[matched]
        new = int((~matched).sum())
        assigned[~matched] = tracked.shape[0] + np.arange(new)
        self.tracked = np.concatenate([tracked, flat[~matched]])
        return assigned

    def update_frames(self, lms: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Ids ``[F, K]`` int64 (-1 where ``valid`` is False) for frames ``lms [F, K, L, 2]`` in order."""
        face_idx = np.full(valid.shape, -1, dtype=np.int64)
        for f in range(len(valid)):
            face_idx[f, valid[f]] = self._assign(lms[f][valid[f]])
        return face_idx

    def state(self) -> dict[str, np.ndarray]:
        """The arrays that restore this tracker with :meth:`from_state` (what a checkpoint stores)."""
        tracked = np.zeros((0, 0), np.float32) if self.tracked is None else self.tracked
        return {"tracked": tracked, "dist_threshold": np.float64(self.dist_threshold)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "OnlineTracker":
        tracker = cls(float(state["dist_threshold"]))
        if state["tracked"].size:
            tracker.tracked = np.array(state["tracked"], np.float32)
        return tracker

    def __repr__(self) -> str:
        faces = 0 if self.tracked is None else self.tracked.shape[0]
        return f"OnlineTracker(dist_threshold={self.dist_threshold:g}, faces={faces})"


def track_frames(face_idx: np.ndarray) -> np.ndarray:
    """Frames each id appears in, ``[T]`` int64 for ids ``0 .. T-1``, from ``face_idx [F, K]`` (-1: no face).

    Example:
        >>> track_frames(np.array([[0, -1], [0, 1], [-1, -1]])).tolist()
        [2, 1]
    """
    ids = face_idx[face_idx >= 0]
    return np.bincount(ids, minlength=int(ids.max()) + 1 if ids.size else 0).astype(np.int64)
