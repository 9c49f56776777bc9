"""Face tubes: runs of frames of one face id, cut stably, that training code takes as they come.

A tube is a maximal run of frames of one face id (``face_idx``). It is split where the face is
missing for more than ``max_gap`` frames, where its crop would have to jump (moving more than
``max_shift`` of the crop's side, or scaling by more than ``max_zoom``, from one detection to the
next: a cut, or another face taking the id), and where it reaches ``max_tube`` frames; runs shorter
than ``min_tube`` frames are dropped. Faces that fail a quality filter (``min_face``, ``max_yaw``,
``max_pitch``, ``min_sharpness``) count as missing. Only tracks the run keeps (``track_kept``) make
tubes, unless ``keep_all``.

A tube covers every frame from its first to its last, the missing ones too, so that its crops play
at the source's rate with its sound. Its crop is a similarity (centre, scale, rotation) smoothed over
time: offline (files and datasets) zero-phase, a Gaussian over each parameter centred on each frame, of
``smooth_s`` seconds where the face keeps still and narrower as it moves, with the tube's ends
reflected (no lag, a moving face's trend kept to its ends); live
(:class:`CausalSmoother` in ``stream()``) a One-Euro filter, which follows fast motion with a lag of
a frame or two and holds still faces still. The missing frames' parameters are interpolated.

Arrays (``bundles/README.md``), T tubes and N tube frames (all frames of all tubes, tube by tube):

- ``tube_idx [F, K]`` int64: the tube holding each face (-1: none); ``tube_drop [F, K]`` int8: why a face
  is in no written tube (an index into :data:`DROP_REASONS`; 0 kept, -1 no face).
- ``tube_face``, ``tube_number`` (the face's n-th tube), ``tube_start``, ``tube_stop`` (frames,
  ``stop`` exclusive) ``[T]`` int64.
- ``tube_frame_tube``, ``tube_frame_index``, ``tube_frame_slot`` (-1 where the face is missing)
  ``[N]`` int64 and ``tube_crop_mat [N, 3, 3]`` float32: the smoothed image -> crop matrices.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from .errors import UsageError

__all__ = ["DROP_REASONS", "CausalSmoother", "TubeOptions", "crop_params", "find_tubes", "frame_rate", "params_to_mats",
           "summarize_tubes"]

DROP_REASONS = ("in a tube", "track not kept", "face too small", "yaw too large", "pitch too large",
                "not sharp enough", "tube too short")
_KEPT, _TRACK, _SMALL, _YAW, _PITCH, _BLUR, _SHORT = range(len(DROP_REASONS))


@dataclass(frozen=True)
class TubeOptions:
    """How tubes are cut, smoothed and filtered; every value is recorded with the results.

    Frames are counts of decoded frames; ``smooth_s`` is seconds (a Gaussian's sigma for a still face;
    0: raw crops), narrowed as the face moves faster than ``still_speed`` image pixels a frame. The
    filters (None or 0: off) drop single faces, which then count as missing.
    """

    min_tube: int = 16
    max_tube: int = 1500
    max_gap: int = 5
    max_shift: float = 0.25
    max_zoom: float = 1.25
    smooth_s: float = 0.15
    still_speed: float = 0.5
    keep_all: bool = False
    min_face: float = 0.0
    max_yaw: float | None = None
    max_pitch: float | None = None
    min_sharpness: float = 0.0

    def __post_init__(self):
        for name in ("min_tube", "max_tube", "max_gap"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "max_gap" else 1):
                raise UsageError(f"{name} must be a {'non-negative' if name == 'max_gap' else 'positive'} "
                                 f"number of frames, got {value!r}")
        if self.max_tube < self.min_tube:
            raise UsageError(f"max_tube ({self.max_tube}) is shorter than min_tube ({self.min_tube})")
        if not self.max_shift > 0 or not self.max_zoom > 1 or not self.smooth_s >= 0 or not self.still_speed > 0:
            raise UsageError("max_shift and still_speed must be positive, max_zoom above 1 and smooth_s at least 0, "
                             f"got {self.max_shift!r}, {self.still_speed!r}, {self.max_zoom!r}, {self.smooth_s!r}")
        for name in ("max_yaw", "max_pitch"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 90:
                raise UsageError(f"{name} is in degrees, above 0 and at most 90, got {value!r}")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def crop_params(crop_mat: np.ndarray, size: int) -> np.ndarray:
    """``[..., 4]`` float64 (centre x, centre y, log scale, angle) of image -> crop similarity matrices
    ``[..., 3, 3]``: where the crop's centre lies in the image, image pixels per crop pixel (log), and the
    crop's rotation in radians."""
    inverse = np.linalg.inv(crop_mat.astype(np.float64))
    centre = (size - 1) / 2
    cx = inverse[..., 0, 0] * centre + inverse[..., 0, 1] * centre + inverse[..., 0, 2]
    cy = inverse[..., 1, 0] * centre + inverse[..., 1, 1] * centre + inverse[..., 1, 2]
    linear = inverse[..., :2, :2]
    scale = np.sqrt(np.abs(np.linalg.det(linear)))
    angle = np.arctan2(linear[..., 1, 0] - linear[..., 0, 1], linear[..., 0, 0] + linear[..., 1, 1])
    return np.stack([cx, cy, np.log(scale), angle], -1)


