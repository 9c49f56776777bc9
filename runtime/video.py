"""Run a bundle over a video: decode in a child process, run batches, checkpoint, write one .npz.

Every decoded frame gets one row, in decoding (= presentation) order (``frame_index[i] == i``; no
faces: ``valid[i]`` all False). RGB frames go to the module at their own size (it letterboxes inside,
as InsightFace does), so coordinates are in the video's pixels; where a stream changes size, a batch
ends. Results are checkpointed in ``<output>.partial/`` as they come (for ``resume=True``, and to keep
the frames before a corrupt spot). The arrays are documented in ``bundles/README.md``.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import av
import numpy as np
import torch

from .bundle import Bundle
from .decode_worker import declared_end, frames_per_batch
from .decoder import Batch, Decoder, DecoderDied, End
from .progress import Progress

PER_FRAME = ("valid", "conf", "bbox", "lms", "crop_mat")


class VideoError(ValueError):
    """A video that cannot be (fully) processed, or results that cannot be written."""


class StaleCheckpoint(VideoError):
    """``<output>.partial/`` was made from another video, bundle or setting."""


def _run_batch(bundle: Bundle, batch: Batch, save_crops: bool) -> dict[str, np.ndarray]:
    """One batch through the module -> per-frame arrays (+ crops of valid faces)."""
    outputs = {k: v.cpu().numpy() for k, v in bundle(torch.from_numpy(batch.frames)).items()}
    result = {k: outputs[k] for k in PER_FRAME if k in outputs}
    result.update(frame_index=batch.frame_index, pts_seconds=batch.pts_seconds)
    if save_crops:
        rows, slots = np.nonzero(outputs["valid"])
        result.update(imgs_crop=outputs["imgs_crop"][rows, slots], crop_frame_index=batch.frame_index[rows],
                      crop_slot=slots.astype(np.int64))
    return result


def checkpoint_folder(output: Path) -> Path:
    """``<output>.partial/``, where an unfinished run of ``output`` keeps its results."""
    return output.with_name(output.name + ".partial")


class _Checkpoint:
    """``<output>.partial/``: chunk_NNNNNN.npz files plus meta.json listing the complete ones."""

    def __init__(self, output: Path, identity: dict, resume: bool):
        self.folder = checkpoint_folder(output)
        self.meta_path = self.folder / "meta.json"
        if self.meta_path.is_file():
            if not resume:
                raise VideoError(f"{self.folder} holds an interrupted run: pass --resume to continue it, "
                                 "or delete it to start again")
            self.meta = json.loads(self.meta_path.read_text())
            if self.meta["identity"] != identity:
                raise StaleCheckpoint(f"{self.folder} was made from another video, bundle or setting; "
                                 "delete it to start again")
        else:
            self.folder.mkdir(exist_ok=True)
            self.meta = {"identity": identity, "chunks": []}
            self._write_meta()

    @property
    def frames_done(self) -> int:
        return sum(chunk["frames"] for chunk in self.meta["chunks"])

    def add(self, results: list[dict[str, np.ndarray]]) -> None:
        """Write the results of some batches as one chunk, then record it in meta.json (both atomic)."""
        if not results:
            return
        arrays = {k: np.concatenate([r[k] for r in results]) for k in results[0]}
        name = f"chunk_{len(self.meta['chunks']):06d}.npz"
        tmp = self.folder / (name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, self.folder / name)
        self.meta["chunks"].append({"file": name, "frames": len(arrays["frame_index"]),
                                    "crops": len(arrays.get("crop_slot", ()))})
        self._write_meta()

    def _write_meta(self) -> None:
        tmp = self.folder / "meta.json.tmp"
        tmp.write_text(json.dumps(self.meta, indent=1))
        os.replace(tmp, self.meta_path)

    def write_npz(self, output: Path) -> None:
        """Concatenate the chunks into one .npz, streamed array by array (memory: one chunk)."""
        chunks = [self.folder / c["file"] for c in self.meta["chunks"]]
        with np.load(chunks[0], allow_pickle=False) as first:
            names = list(first.files)
        tmp = output.with_name(output.name + ".tmp")
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name in names:
                    key = "crops" if name in ("imgs_crop", "crop_frame_index", "crop_slot") else "frames"
                    total = sum(c[key] for c in self.meta["chunks"])
                    # A fixed timestamp: the same results make the same bytes, wherever and whenever they are run.
                    entry = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                    with archive.open(entry, "w", force_zip64=True) as f:
                        for i, chunk in enumerate(chunks):
                            with np.load(chunk, allow_pickle=False) as data:
                                array = np.ascontiguousarray(data[name])
                            if i == 0:
                                header = np.lib.format.header_data_from_array_1_0(array)
                                np.lib.format.write_array_header_2_0(f, {**header, "shape": (total,) + array.shape[1:]})
                            f.write(array.tobytes())
            os.replace(tmp, output)
        finally:
            tmp.unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _check_output(output: Path) -> None:
    """Fail before any decoding if the results cannot be written where asked."""
    parent = output.absolute().parent
    if output.is_dir():
        raise VideoError(f"output {output} is a folder; give a file name such as results.npz")
    if not parent.is_dir():
        raise VideoError(f"cannot write {output}: folder {parent} does not exist")
    probe = parent / f".{output.name}.probe"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise VideoError(f"cannot write {output}: {err.strerror}") from None


def _video_info(video: Path) -> tuple[int, tuple[int, int], dict]:
    """Open the video once to check it has a video stream; returns (expected frames or 0, (width, height), identity)."""
    if not video.is_file():
        raise VideoError(f"video {video} not found")
    try:
        with av.open(str(video)) as container:
            if not container.streams.video:
                raise VideoError(f"{video} has no video stream")
            stream = container.streams.video[0]
            expected = stream.frames or round((declared_end(stream) or 0) * float(stream.average_rate or 0))
            size = (stream.codec_context.width, stream.codec_context.height)
    except av.error.FFmpegError as err:
        raise VideoError(f"cannot open {video} as a video: {err}") from None
    stat = video.stat()
    return expected, size, {"video": str(video.absolute()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def process_video(bundle: Bundle, video: str | Path, output: str | Path, batch_size: int = 8,
                  save_crops: bool = False, resume: bool = False, progress: bool = True,
                  checkpoint_frames: int = 256, on_frames=None, decoder: Decoder | None = None) -> Path:
    """Detect faces in every frame of ``video`` and write the results to the ``.npz`` file ``output``.

    Args:
        bundle: a loaded :class:`~facecrop.runtime.Bundle`. video: any file FFmpeg decodes.
        output: the results file, written atomically at the end (arrays in ``bundles/README.md``).
        batch_size: frames per module call; frames above 720p come in smaller batches, so that a batch
            holds at most 24 MiB of frames (4 at 1080p, 1 at 4K).
        save_crops: also store ``imgs_crop [N, 3, S, S]`` of every valid face, with
            ``crop_frame_index [N]`` and ``crop_slot [N]``.
        resume: continue the interrupted run recorded in ``<output>.partial/``.
        progress: show a progress bar (frames/s) on stderr.
        checkpoint_frames: write a checkpoint chunk at least every this many frames.
        on_frames: called with the number of frames after each batch (a dataset's progress).
        decoder: a :class:`~facecrop.runtime.decoder.Decoder` already started on this video, as a
            dataset run starts the next video's while this one runs; it is used if its arguments
            are those needed here, else replaced. Closed by the run (closing it again does nothing).

    Returns:
        ``output``. Raises :class:`VideoError` for an unreadable, empty, truncated or corrupt video;
        for the last two the frames before the damage stay in ``<output>.partial/``.

    Example:
        >>> process_video(load_bundle("bundles/det_500m/1.0.0"), "talk.mp4", "talk.npz")  # doctest: +SKIP
        PosixPath('talk.npz')
    """
    video, output = Path(video), Path(output)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if save_crops and "imgs_crop" not in bundle.output_names:
        raise ValueError(f"save_crops needs a bundle with crops; this one outputs {bundle.output_names}")
    _check_output(output)
    expected, (width, height), identity = _video_info(video)
    identity.update(artifact_sha256=bundle.manifest["artifact"]["sha256"], save_crops=save_crops)
    checkpoint = _Checkpoint(output, identity, resume)
    done = checkpoint.frames_done
    bar = Progress(expected, initial=done, enabled=progress)
    low, high = bundle.side_bounds
    needed = (str(video), batch_size, done, 3 * high * high)
    if decoder is None or decoder.args != needed:
        if decoder is not None:
            decoder.close()
        decoder = Decoder(*needed)
    threads = torch.get_num_threads()
    if bundle.device.type == "cpu":  # one thread fewer: the decoding process gets a core of its own
        torch.set_num_threads(max(1, threads - 1))
    pending, pending_frames = [], 0
    try:
        # While the decoding process starts (about 100 ms before its first batch), as the video's batches
        # come; a container that does not declare the frame size gets batch_size.
        bundle.warm_up(min(frames_per_batch(batch_size, max(1, width), max(1, height)), max(1, expected - done)))
        for item in decoder:
            if isinstance(item, End):
                break
            height, width = item.frames.shape[2:]
            if not (low <= height <= high and low <= width <= high):
                raise VideoError(f"{video}: frame {item.frame_index[0]} is {width}x{height}, outside the bundle's "
                                 f"{low}-{high} px a side; results for the frames before it are kept in "
                                 f"{checkpoint.folder}")
            pending.append(_run_batch(bundle, item, save_crops))
            decoder.release(item.slot)
            pending_frames += len(item.frame_index)
            bar.update(len(item.frame_index))
            if on_frames is not None:
                on_frames(len(item.frame_index))
            if pending_frames >= checkpoint_frames:
                checkpoint.add(pending)
                pending, pending_frames = [], 0
    except DecoderDied as err:
        raise VideoError(f"{video}: {err}; results for the frames before it are kept in {checkpoint.folder}") from None
    finally:
        checkpoint.add(pending)  # results computed before an error or interrupt are kept
        bar.close()
        decoder.close()
        torch.set_num_threads(threads)
    if item.count == 0:
        checkpoint.remove()
        raise VideoError(f"{video} contains no video frames")
    if item.problem:
        kept = checkpoint.frames_done
        if kept == 0:
            checkpoint.remove()
        where = f"results for frames 0-{kept - 1} are kept in {checkpoint.folder}" if kept else "no frame was decoded"
        raise VideoError(f"{video}: {item.problem}; {where}")
    checkpoint.write_npz(output)
    checkpoint.remove()
    return output
