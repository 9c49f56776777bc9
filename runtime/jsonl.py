"""The JSON-lines sink: one line per ``stream()`` result, as it comes (``facecrop run`` on a live source).

Each line holds the frame's ``frame_index``, ``pts_seconds``, ``latency_s``, ``dropped_before``,
``gap_s`` and its ``faces``: ``face_idx``, ``conf``, ``bbox`` and ``lms`` per face (the names of the
results file and of ``stream()``). Lines are flushed one by one, so a reader (``tail -f``) sees each
frame when it is done, and a run cut short leaves whole lines only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TextIO

import numpy as np

__all__ = ["frame_line", "write_json_lines"]


def frame_line(result: dict) -> str:
    """One ``stream()`` result as its JSON line (with the newline).

    Example:
        >>> r = {"frame_index": 3, "pts_seconds": 0.12, "latency_s": 0.03125, "dropped_before": 0, "gap_s": 0.0,
        ...      "valid": np.array([True, False]), "face_idx": np.array([0, -1]), "conf": np.array([0.9, 0.0]),
        ...      "bbox": np.zeros((2, 4)), "lms": np.zeros((2, 5, 2))}
        >>> frame_line(r)[:70]
        '{"frame_index": 3, "pts_seconds": 0.12, "latency_s": 0.0312, "dropped_'
    """
    faces = [{"face_idx": int(result["face_idx"][k]), "conf": round(float(result["conf"][k]), 4),
              "bbox": np.round(result["bbox"][k], 2).tolist(), "lms": np.round(result["lms"][k], 2).tolist()}
             for k in np.flatnonzero(result["valid"])]
    return json.dumps({"frame_index": result["frame_index"], "pts_seconds": result["pts_seconds"],
                       "latency_s": round(result["latency_s"], 4), "dropped_before": result["dropped_before"],
                       "gap_s": round(result["gap_s"], 3), "faces": faces}) + "\n"


def write_json_lines(results: Iterable[dict], out: TextIO) -> int:
    """Write a line per result into ``out`` as each comes, flushed; the number of lines."""
    count = 0
    for result in results:
        out.write(frame_line(result))
        out.flush()
        count += 1
    return count