def params_to_mats(params: np.ndarray, size: int) -> np.ndarray:
    """The image -> crop matrices ``[..., 3, 3]`` float64 of :func:`crop_params`' parameters.

    Example:
        >>> mat = np.array([[0.5, 0.0, -10.0], [0.0, 0.5, -20.0], [0.0, 0.0, 1.0]])
        >>> np.allclose(params_to_mats(crop_params(mat, 112), 112), mat)
        True
    """
    cx, cy, log_scale, angle = np.moveaxis(params, -1, 0)
    scale = np.exp(-log_scale)  # crop pixels per image pixel
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    centre = (size - 1) / 2
    mats = np.zeros(params.shape[:-1] + (3, 3))
    mats[..., 0, 0], mats[..., 0, 1], mats[..., 1, 0], mats[..., 1, 1] = cos, sin, -sin, cos
    mats[..., 0, 2] = centre - (cos * cx + sin * cy)
    mats[..., 1, 2] = centre - (-sin * cx + cos * cy)
    mats[..., 2, 2] = 1
    return mats


def _smooth(params: np.ndarray, sigma: float, size: int, still_speed: float) -> np.ndarray:
    """Zero-phase smoothing of ``params [n, 4]`` along n: at each frame a Gaussian centred on it, of
    ``sigma`` frames where the face keeps still and narrower as it moves (``sigma / (1 + v / still_speed)``,
    v the crop corners' speed in image pixels a frame, read from the params smoothed at ``sigma``), so a
    still face is held still and a moving one followed without lag. The ends are reflected about
    themselves (odd reflection): a linear motion passes unchanged, to the tube's last frame."""
    if sigma <= 0 or len(params) < 2:
        return params
    radius = int(math.ceil(3 * sigma))
    padded = np.pad(params, ((radius, radius), (0, 0)), mode="reflect", reflect_type="odd")
    offsets = np.arange(-radius, radius + 1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, len(offsets), axis=0)  # [n, 4, 2r + 1]
    wide = (windows * _gaussian(offsets, np.full(len(params), sigma))[:, None, :]).sum(-1)
    half_diagonal = np.exp(wide[:, 2]) * size / math.sqrt(2)  # image pixels from the crop's centre to a corner
    step = np.abs(np.diff(wide, axis=0))
    speed = np.hypot(step[:, 0], step[:, 1]) + half_diagonal[1:] * (step[:, 2] + step[:, 3])
    speed = np.maximum(np.append(speed, speed[-1]), np.insert(speed, 0, speed[0]))  # the faster side of each frame
    local = sigma / (1 + speed / still_speed)
    return (windows * _gaussian(offsets, local)[:, None, :]).sum(-1)


