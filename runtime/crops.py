"""Face crops on disk, where training code reads them: image folders, per-face videos, WebDataset shards.

A run with ``crops=FORMAT`` writes every tracked face's crops into ``<output>.partial/crops/`` as
the frames come (on a thread of its own, so writing overlaps decoding and compute), in step with
the checkpoint: a chunk of results is recorded only once its crops are on disk. The finished
folder is renamed to ``<results stem>.crops/`` beside the results file (``talk.npz`` ->
``talk.crops/``). A resumed run rewrites the crops of the frames after its checkpoint, with the
same names and, for ``png`` and ``webdataset``, the same bytes. Layouts (``bundles/README.md``):

- ``png`` (lossless), ``jpg``: ``face_0003/frame_000123.png``: one folder per face id.
- ``mp4``: ``face_0003.mp4`` (H.264, the crops in frame order) and ``face_0003.frames.txt`` (the
  frame index of each of its frames, one a line); encoded at the end from the crops the
  checkpoint keeps.
- ``webdataset``: ``shard-000000.tar``, one shard per checkpoint chunk; a sample per face crop:
  ``<key>.png`` and ``<key>.json`` (video, frame_index, pts_seconds, face_idx, conf, bbox, lms,
  crop_mat), key ``<video stem>_f000123_face0003``.

Images are encoded by PyAV (FFmpeg's png and mjpeg encoders): no dependency beyond the runtime's.
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
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

__all__ = ["CROP_FORMATS", "META", "CropWriter", "crops_folder", "encode_mp4s", "replace_folder"]

CROP_FORMATS = ("png", "jpg", "mp4", "webdataset")
META = "meta.json"


def crops_folder(output: Path) -> Path:
    """Where the crops of the results file ``output`` go: ``talk.npz`` -> ``talk.crops/``."""
    return output.with_suffix(".crops")


class ImageEncoder:
    """RGB uint8 ``[3, S, S]`` crops -> PNG (``compression_level`` 1: 4x faster than the default, same
    pixels) or JPEG bytes (4:4:4, FFmpeg's fixed quantiser ``quality``: 2 is the best, 31 the worst)."""

    def __init__(self, fmt: str, size: int, quality: int = 2):
        codec, pix_fmt, options = (("png", "rgb24", {"compression_level": "1"}) if fmt in ("png", "webdataset")
                                   else ("mjpeg", "yuvj444p", {"qmin": str(quality), "qmax": str(quality)}))
        self.context = av.CodecContext.create(codec, "w")
        self.context.width = self.context.height = size
        self.context.pix_fmt, self.context.time_base, self.context.options = pix_fmt, Fraction(1, 25), options
        self.pix_fmt, self.to_pix_fmt = pix_fmt, VideoReformatter()  # swscale set up once, not for every crop

    def __call__(self, crop: np.ndarray) -> bytes:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(crop.transpose(1, 2, 0)), format="rgb24")
        if self.pix_fmt != "rgb24":
            frame = self.to_pix_fmt.reformat(frame, format=self.pix_fmt)
        return b"".join(bytes(p) for p in self.context.encode(frame))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _sample_key(video: str) -> str:
    """The video's part of a WebDataset key: its stem with dots (which end a key) and slashes replaced."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", Path(video).stem)


class CropWriter:
    """Writes the crops of each batch (see :meth:`put`) into ``folder`` on a thread of its own.

    Args:
        folder: the crops folder being filled (``<output>.partial/crops/``).
        fmt: one of :data:`CROP_FORMATS`; ``mp4`` writes nothing here (see :func:`encode_mp4s`).
        video: the video's path, recorded with every WebDataset sample.
        size: the crops' side in pixels. quality: JPEG quantiser (2-31).

    Errors on the thread (a full disk, an unwritable folder) are raised by the next :meth:`put`
    or :meth:`commit` as ``OSError``.
    """

    def __init__(self, folder: Path, fmt: str, video: str, size: int, quality: int = 2):
        if fmt not in CROP_FORMATS:
            raise ValueError(f"crop format must be one of {CROP_FORMATS}, got {fmt!r}")
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.fmt, self.video, self.key = folder, fmt, str(video), _sample_key(video)
        self.encode = ImageEncoder(fmt, size, quality) if fmt != "mp4" else None
        self.extension = {"png": "png", "jpg": "jpg", "webdataset": "png"}.get(fmt)
        self.shard: tarfile.TarFile | None = None
        self.error: BaseException | None = None
        self.queue: queue.Queue = queue.Queue(maxsize=4)  # a few batches ahead, then the run waits
        self.thread = threading.Thread(target=self._work, name="facecrop-crops", daemon=True)
        self.thread.start()

    def put(self, result: dict[str, np.ndarray]) -> None:
        """Queue one batch's results: per-frame ``frame_index``, ``pts_seconds``, ``valid``, ``face_idx``,
        ``conf``, ``bbox``, ``lms``, ``crop_mat`` and ``imgs_crop [b, K, 3, S, S]``."""
        self._raise()
        self.queue.put(("batch", result))

    def commit(self, chunk: int) -> None:
        """Wait until every queued crop is on disk; a WebDataset shard is closed as ``shard-<chunk>.tar``."""
        self._raise()
        self.queue.put(("commit", chunk))
        self.queue.join()
        self._raise()

    def close(self) -> None:
        """Stop the thread; an open shard is dropped (its frames are not in the checkpoint yet)."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        if self.shard is not None:
            self.shard.close()
            Path(self.shard.name).unlink(missing_ok=True)
            self.shard = None

    def drop_after(self, frames: int) -> None:
        """Remove the image files of frames ``frames`` on: written, but their results never checkpointed
        (the run failed or stopped first); a resumed run writes them again."""
        if self.fmt in ("png", "jpg"):
            for path in self.folder.glob(f"face_*/frame_*.{self.extension}"):
                if int(path.stem[len("frame_"):]) >= frames:
                    path.unlink(missing_ok=True)

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _work(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    return
                if self.error is None:  # after an error, drain the queue so that the run never waits
                    kind, payload = item
                    self._write_batch(payload) if kind == "batch" else self._commit(payload)
            except BaseException as err:  # handed to the run's thread by put/commit
                self.error = err
            finally:
                self.queue.task_done()

    def _write_batch(self, result: dict[str, np.ndarray]) -> None:
        if self.encode is None:
            return
        for row, slot in zip(*np.nonzero(result["valid"])):
            frame, face = int(result["frame_index"][row]), int(result["face_idx"][row, slot])
            data = self.encode(result["imgs_crop"][row, slot])
            if self.fmt == "webdataset":
                self._add_sample(result, row, slot, frame, face, data)
                continue
            folder = self.folder / f"face_{face:04d}"
            folder.mkdir(exist_ok=True)
            _write_atomic(folder / f"frame_{frame:06d}.{self.extension}", data)

    def _add_sample(self, result, row: int, slot: int, frame: int, face: int, image: bytes) -> None:
        if self.shard is None:
            self.shard = tarfile.open(self.folder / "shard.tar.tmp", "w", format=tarfile.PAX_FORMAT)
        pts = float(result["pts_seconds"][row])
        meta = {"video": self.video, "frame_index": frame, "pts_seconds": None if np.isnan(pts) else pts,
                "face_idx": face, "conf": float(result["conf"][row, slot]),
                **{k: result[k][row, slot].tolist() for k in ("bbox", "lms", "crop_mat")}}
        key = f"{self.key}_f{frame:06d}_face{face:04d}"
        for name, data in ((f"{key}.png", image), (f"{key}.json", json.dumps(meta).encode())):
            info = tarfile.TarInfo(name)  # fixed owner, mode and time: the same crops make the same bytes
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            self.shard.addfile(info, io.BytesIO(data))

    def _commit(self, chunk: int) -> None:
        if self.shard is None:
            return
        self.shard.close()
        os.replace(self.shard.name, self.folder / f"shard-{chunk:06d}.tar")
        self.shard = None


def encode_mp4s(folder: Path, chunks: list[Path]) -> None:
    """``face_<id>.mp4`` and ``face_<id>.frames.txt`` per face id from the checkpoint ``chunks``
    (each holding ``face_idx``, ``frame_index``, ``imgs_crop``, ``crop_frame_index`` and ``crop_slot``)."""
    folder.mkdir(parents=True, exist_ok=True)
    writers: dict[int, tuple] = {}
    try:
        for chunk in chunks:
            with np.load(chunk, allow_pickle=False) as data:
                first = int(data["frame_index"][0]) if len(data["frame_index"]) else 0
                ids = data["face_idx"][data["crop_frame_index"] - first, data["crop_slot"]]
                for crop, frame, face in zip(data["imgs_crop"], data["crop_frame_index"], ids):
                    if face not in writers:
                        writers[face] = _open_mp4(folder / f"face_{face:04d}", crop.shape[-1])
                    container, stream, frames = writers[face]
                    image = av.VideoFrame.from_ndarray(np.ascontiguousarray(crop.transpose(1, 2, 0)), format="rgb24")
                    container.mux(stream.encode(image))
                    frames.append(int(frame))
    finally:
        for face, (container, stream, frames) in writers.items():
            container.mux(stream.encode())
            container.close()
            stem = folder / f"face_{face:04d}"
            os.replace(stem.with_suffix(".mp4.tmp"), stem.with_suffix(".mp4"))
            _write_atomic(stem.with_suffix(".frames.txt"), "".join(f"{f}\n" for f in frames).encode())


def _open_mp4(stem: Path, size: int):
    container = av.open(str(stem.with_suffix(".mp4.tmp")), "w", format="mp4")
    stream = container.add_stream("libx264", rate=25)
    stream.width = stream.height = size
    stream.pix_fmt, stream.options = "yuv420p", {"crf": "18", "preset": "veryfast"}
    return container, stream, []


def replace_folder(source: Path, target: Path) -> None:
    """Move the finished crops folder into place, replacing an earlier run's (same identity) if any."""
    if target.exists():
        shutil.rmtree(target)
    os.replace(source, target)
