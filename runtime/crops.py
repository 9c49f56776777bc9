"""Face tubes on disk, where training code reads them: per-tube videos with sound, image folders, shards.

A run with ``crops=FORMAT`` writes its tubes (:mod:`facecrop.runtime.tubes`) once the video's
results are complete, because a tube's smoothed crop needs the frames after it: the video is
decoded a second time (frames upright, as the run saw them), each tube's crops are cut from it with
the smoothed matrices (:func:`~facecrop.runtime.cut.cut_crops`: the bundle's sampling, in numpy) and
written into ``<output>.partial/crops/``, which then replaces ``<results stem>.crops/`` (``talk.npz`` ->
``talk.crops/``) in one rename. An interrupted run keeps its checkpoint; run again to write them.

Layouts (``bundles/README.md``), a tube being ``face_<id>/tube_<n>``:

- ``mp4``: ``face_0003/tube_000.mp4``: H.264 at the source's frame rate and timestamps (from 0), with
  the source's sound for exactly the tube's time range (AAC, cut to the sample), and
  ``face_0003/tube_000.frames.txt``, the source frame index of each of its frames, one a line.
- ``png`` (lossless), ``jpg``: ``face_0003/tube_000/frame_000123.png``, named by source frame index.
- ``webdataset``: ``shard-000000.tar`` ... (up to ``SHARD_SAMPLES`` samples each, in frame order), a
  sample per tube frame: ``<key>.png`` and ``<key>.json`` (video, tube, face_idx, frame_index,
  pts_seconds, detected, conf, bbox, lms, crop_mat, quality), key
  ``<video stem>_face0003_tube000_f000123``.

Every crops folder holds ``tubes.json`` (each tube's frames, times, files and quality summary) and
``meta.json`` (what made it, with the models' licence). Images are encoded by PyAV (FFmpeg's png and
mjpeg encoders), video by libx264: no dependency beyond the runtime's.
"""

from __future__ import annotations

import io
import json
import os
import queue
import re
import shutil
import tarfile
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .cut import cut_crops
from .progress import Progress
from .sources import read_frames
from .video_out import VideoOut

__all__ = ["CROP_FORMATS", "META", "TUBES", "crops_folder", "replace_folder", "write_tubes"]

CROP_FORMATS = ("png", "jpg", "mp4", "webdataset")
META = "meta.json"
TUBES = "tubes.json"
SHARD_SAMPLES = 1000


def crops_folder(output: Path) -> Path:
    """Where the crops of the results file ``output`` go: ``talk.npz`` -> ``talk.crops/``."""
    return output.with_suffix(".crops")


def tube_name(face: int, number: int) -> str:
    """A tube's path in its crops folder, without suffix: ``face_0003/tube_000``."""
    return f"face_{face:04d}/tube_{number:03d}"


class ImageEncoder:
    """RGB uint8 ``[S, S, 3]`` crops -> PNG (``compression_level`` 1: 4x faster than the default, same
    pixels) or JPEG bytes (4:4:4, FFmpeg's fixed quantiser ``quality``: 2 is the best, 31 the worst)."""

    def __init__(self, fmt: str, size: int, quality: int = 2):
        codec, pix_fmt, options = (("png", "rgb24", {"compression_level": "1"}) if fmt in ("png", "webdataset")
                                   else ("mjpeg", "yuvj444p", {"qmin": str(quality), "qmax": str(quality)}))
        self.context = av.CodecContext.create(codec, "w")
        self.context.width = self.context.height = size
        self.context.pix_fmt, self.context.time_base, self.context.options = pix_fmt, Fraction(1, 25), options
        self.pix_fmt, self.to_pix_fmt = pix_fmt, VideoReformatter()  # swscale set up once, not for every crop

    def __call__(self, crop: np.ndarray) -> bytes:
        frame = av.VideoFrame.from_ndarray(crop, format="rgb24")
        if self.pix_fmt != "rgb24":
            frame = self.to_pix_fmt.reformat(frame, format=self.pix_fmt)
        return b"".join(bytes(p) for p in self.context.encode(frame))