def _gaussian(offsets: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """``[n, len(offsets)]`` normalised Gaussian taps, one row per sigma (0.3 frames at least: one tap)."""
    taps = np.exp(-0.5 * (offsets[None, :] / np.maximum(sigmas, 0.3)[:, None]) ** 2)
    return taps / taps.sum(1, keepdims=True)


def _filtered(quality: dict[str, np.ndarray], options: TubeOptions) -> np.ndarray:
    """``[F, K]`` int8: the first quality filter each face fails (a :data:`DROP_REASONS` index), else 0."""
    shape = next(iter(quality.values())).shape
    reason = np.zeros(shape, np.int8)
    tests = ((_SMALL, "face_size", lambda v: v < options.min_face if options.min_face else None),
             (_YAW, "yaw", lambda v: np.abs(v) > options.max_yaw if options.max_yaw else None),
             (_PITCH, "pitch", lambda v: np.abs(v) > options.max_pitch if options.max_pitch else None),
             (_BLUR, "sharpness", lambda v: v < options.min_sharpness if options.min_sharpness else None))
    for code, name, fails in tests:
        with np.errstate(invalid="ignore"):
            failed = fails(quality[name])
        if failed is not None:
            reason[(reason == 0) & failed] = code
    return reason


def find_tubes(face_idx: np.ndarray, crop_mat: np.ndarray, track_kept: np.ndarray, quality: dict[str, np.ndarray],
               crop_size: int, fps: float, options: TubeOptions) -> dict[str, np.ndarray]:
    """The tube arrays (see the module doc) of one video's ``face_idx [F, K]``, ``crop_mat [F, K, 3, 3]``,
    ``track_kept [T]``, quality columns ``[F, K]``, at ``fps`` frames a second."""
    frames, slots = face_idx.shape
    drop = np.where(face_idx >= 0, _filtered(quality, options), -1).astype(np.int8)
    tube_idx = np.full(face_idx.shape, -1, np.int64)
    params = np.zeros(face_idx.shape + (4,))
    present = face_idx >= 0
    params[present] = crop_params(crop_mat[present], crop_size)
    sigma = options.smooth_s * fps
    table = {k: [] for k in ("face", "number", "start", "stop")}
    rows = {k: [] for k in ("tube", "index", "slot", "mat")}
    for face in range(len(track_kept)):
        at_frame, at_slot = np.nonzero((face_idx == face) & (drop == 0))
        if not (track_kept[face] or options.keep_all):
            drop[face_idx == face] = np.where(drop[face_idx == face] == 0, _TRACK, drop[face_idx == face])
            continue
        for run in _runs(at_frame, params[at_frame, at_slot], crop_size, options):
            frame_run, slot_run = at_frame[run], at_slot[run]
            start, stop = int(frame_run[0]), int(frame_run[-1]) + 1
            if stop - start < options.min_tube:
                drop[frame_run, slot_run] = _SHORT
                continue
            tube = len(table["face"])
            tube_idx[frame_run, slot_run] = tube
            table["face"].append(face)
            table["number"].append(sum(f == face for f in table["face"]) - 1)
            table["start"].append(start)
            table["stop"].append(stop)
            span = np.arange(start, stop)
            known = params[frame_run, slot_run]
            known[:, 3] = np.unwrap(known[:, 3])
            filled = np.stack([np.interp(span, frame_run, known[:, p]) for p in range(4)], 1)
            slot_of = np.full(stop - start, -1, np.int64)
            slot_of[frame_run - start] = slot_run
            rows["tube"].append(np.full(stop - start, tube, np.int64))
            rows["index"].append(span.astype(np.int64))
            rows["slot"].append(slot_of)
            smoothed = _smooth(filled, sigma, crop_size, options.still_speed)
            rows["mat"].append(params_to_mats(smoothed, crop_size).astype(np.float32))
    result = {"tube_idx": tube_idx, "tube_drop": drop}
    result.update({f"tube_{k}": np.array(v, np.int64) for k, v in table.items()})
    result.update(tube_frame_tube=_join(rows["tube"], np.int64), tube_frame_index=_join(rows["index"], np.int64),
                  tube_frame_slot=_join(rows["slot"], np.int64),
                  tube_crop_mat=np.concatenate(rows["mat"]) if rows["mat"] else np.zeros((0, 3, 3), np.float32))
    return result


def _join(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def _runs(frames: np.ndarray, params: np.ndarray, crop_size: int, options: TubeOptions) -> list[slice]:
    """Slices of one face's detections (``frames`` ascending, their crop ``params [n, 4]``) that make a
    tube each: split at gaps over ``max_gap``, at jumps, and at ``max_tube`` frames."""
    side = np.exp(params[:, 2]) * crop_size  # the crop's side in image pixels
    shift = np.hypot(*np.diff(params[:, :2], axis=0).T) / side[:-1]
    zoom = np.exp(np.abs(np.diff(params[:, 2])))
    runs, begin = [], 0
    for i in range(1, len(frames)):
        if (frames[i] - frames[i - 1] - 1 > options.max_gap or zoom[i - 1] > options.max_zoom
                or shift[i - 1] > options.max_shift or frames[i] - frames[begin] >= options.max_tube):
            runs.append(slice(begin, i))
            begin = i
    if len(frames):
        runs.append(slice(begin, len(frames)))
    return runs


class CausalSmoother:
    """Live crops held steady: a One-Euro filter per face id over the crop's parameters (see the module doc).

    Each parameter's speed is measured in crop pixels a second (the centre's, the corners' from scale and
    rotation), and the filter's cut-off rises with it: ``min_cutoff`` Hz for a face at rest, plus
    ``beta`` Hz per crop pixel a second, so a still face's jitter is averaged away and a moving face is
    followed within a frame or two. A face unseen for more than ``max_gap_s`` starts afresh.
    """

    def __init__(self, crop_size: int, min_cutoff: float = 1.0, beta: float = 0.02, max_gap_s: float = 0.5):
        self.size, self.min_cutoff, self.beta, self.max_gap_s = crop_size, min_cutoff, beta, max_gap_s
        self.faces: dict[int, tuple[float, np.ndarray, np.ndarray]] = {}  # id -> (time, value, speed)

    def update(self, face_idx: np.ndarray, crop_mat: np.ndarray, seconds: float) -> np.ndarray:
        """Smoothed ``[K, 3, 3]`` float32 of one frame's ``crop_mat [K, 3, 3]`` at ``seconds`` (rows whose
        ``face_idx`` is -1 are returned as they are)."""
        smoothed = np.array(crop_mat, np.float32)
        for slot in np.nonzero(face_idx >= 0)[0]:
            face, value = int(face_idx[slot]), crop_params(crop_mat[slot], self.size)
            last = self.faces.get(face)
            if last is None or not 0 < seconds - last[0] <= self.max_gap_s:
                self.faces[face] = (seconds, value, np.zeros(4))
                continue
            then, previous, speed = last
            step = seconds - then
            value[3] = previous[3] + (value[3] - previous[3] + np.pi) % (2 * np.pi) - np.pi  # no wrap-around
            to_pixels = np.array([1 / np.exp(previous[2]), 1 / np.exp(previous[2]), self.size, self.size / 2])
            speed = speed + _alpha(1.0, step) * ((value - previous) / step * to_pixels - speed)
            cutoff = self.min_cutoff + self.beta * np.hypot(np.hypot(speed[0], speed[1]), np.hypot(speed[2], speed[3]))
            value = previous + _alpha(cutoff, step) * (value - previous)
            self.faces[face] = (seconds, value, speed)
            smoothed[slot] = params_to_mats(value, self.size)
        return smoothed


def _alpha(cutoff: float, step: float) -> float:
    """The weight of a new sample in a first-order low-pass at ``cutoff`` Hz, ``step`` seconds on."""
    return 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff * step))


