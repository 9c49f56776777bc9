"""Where one video's results go, in frame order: face ids, the checkpoint, the tubes, the results file.

:class:`ResultsSink` gets each batch's per-frame arrays as the run makes them. It gives the faces
their ids (the online tracker) and every ``checkpoint_frames`` frames writes a checkpoint chunk with
the tracker's state. :meth:`ResultsSink.finish`, with every frame in, cuts the faces into tubes
(:mod:`~facecrop.runtime.tubes`: their smoothing needs the frames after each), writes their crop
files (:mod:`~facecrop.runtime.crops`), the results file, and moves the crops folder into place; a
run without crop files removes an earlier run's crops folder that no longer matches the new results.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from .checkpoint import CROP_ARRAYS, Checkpoint
from .crops import CROP_FORMATS, META, TUBES, crops_folder, replace_folder, write_tubes
from .errors import StaleCropsRemoved, UsageError, VideoError
from .face_quality import QUALITY_COLUMNS
from .track import OnlineTracker, track_frames
from .tubes import TubeOptions, find_tubes, frame_rate, summarize_tubes

__all__ = ["ResultsSink"]


class ResultsSink:
    """Results of ``video`` for the results file ``output``; ``identity`` says what made them (the
    checkpoint and the crops folder record it).

    Args:
        save_crops: keep ``imgs_crop`` (and ``crop_frame_index``, ``crop_slot``) in the results file.
        crops: write crop files, one of ``CROP_FORMATS``, or None. crop_size: their side in pixels.
        jpeg_quality: FFmpeg's JPEG quantiser for ``jpg`` (2 best .. 31).
        dist_threshold: the tracker's (see :class:`~facecrop.runtime.track.OnlineTracker`).
        present_threshold: tracks present in fewer than this fraction of the frames are marked
            (``track_kept`` False), never removed.
        force: discard an interrupted run's checkpoint, and replace a crops folder facecrop did not make.
        tubes: how faces are cut into tubes (and which tubes' crops are written).
        made_by: what the crops folder's ``meta.json`` says beyond ``identity`` (the bundle's models and licence).
    """

    def __init__(self, output: Path, video: Path, identity: dict, resume: bool, save_crops: bool, crops: str | None,
                 crop_size: int, jpeg_quality: int, dist_threshold: float, present_threshold: float, force: bool,
                 tubes: TubeOptions = TubeOptions(), made_by: dict | None = None):
        if crops is not None and crops not in CROP_FORMATS:
            raise UsageError(f"crops must be one of {CROP_FORMATS} or None, got {crops!r}")
        if not 0 <= present_threshold <= 1:
            raise UsageError(f"present_threshold must be a fraction of the frames (0-1), got {present_threshold!r}")
        tracker = OnlineTracker(dist_threshold)  # checks it before the checkpoint folder is made
        self.output, self.video, self.save_crops, self.crops = output, video, save_crops, crops
        self.present_threshold, self.crop_size, self.jpeg_quality = present_threshold, crop_size, jpeg_quality
        self.identity, self.tubes = identity, tubes
        # What the crops depend on beyond the checkpoint's identity: how tubes are cut.
        self.crops_identity = {**identity, "tubes": tubes.as_dict()}
        self.made_by = made_by or {}
        if crops is not None:
            _check_crops_target(crops_folder(output), force)
        self.checkpoint = Checkpoint(output, identity, resume, discard=force)
        state = self.checkpoint.tracker_state()
        self.tracker = tracker if state is None else OnlineTracker.from_state(state)
        self.pending: list[dict[str, np.ndarray]] = []

    @property
    def keep_crops(self) -> bool:
        """Whether the checkpoint keeps the module's crops (for the results file)."""
        return self.save_crops

    @property
    def frames_done(self) -> int:
        return self.checkpoint.frames_done

    def add(self, result: dict[str, np.ndarray]) -> None:
        """One batch's per-frame arrays (with ``face_idx``)."""
        self.pending.append(result)

    @property
    def pending_frames(self) -> int:
        return sum(len(r["frame_index"]) for r in self.pending)

    def flush(self) -> None:
        """Write the pending batches as a checkpoint chunk."""
        if not self.pending:
            return
        self.checkpoint.add(self.pending, self.tracker.state())
        self.pending = []

    def finish(self, progress: bool = False) -> None:
        """Cut the tubes and write their crop files (``progress``: with a progress bar), write the results
        file (and move the crops folder into place), then remove the checkpoint."""
        arrays = self.checkpoint.read(("valid", "face_idx", "crop_mat", "pts_seconds", "conf", *QUALITY_COLUMNS)
                                      + (("bbox", "lms") if self.crops == "webdataset" else ()))
        lengths = track_frames(arrays["face_idx"])
        kept = lengths >= self.present_threshold * len(arrays["valid"])
        extra = {"track_frames": lengths, "track_kept": kept}
        if "crop_mat" in arrays:  # a bundle with crops: its faces make tubes
            extra.update(find_tubes(arrays["face_idx"], arrays["crop_mat"], kept,
                                    {k: arrays[k] for k in QUALITY_COLUMNS}, self.crop_size,
                                    frame_rate(arrays["pts_seconds"]), self.tubes))
        extra.update(tube_options=np.array([json.dumps(self.tubes.as_dict())]), crop_size=np.array([self.crop_size]),
                     video=np.array([str(self.video.absolute())]))
        folder = self.checkpoint.folder / "crops"
        if self.crops is not None:
            tubes = summarize_tubes({**arrays, **extra}, str(self.video))
            try:
                write_tubes(self.video, folder, {**arrays, **extra}, tubes, self.crops, self.crop_size,
                            self.jpeg_quality, progress)
                (folder / TUBES).write_text(json.dumps(tubes, indent=1) + "\n")
                (folder / META).write_text(json.dumps({**self.crops_identity, **self.made_by}, indent=1) + "\n")
            except BaseException:  # a full disk, Ctrl-C: half the files would only hold the space a rerun needs
                shutil.rmtree(folder, ignore_errors=True)
                raise
        self.checkpoint.write_npz(self.output, extra, drop=() if self.save_crops else CROP_ARRAYS)
        if self.crops is not None:
            replace_folder(folder, crops_folder(self.output))
        elif crops_folder(self.output).exists():
            _remove_stale_crops(crops_folder(self.output), self.crops_identity)
        self.checkpoint.remove()


