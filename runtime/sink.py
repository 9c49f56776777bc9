"""Where one video's results go, in frame order: face ids, the checkpoint, crop files, the results file.

:class:`ResultsSink` gets each batch's per-frame arrays as the run makes them. It gives the faces
their ids (the online tracker), hands the crops to the crop writer, and every ``checkpoint_frames``
frames writes a checkpoint chunk with the tracker's state, after the crops of those frames are on
disk. :meth:`ResultsSink.finish` writes the results file and moves the crops folder into place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .checkpoint import CROP_ARRAYS, Checkpoint
from .crops import CROP_FORMATS, META, CropWriter, crops_folder, encode_mp4s, replace_folder
from .errors import VideoError
from .track import OnlineTracker, track_frames

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
        force: replace a crops folder made by another bundle or other settings.
    """

    def __init__(self, output: Path, video: Path, identity: dict, resume: bool, save_crops: bool, crops: str | None,
                 crop_size: int, jpeg_quality: int, dist_threshold: float, present_threshold: float, force: bool):
        if crops is not None and crops not in CROP_FORMATS:
            raise ValueError(f"crops must be one of {CROP_FORMATS} or None, got {crops!r}")
        if not 0 <= present_threshold <= 1:
            raise ValueError(f"present_threshold must be a fraction of the frames (0-1), got {present_threshold!r}")
        tracker = OnlineTracker(dist_threshold)  # checks it before the checkpoint folder is made
        self.output, self.save_crops, self.crops = output, save_crops, crops
        self.present_threshold = present_threshold
        self.identity = identity
        if crops is not None:
            _check_crops_target(crops_folder(output), identity, force)
        self.checkpoint = Checkpoint(output, identity, resume)
        state = self.checkpoint.tracker_state()
        self.tracker = tracker if state is None else OnlineTracker.from_state(state)
        self.writer = (CropWriter(self.checkpoint.folder / "crops", crops, str(video), crop_size, jpeg_quality)
                       if crops is not None else None)
        self.pending: list[dict[str, np.ndarray]] = []

    @property
    def keep_crops(self) -> bool:
        """Whether the checkpoint keeps the crops: for the results file, or to encode per-face videos."""
        return self.save_crops or self.crops == "mp4"

    @property
    def frames_done(self) -> int:
        return self.checkpoint.frames_done

    def add(self, result: dict[str, np.ndarray], imgs_crop: np.ndarray | None) -> None:
        """One batch's per-frame arrays (with ``face_idx``) and its crops ``[b, K, 3, S, S]`` (or None)."""
        self.pending.append(result)
        if self.writer is not None:
            self.writer.put({**result, "imgs_crop": imgs_crop})

    @property
    def pending_frames(self) -> int:
        return sum(len(r["frame_index"]) for r in self.pending)

    def flush(self) -> None:
        """Write the pending batches as a checkpoint chunk, once their crop files are on disk."""
        if not self.pending:
            return
        if self.writer is not None:
            self.writer.commit(len(self.checkpoint.meta["chunks"]))
        self.checkpoint.add(self.pending, self.tracker.state())
        self.pending = []

    def flush_interrupted(self) -> None:
        """At an error or interrupt: keep the pending batches, unless they are the start of a WebDataset
        shard. A shard is one checkpoint chunk, of the frames an uninterrupted run gives it, so that a
        resumed run writes the same shards; it computes those frames again instead."""
        if self.crops == "webdataset":
            self.pending = []
        else:
            self.flush()

    def finish(self) -> None:
        """Write the results file (and move the crops folder into place), then remove the checkpoint."""
        arrays = self.checkpoint.read(("valid", "face_idx"))
        lengths = track_frames(arrays["face_idx"])
        kept = lengths >= self.present_threshold * len(arrays["valid"])
        self.checkpoint.write_npz(self.output, {"track_frames": lengths, "track_kept": kept},
                                  drop=() if self.save_crops else CROP_ARRAYS)
        if self.crops is not None:
            folder = self.checkpoint.folder / "crops"
            if self.crops == "mp4":
                encode_mp4s(folder, self.checkpoint.chunk_files)
            (folder / META).write_text(json.dumps(self.identity, indent=1) + "\n")
            replace_folder(folder, crops_folder(self.output))
        self.checkpoint.remove()

    def close(self) -> None:
        """Stop the crop writer (the run ends here, finished or not)."""
        if self.writer is not None:
            self.writer.close()


def _check_crops_target(folder: Path, identity: dict, force: bool) -> None:
    """Refuse to replace a crops folder made by another bundle or settings (unless ``force``), or one we cannot."""
    if not folder.exists():
        return
    try:
        made_by = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        made_by = None
    if made_by != identity and not force:
        raise VideoError(f"{folder} holds crops of another video, bundle or setting (or no {META}); pass --force "
                         "to replace them, or choose another output")
    if not os.access(folder, os.W_OK) or not os.access(folder.parent, os.W_OK):
        raise VideoError(f"cannot replace {folder}: permission denied")
