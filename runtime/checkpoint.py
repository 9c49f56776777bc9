"""A run's checkpoint, ``<output>.partial/``: results chunk by chunk, then one ``.npz``.

``chunk_NNNNNN.npz`` files hold the per-frame arrays of consecutive frames (and the crops kept
with them); ``meta.json`` lists the complete chunks and the run's identity (video, bundle,
settings). Each chunk also carries the tracker's state after its last frame (arrays named
``state.*``), so a resumed run goes on with exactly the ids an uninterrupted one gives. Every file
is written to a temporary name and renamed, and a chunk counts only once ``meta.json`` lists it.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .errors import CheckpointDamaged, StaleCheckpoint, VideoError

__all__ = ["CROP_ARRAYS", "Checkpoint", "checkpoint_folder"]

# Arrays with one row per saved crop rather than one per frame.
CROP_ARRAYS = ("imgs_crop", "crop_frame_index", "crop_slot")
STATE = "state."  # prefix of the tracker-state arrays, kept in the chunks only


def checkpoint_folder(output: Path) -> Path:
    """``<output>.partial/``, where an unfinished run of ``output`` keeps its results."""
    return output.with_name(output.name + ".partial")


class Checkpoint:
    """Open (or, with ``resume``, continue) the checkpoint of ``output`` for a run of ``identity``.

    ``discard``: an interrupted run's checkpoint there is removed first (``--force``). Raises
    :class:`VideoError` when an interrupted run is there and ``resume`` is False, and
    :class:`StaleCheckpoint` when it was made with another identity; each says which option to pass.
    """

    def __init__(self, output: Path, identity: dict, resume: bool, discard: bool = False):
        self.folder = checkpoint_folder(output)
        self.meta_path = self.folder / "meta.json"
        self.meta = None
        if discard:
            self.remove()
        if self.meta_path.is_file():
            try:
                self.meta = json.loads(self.meta_path.read_text())
                ours = self.meta["identity"] == identity
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                warnings.warn(f"{self.meta_path} is damaged: the run starts again from frame 0", CheckpointDamaged)
                self.meta = None
            else:
                if not ours:
                    raise StaleCheckpoint(f"{self.folder} holds an interrupted run of another video, bundle or "
                                          "setting; pass --force to discard it and start again")
                if not resume:
                    raise VideoError(f"{self.folder} holds an interrupted run of this video: pass --resume to "
                                     "continue it, or --force to discard it and start again")
                self._drop_damaged_chunks()
        if self.meta is None:
            self.folder.mkdir(exist_ok=True)
            self.meta = {"identity": identity, "chunks": []}
            self._write_meta()

    def _drop_damaged_chunks(self) -> None:
        """Check every listed chunk (its zip CRCs and frame count); from the first damaged one on, the
        chunks are dropped and their frames computed again, so a resumed run ends as an uninterrupted one."""
        for i, chunk in enumerate(self.meta["chunks"]):
            path = self.folder / chunk["file"]
            try:
                with zipfile.ZipFile(path) as archive:
                    intact = archive.testzip() is None
                if intact:
                    with np.load(path, allow_pickle=False) as data:
                        intact = len(data["frame_index"]) == chunk["frames"]
            except (OSError, zipfile.BadZipFile, KeyError, ValueError):
                intact = False
            if not intact:
                first = sum(c["frames"] for c in self.meta["chunks"][:i])
                warnings.warn(f"{path} is damaged: frames {first} on are computed again", CheckpointDamaged)
                for later in self.meta["chunks"][i:]:
                    (self.folder / later["file"]).unlink(missing_ok=True)
                del self.meta["chunks"][i:]
                self._write_meta()
                return

    @property
    def frames_done(self) -> int:
        return sum(chunk["frames"] for chunk in self.meta["chunks"])

    @property
    def chunk_files(self) -> list[Path]:
        return [self.folder / c["file"] for c in self.meta["chunks"]]

    def tracker_state(self) -> dict[str, np.ndarray] | None:
        """The tracker's state after the last complete chunk (None before the first)."""
        if not self.meta["chunks"]:
            return None
        with np.load(self.chunk_files[-1], allow_pickle=False) as data:
            return {k[len(STATE):]: data[k] for k in data.files if k.startswith(STATE)}

    def add(self, results: list[dict[str, np.ndarray]], state: dict[str, np.ndarray]) -> None:
        """Write some batches' results and the tracker ``state`` after them as one chunk, then list it."""
        if not results:
            return
        arrays = {k: np.concatenate([r[k] for r in results]) for k in results[0]}
        arrays.update({STATE + k: v for k, v in state.items()})
        name = f"chunk_{len(self.meta['chunks']):06d}.npz"
        tmp = self.folder / (name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, self.folder / name)
        finally:
            tmp.unlink(missing_ok=True)  # a full disk leaves no half-written chunk behind
        self.meta["chunks"].append({"file": name, "frames": len(arrays["frame_index"]),
                                    "crops": len(arrays.get("crop_slot", ()))})
        self._write_meta()

    def _write_meta(self) -> None:
        tmp = self.folder / "meta.json.tmp"
        try:
            tmp.write_text(json.dumps(self.meta, indent=1))
            os.replace(tmp, self.meta_path)
        finally:
            tmp.unlink(missing_ok=True)  # a full disk (or an interrupt) leaves no half-written list behind

    def write_npz(self, output: Path, extra: dict[str, np.ndarray], drop: tuple[str, ...] = ()) -> None:
        """Concatenate the chunks into one .npz, streamed array by array (memory: one chunk), plus ``extra``.

        ``drop``: arrays the chunks hold that the results file leaves out.
        """
        with np.load(self.chunk_files[0], allow_pickle=False) as first:
            names = [n for n in first.files if not n.startswith(STATE) and n not in drop]
        tmp = output.with_name(output.name + ".tmp")
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name in names:
                    key = "crops" if name in CROP_ARRAYS else "frames"
                    total = sum(c[key] for c in self.meta["chunks"])
                    with archive.open(_entry(name), "w", force_zip64=True) as f:
                        for i, chunk in enumerate(self.chunk_files):
                            with np.load(chunk, allow_pickle=False) as data:
                                array = np.ascontiguousarray(data[name])
                            if i == 0:
                                header = np.lib.format.header_data_from_array_1_0(array)
                                np.lib.format.write_array_header_2_0(f, {**header, "shape": (total,) + array.shape[1:]})
                            f.write(array.tobytes())
                for name, array in extra.items():
                    with archive.open(_entry(name), "w", force_zip64=True) as f:
                        np.lib.format.write_array(f, np.ascontiguousarray(array), version=(2, 0))
            os.replace(tmp, output)
        finally:
            tmp.unlink(missing_ok=True)

    def read(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The named per-frame arrays of every chunk, concatenated (small ones: masks, ids)."""
        parts = {n: [] for n in names}
        for chunk in self.chunk_files:
            with np.load(chunk, allow_pickle=False) as data:
                for n in names:
                    if n in data.files:
                        parts[n].append(data[n])
        return {n: np.concatenate(p) for n, p in parts.items() if p}

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _entry(name: str) -> zipfile.ZipInfo:
    # A fixed timestamp: the same results make the same bytes, wherever and whenever they are run.
    return zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