# The parts of a run's identity that decide face ids, tubes and crop pixels: crops made with the same values
# still match a new results file (whatever their format); crops made otherwise do not.
SAME_CROPS = ("video", "size", "mtime_ns", "artifact_sha256", "upright", "dist_threshold", "tubes")


def _made_by(folder: Path) -> dict | None:
    """The identity a crops folder's ``meta.json`` records, or None where it has none (not facecrop's)."""
    try:
        made_by = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None
    return made_by if isinstance(made_by, dict) else None


def _check_crops_target(folder: Path, force: bool) -> None:
    """Refuse to replace a folder facecrop did not make (unless ``force``), or one we cannot."""
    if not folder.exists():
        return
    if _made_by(folder) is None and not force:
        raise VideoError(f"{folder} is not a crops folder facecrop made (it has no {META}); pass --force "
                         "to replace it, or choose another output")
    if not os.access(folder, os.W_OK) or not os.access(folder.parent, os.W_OK):
        raise VideoError(f"cannot replace {folder}: permission denied")


def _remove_stale_crops(folder: Path, identity: dict) -> None:
    """A run without crops files: an earlier run's crops folder whose face ids or pixels no longer match
    the new results is removed (said in a warning); one that still matches is kept."""
    made_by = _made_by(folder)
    if made_by is None or all(made_by.get(k) == identity.get(k) for k in SAME_CROPS):
        return  # not facecrop's (left alone), or still right
    shutil.rmtree(folder)
    warnings.warn(f"removed {folder}: crops of an earlier run of another video, bundle or tracker setting, "
                  "whose face ids no longer match the new results", StaleCropsRemoved)
