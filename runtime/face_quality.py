"""Per-face quality columns, computed batch by batch as the run makes them: size, sharpness, head pose.

Every results file holds them beside ``conf`` (``[F, K]`` float32, NaN where no face), so that
training data can be filtered by what it looks like (``--min-face``, ``--max-yaw``,
``--min-sharpness``, see :class:`~facecrop.runtime.tubes.TubeOptions`):

- ``face_size``: the square root of the face box's area, in frame pixels.
- ``sharpness``: the variance of the 4-neighbour Laplacian of the crop's grey levels (0-255): a
  blurred or out-of-focus face scores low (NaN for bundles without crops). The crop's parts outside
  the frame are black, which adds edges: compare faces of similar framing.
- ``yaw``, ``pitch``, ``roll``: head pose in degrees from the five points (eyes, nose tip, mouth
  corners; from 68 landmarks, their means), through a mean face seen orthographically. ``roll`` is
  the eye line's angle (positive: clockwise on screen), ``yaw`` positive with the nose toward the
  image's right, ``pitch`` positive chin up. A coarse estimate (tens of degrees apart it separates
  frontal from profile faces, not 3 degrees from 6); NaN for 106-point bundles, whose eye
  points this module does not map.
"""

from __future__ import annotations

import numpy as np

__all__ = ["QUALITY_COLUMNS", "face_quality", "five_points", "head_pose"]

QUALITY_COLUMNS = ("face_size", "sharpness", "yaw", "pitch", "roll")

# The mean face the pose is read from, in units of the distance between the eye centres: the nose
# tip lies NOSE_DEPTH in front of the eyes' plane, and, seen frontally, NOSE_DOWN of the way from the
# eye line to the mouth line, which lies MOUTH_DOWN below the eye line (the ArcFace template's
# proportions: 20.1 of 40.6 px, 40.6 / 35.2 px).
NOSE_DEPTH = 0.5
NOSE_DOWN = 0.495
MOUTH_DOWN = 1.15


def five_points(lms: np.ndarray) -> np.ndarray | None:
    """``[..., 5, 2]`` (left eye, right eye, nose tip, left and right mouth corner, as the image shows
    them) from ``lms [..., L, 2]`` with L = 5 (the detector's) or 68 (iBUG's markup); None for others."""
    count = lms.shape[-2]
    if count == 5:
        return lms
    if count == 68:
        return np.stack([lms[..., 36:42, :].mean(-2), lms[..., 42:48, :].mean(-2), lms[..., 30, :],
                         lms[..., 48, :], lms[..., 54, :]], -2)
    return None


def head_pose(points: np.ndarray) -> np.ndarray:
    """``(yaw, pitch, roll)`` degrees ``[..., 3]`` from five points ``[..., 5, 2]`` (see the module doc).

    Example:
        >>> arcface = np.array([[38.29, 51.70], [73.53, 51.50], [56.03, 71.74], [41.55, 92.37], [70.73, 92.20]])
        >>> np.abs(head_pose(arcface)).round().tolist()  # the ArcFace template looks straight ahead
        [0.0, 0.0, 0.0]
    """
    points = points.astype(np.float64)
    left, right, nose = points[..., 0, :], points[..., 1, :], points[..., 2, :]
    mouth = (points[..., 3, :] + points[..., 4, :]) / 2
    eyes = (left + right) / 2
    across = right - left
    roll = np.arctan2(across[..., 1], across[..., 0])
    spread = np.hypot(across[..., 0], across[..., 1])
    cos, sin = np.cos(roll), np.sin(roll)

    def unrolled(p):  # x along the eye line, y down across it, from the eyes' midpoint
        d = p - eyes
        return d[..., 0] * cos + d[..., 1] * sin, -d[..., 0] * sin + d[..., 1] * cos

    nose_x, nose_y = unrolled(nose)
    _, mouth_y = unrolled(mouth)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Turned by yaw, the eyes close up by cos(yaw) and the nose tip moves sideways by depth * sin(yaw).
        yaw = np.arctan(nose_x / spread / NOSE_DEPTH)
        # Tilted, the nose tip moves along the face by depth * sin(pitch) against the eye-to-mouth line.
        pitch = np.arctan((NOSE_DOWN - nose_y / mouth_y) * MOUTH_DOWN / NOSE_DEPTH)
    return np.degrees(np.stack([yaw, pitch, roll], -1))


def sharpness(crops: np.ndarray) -> np.ndarray:
    """Variance of the Laplacian of crops ``[N, 3, S, S]`` uint8, ``[N]`` float32."""
    grey = crops.astype(np.float32).transpose(0, 2, 3, 1) @ np.array([0.299, 0.587, 0.114], np.float32)
    laplacian = (grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:] + grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1]
                 - 4 * grey[:, 1:-1, 1:-1])
    return laplacian.reshape(len(crops), -1).var(1).astype(np.float32)


def face_quality(valid: np.ndarray, bbox: np.ndarray, lms: np.ndarray,
                 imgs_crop: np.ndarray | None) -> dict[str, np.ndarray]:
    """The :data:`QUALITY_COLUMNS`, each ``[B, K]`` float32 (NaN where ``valid`` is False), of one batch's
    ``valid [B, K]``, ``bbox [B, K, 4]`` (x1, y1, x2, y2), ``lms [B, K, L, 2]`` and crops ``[B, K, 3, S, S]``
    uint8 (or None)."""
    columns = {name: np.full(valid.shape, np.nan, np.float32) for name in QUALITY_COLUMNS}
    rows, slots = np.nonzero(valid)
    if not len(rows):
        return columns
    box = bbox[rows, slots].astype(np.float64)
    columns["face_size"][rows, slots] = np.sqrt(np.clip(box[:, 2] - box[:, 0], 0, None)
                                                * np.clip(box[:, 3] - box[:, 1], 0, None))
    if imgs_crop is not None:
        columns["sharpness"][rows, slots] = sharpness(imgs_crop[rows, slots])
    points = five_points(lms[rows, slots])
    if points is not None:
        pose = head_pose(points)
        for i, name in enumerate(("yaw", "pitch", "roll")):
            columns[name][rows, slots] = pose[:, i]
    return columns