def frame_rate(pts_seconds: np.ndarray) -> float:
    """Frames a second from the frames' timestamps (their median step); 25 where they have none."""
    steps = np.diff(pts_seconds[np.isfinite(pts_seconds)])
    steps = steps[steps > 0]
    return float(1 / np.median(steps)) if len(steps) else 25.0


def summarize_tubes(results: dict[str, np.ndarray], video: str) -> list[dict]:
    """Each tube of a results file's arrays as a dict: ``id`` (``<video stem>/<face>/<n>``), ``name`` (its
    path in a crops folder), ``face_idx``, ``number``, ``start``, ``stop`` (frames), ``start_s``,
    ``stop_s`` (seconds: the first frame's timestamp, the next frame's), ``frames``, ``detected`` (frames
    with the face found) and the medians of the quality columns over those (``yaw``, ``pitch``: of their
    absolute values)."""
    pts = results["pts_seconds"]
    step = 1 / frame_rate(pts)
    tubes = []
    for t, (face, number, start, stop) in enumerate(zip(results["tube_face"], results["tube_number"],
                                                        results["tube_start"], results["tube_stop"])):
        face, number, start, stop = int(face), int(number), int(start), int(stop)
        start_s = float(pts[start]) if np.isfinite(pts[start]) else start * step
        stop_s = float(pts[stop]) if stop < len(pts) and np.isfinite(pts[stop]) else start_s + (stop - start) * step
        mask = results["tube_idx"] == t
        summary = {}
        for name in ("face_size", "sharpness", "yaw", "pitch", "roll", "conf"):
            if name in results:
                values = results[name][mask].astype(np.float64)
                values = np.abs(values) if name in ("yaw", "pitch", "roll") else values
                finite = values[np.isfinite(values)]
                summary[name] = round(float(np.median(finite)), 3) if len(finite) else None
        tubes.append({"id": f"{Path(video).stem}/{face}/{number}", "name": f"face_{face:04d}/tube_{number:03d}",
                      "face_idx": face, "number": number, "start": start, "stop": stop, "frames": stop - start,
                      "start_s": round(start_s, 6), "stop_s": round(stop_s, 6), "detected": int(mask.sum()),
                      "median": summary})
    return tubes
