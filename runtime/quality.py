"""What a run found in a video, in a few numbers: the per-video quality summary.

Printed at the end of ``facecrop run`` and stored in a dataset's manifest, so a researcher sees at
a glance which videos lack faces, hold several people or crowds the bundle cannot keep.
"""

from __future__ import annotations

import numpy as np

__all__ = ["format_summary", "overflow_warning", "summarize", "summarize_results"]


def summarize(valid: np.ndarray, face_idx: np.ndarray, overflow: np.ndarray | None,
              track_kept: np.ndarray) -> dict:
    """The summary of one video's results.

    Args:
        valid: ``[F, K]`` bool; face_idx: ``[F, K]`` int64 (-1: no face); track_kept: ``[T]`` bool
            (tracks present in enough frames); overflow: ``[F]`` bool, or None for a bundle that
            cannot report it.

    Returns:
        ``{"frames", "faces", "frames_no_face", "frames_several_faces", "tracks", "tracks_kept",
        "longest_track", "overflow_frames"}`` (``overflow_frames`` None when unknown).

    Example:
        >>> summarize(np.array([[True, False], [True, True]]), np.array([[0, -1], [0, 1]]),
        ...           np.array([False, False]), np.array([True, False]))["longest_track"]
        2
    """
    per_frame = valid.sum(1)
    lengths = np.bincount(face_idx[face_idx >= 0]) if valid.any() else np.zeros(0, np.int64)
    return {"frames": int(len(valid)), "faces": int(per_frame.sum()),
            "frames_no_face": int((per_frame == 0).sum()), "frames_several_faces": int((per_frame > 1).sum()),
            "tracks": int(len(lengths)), "tracks_kept": int(track_kept.sum()),
            "longest_track": int(lengths.max()) if len(lengths) else 0,
            "overflow_frames": None if overflow is None else int(overflow.sum())}


def summarize_results(path) -> dict:
    """:func:`summarize` of a results file written by ``process_video``."""
    with np.load(path, allow_pickle=False) as r:
        overflow = r["overflow"] if "overflow" in r.files else None
        return summarize(r["valid"], r["face_idx"], overflow, r["track_kept"])


def format_summary(summary: dict) -> str:
    """One line for people, e.g. ``376 frames: 170 without a face, 0 with several; 2 tracks (1 kept), ...``."""
    overflow = "unknown (bundle format < 3.2)" if summary["overflow_frames"] is None else summary["overflow_frames"]
    return (f"{summary['frames']} frames, {summary['faces']} faces: {summary['frames_no_face']} frames without a "
            f"face, {summary['frames_several_faces']} with several; {summary['tracks']} tracks "
            f"({summary['tracks_kept']} kept), the longest {summary['longest_track']} frames; "
            f"frames with more faces than the bundle keeps: {overflow}")


def overflow_warning(frames: int, max_faces: int) -> str | None:
    """The warning for frames that found more faces than the bundle keeps, or None when there are none."""
    if not frames:
        return None
    return (f"warning: {frames} frames found more than {max_faces} faces and kept the {max_faces} best; "
            f"export a bundle with a larger --max-faces to keep them all")