def _sample_key(video: str) -> str:
    """The video's part of a WebDataset key: its stem with dots (which end a key) and slashes replaced."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", Path(video).stem)


def write_tubes(video: Path, folder: Path, results: dict[str, np.ndarray], tubes: list[dict], fmt: str,
                size: int, jpeg_quality: int = 2, progress: bool = False) -> None:
    """Write the crops of ``tubes`` (:func:`~facecrop.runtime.tubes.summarize_tubes`, each with its
    ``name``) of ``video`` into ``folder`` (made afresh) as ``fmt``; ``progress``: a progress bar of the
    frames decoded.

    ``results``: the video's per-frame arrays (``pts_seconds``, ``conf``, ``bbox``, ``lms`` and the
    quality columns, for the WebDataset JSON) and its tube arrays (``tube_frame_*``, ``tube_crop_mat``).
    """
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted attempt's files: written again
    folder.mkdir(parents=True)
    order = np.argsort(results["tube_frame_index"], kind="stable")  # tube frames in decoding order
    frames_at, rows_at = np.unique(results["tube_frame_index"][order], return_index=True)
    if not len(frames_at):
        return
    rows_at = np.append(rows_at, len(order))
    sink = _Sinks(video, folder, results, tubes, fmt, size, jpeg_quality)
    bar = Progress(int(frames_at[-1]) + 1, enabled=progress, label=f"writing {len(tubes)} tube(s): ")
    cutting: deque = deque()  # (index, pts, rows, future crops), in frame order

    def write_oldest():
        index, pts, rows, crops = cutting.popleft()
        for row, crop in zip(rows, crops.result()):
            sink.put(int(results["tube_frame_tube"][row]), int(row), index, pts, crop)

    # Three things at once on 2 cores: decoding (a thread of its own), cutting (numpy, which releases the
    # GIL; two frames at a time) and encoding (here): the tubes of Medusa's 2.mp4 in 1.2 s instead of 2.4.
    with ThreadPoolExecutor(2, thread_name_prefix="facecrop-cut") as pool:
        try:
            for index, frame, pts in _read_ahead(read_frames(video, int(frames_at[-1]) + 1)):
                bar.update(1)
                at = np.searchsorted(frames_at, index)
                if at == len(frames_at) or frames_at[at] != index:
                    continue
                rows = order[rows_at[at]:rows_at[at + 1]]
                cutting.append((index, pts, rows, pool.submit(cut_crops, frame, results["tube_crop_mat"][rows], size)))
                if len(cutting) > 4:
                    write_oldest()
            while cutting:
                write_oldest()
            sink.finish()
        finally:
            for *_, crops in cutting:
                crops.cancel()
            sink.close()
            bar.close()


def _read_ahead(items, depth: int = 8):
    """``items`` (an iterator) read on a thread of its own, up to ``depth`` ahead; its error is raised
    here after the items before it, and leaving early stops the thread."""
    ready: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def read():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
            ready.put((None, StopIteration()))
        except BaseException as err:  # handed over in order
            ready.put((None, err))

    reader = threading.Thread(target=read, name="facecrop-read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            item, error = ready.get()
            if isinstance(error, StopIteration):
                return
            if error is not None:
                raise error
            yield item
    finally:
        stop.set()
        reader.join()


class _Sinks:
    """Where each tube's crops go, by format; files are finished as their tube ends."""

    def __init__(self, video: Path, folder: Path, results, tubes: list[dict], fmt: str, size: int, quality: int):
        self.video, self.folder, self.results, self.tubes, self.fmt = video, folder, results, tubes, fmt
        self.size = size
        self.encode = ImageEncoder(fmt, size, quality) if fmt != "mp4" else None
        self.open: dict[int, TubeVideo] = {}
        self.shard: tarfile.TarFile | None = None
        self.shards, self.in_shard = 0, 0
        self.key = _sample_key(str(video))

    def put(self, tube: int, row: int, index: int, pts: float, crop: np.ndarray) -> None:
        info = self.tubes[tube]
        if self.fmt == "mp4":
            if tube not in self.open:
                self.open[tube] = TubeVideo(self.video, self.folder / f"{info['name']}.mp4", self.size)
            self.open[tube].write(crop, index, pts)
            if index == info["stop"] - 1:
                self.open.pop(tube).finish(info["start_s"], info["stop_s"])
        elif self.fmt == "webdataset":
            self._add_sample(info, row, index, pts, self.encode(crop))
        else:
            path = self.folder / info["name"] / f"frame_{index:06d}.{self.fmt}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.encode(crop))

    def _add_sample(self, info: dict, row: int, index: int, pts: float, image: bytes) -> None:
        if self.shard is None:
            self.shard = tarfile.open(self.folder / f"shard-{self.shards:06d}.tar", "w", format=tarfile.PAX_FORMAT)
        r, slot = self.results, int(self.results["tube_frame_slot"][row])
        meta = {"video": str(self.video), "tube": info["id"], "face_idx": info["face_idx"],
                "frame_index": index, "pts_seconds": None if np.isnan(pts) else pts, "detected": slot >= 0,
                "crop_mat": r["tube_crop_mat"][row].tolist()}
        for name in ("conf", "bbox", "lms", "face_size", "sharpness", "yaw", "pitch", "roll"):
            value = r[name][index, slot] if slot >= 0 and name in r else None
            meta[name] = None if value is None or np.isnan(value).any() else value.tolist()
        key = f"{self.key}_face{info['face_idx']:04d}_tube{info['number']:03d}_f{index:06d}"
        for name, data in ((f"{key}.png", image), (f"{key}.json", json.dumps(meta).encode())):
            entry = tarfile.TarInfo(name)  # fixed owner, mode and time: the same crops make the same bytes
            entry.size, entry.mode, entry.mtime = len(data), 0o644, 0
            self.shard.addfile(entry, io.BytesIO(data))
        self.in_shard += 1
        if self.in_shard == SHARD_SAMPLES:
            self._close_shard()

    def _close_shard(self) -> None:
        if self.shard is not None:
            self.shard.close()
            self.shard, self.shards, self.in_shard = None, self.shards + 1, 0

    def finish(self) -> None:
        self._close_shard()
        if self.open:  # a tube whose last frames never decoded: the results promised frames the video lacks
            raise OSError(f"{self.video} ended before the end of {len(self.open)} tube(s)")

    def close(self) -> None:
        for writer in self.open.values():
            writer.discard()
        if self.shard is not None:
            self.shard.close()


class TubeVideo:
    """One tube's MP4 (:class:`~.video_out.VideoOut`): crops at the source's rate and timestamps (from 0),
    then the source's sound of the same time range."""

    def __init__(self, video: Path, path: Path, size: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.video, self.path = video, path
        self.frames: list[int] = []
        self.first_pts: float | None = None
        with av.open(str(video)) as source:
            stream = source.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            time_base = stream.time_base or 1 / Fraction(rate)
            audio = source.streams.audio[0] if source.streams.audio else None
            sound = (audio.codec_context.sample_rate, audio.codec_context.layout.name) if audio else None
        # superfast: half of veryfast's encoding time on 112 px crops, as close to the crops (1.99 grey levels
        # against 2.29 on example_vid.mp4), files about 1.8x larger.
        self.out = VideoOut(path, size, size, rate, time_base, audio=sound, preset="superfast")
        self.rate = float(rate)

    def write(self, crop: np.ndarray, index: int, pts: float) -> None:
        if self.first_pts is None:
            self.first_pts = pts
        seconds = (pts - self.first_pts) if not np.isnan(pts) else len(self.frames) / self.rate
        self.out.write(crop, round(seconds / self.out.time_base))
        self.frames.append(index)

    def finish(self, start_s: float, stop_s: float) -> None:
        if self.out.audio is not None:
            context = self.out.audio.codec_context
            self.out.write_audio(read_audio(self.video, start_s, stop_s, context.sample_rate, context.layout.name))
        self.out.close()
        self.path.with_suffix(".frames.txt").write_text("".join(f"{f}\n" for f in self.frames))

    def discard(self) -> None:
        self.out.discard()


def read_audio(video: Path, start_s: float, stop_s: float, rate: int, layout: str) -> np.ndarray:
    """The video's first audio stream between ``start_s`` and ``stop_s`` (seconds, the video's clock),
    ``[channels, round((stop_s - start_s) * rate)]`` float32 planar; silence where it has no sound."""
    wanted = max(0, round((stop_s - start_s) * rate))
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    pieces, first_s = [], None
    with av.open(str(video)) as container:
        stream = container.streams.audio[0]
        container.seek(max(0, int((start_s - 1.0) / stream.time_base)), stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            begins = float(frame.pts * frame.time_base)
            if begins >= stop_s:
                break
            for piece in resampler.resample(frame):
                if first_s is None:
                    first_s = float(piece.pts * piece.time_base) if piece.pts is not None else begins
                pieces.append(piece.to_ndarray())
    channels = av.AudioLayout(layout).nb_channels
    if not pieces:
        return np.zeros((channels, wanted), np.float32)
    samples = np.concatenate(pieces, 1)
    offset = round((start_s - first_s) * rate)  # negative where the sound starts after the tube
    if offset < 0:
        samples = np.concatenate([np.zeros((channels, -offset), np.float32), samples], 1)
        offset = 0
    samples = samples[:, offset:offset + wanted]
    return np.pad(samples, ((0, 0), (0, wanted - samples.shape[1]))).astype(np.float32)


def replace_folder(source: Path, target: Path) -> None:
    """Move the finished crops folder into place, replacing an earlier run's (same identity) if any."""
    if target.exists():
        shutil.rmtree(target)
    os.replace(source, target)
