"""Results per frame, as frames come: a bundle over a file, a live source or the app's frames.

A file is read by its decoding process and runs as ``process_video`` runs it (several batches in the
module at once on a CPU), every frame, whatever the policy. A live source or the app's frames: a
reader thread takes frames (:mod:`.sources`) into a queue; a batch is the frames that have arrived,
waiting at most ``max_delay`` seconds after the first for more (never fewer than one frame). Either
way the batches go through the one loop (:mod:`.loop`), the faces get their ids (the results files'
:class:`~.track.OnlineTracker`) and one result per frame is yielded, in order.

When compute falls behind a live source, ``policy`` decides: ``'all'`` processes every frame and
the latency grows (the reader waits, and the source's own buffers fill); ``'latest'`` keeps up by
dropping the oldest waiting frames before compute, counted in each result's ``dropped_before``
(``frame_index`` keeps the source's numbering, so the dropped frames are the missing indices). A
file is never dropped from.
"""

from __future__ import annotations

import queue
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from .bundle import Bundle
from .decoder import Batch, Decoder
from .errors import UsageError, VideoError
from .loop import DecodedBatches, module_results
from .sources import Frame, open_source
from .track import DEFAULT_DIST_THRESHOLD, OnlineTracker
from .tubes import CausalSmoother
from .video import PER_FRAME, QUEUED_CALLS, crop_side, decoder_args, video_info

__all__ = ["POLICIES", "Stream", "stream"]

POLICIES = ("all", "latest")
OUTPUTS = PER_FRAME + ("imgs_crop",)  # a results file's per-frame arrays, and the frame's crops
_END = object()


def stream(bundle: Bundle, source, batch_size: int = 4, max_delay: float = 0.03, policy: str = "all",
           options: dict | None = None, timeout_s: float = 10.0, reconnects: int = 5, format: str | None = None,
           dist_threshold: float = DEFAULT_DIST_THRESHOLD) -> "Stream":
    """Results of ``bundle`` on every frame of ``source``, as they come; an iterator and a context manager.

    Args:
        source: a file, a URL (``rtsp://``, ``http(s)://``, ``udp://``, ``tcp://``, ...), a capture
            device (``/dev/video0``; other platforms' with ``format='avfoundation'`` or ``'dshow'``),
            or an iterable of RGB uint8 frames (numpy ``[H, W, 3]`` or tensors ``[3, H, W]``).
        batch_size: most frames per module call. max_delay: seconds a batch waits, after its first
            frame arrives, for more. policy: ``'all'`` or ``'latest'`` (see the module docstring).
        options: FFmpeg options for the source (``{"rtsp_transport": "tcp"}``); timeout_s: for
            opening it and for each read. reconnects: tries to reopen a dropped network source.
        dist_threshold: the face tracker's, in pixels.

    Yields:
        per frame, a dict: ``frame_index``, ``pts_seconds``, ``latency_s`` (from the frame leaving
        the decoder to its result being ready), ``dropped_before`` (frames dropped just before it),
        ``gap_s`` (seconds the source was lost just before it), ``face_idx [K]`` and the frame's row
        of each module output (``valid [K]``, ``conf``, ``bbox``, ``lms``, ``overflow``, ``crop_mat``,
        ``imgs_crop [K, 3, S, S]`` when the bundle crops), as numpy arrays; with crops also
        ``smooth_crop_mat [K, 3, 3]``: each face's crop held steady over time by a causal filter
        (:class:`~.tubes.CausalSmoother`: a frame or two of lag on fast motion, none added to latency).

    Example:
        >>> with stream(load_bundle("bundles/<name>/1.0.0"), "/dev/video0") as results:  # doctest: +SKIP
        ...     for r in results:
        ...         print(r["frame_index"], r["face_idx"][r["valid"]])
    """
    if policy not in POLICIES:
        raise UsageError(f"policy must be one of {POLICIES}, got {policy!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be a positive int, got {batch_size!r}")
    if not max_delay >= 0:
        raise UsageError(f"max_delay must be seconds (0 or more), got {max_delay!r}")
    tracker = OnlineTracker(dist_threshold)
    if isinstance(source, (str, Path)) and format is None and _is_file(source):
        # A file is read by the decoding process that makes process_video fast; it is never dropped from.
        video_info(Path(source))  # refused now if it cannot be opened, as a live source is
        decoder = Decoder(*decoder_args(source, batch_size, 0, bundle.side_bounds[1]))
        return Stream(bundle, DecodedBatches(decoder, bundle.side_bounds, source), tracker)
    live = open_source(source, options, timeout_s, reconnects, format)
    return Stream(bundle, LiveBatches(live, batch_size, max_delay, policy), tracker, live)


def _is_file(source: str | Path) -> bool:
    name = str(source)
    return "://" not in name and not name.startswith("/dev/") and Path(name).is_file()


class Stream:
    """What :func:`stream` returns: per-frame results of ``batches`` through the one loop (``loop.py``).

    ``stats`` counts frames, faces and dropped frames, and keeps every latency and a live source's
    gaps; ``source`` is the live :class:`~.sources.Source` (None for a file, read by its decoding
    process); :meth:`close` (or leaving the ``with`` block) stops reading.
    """

    def __init__(self, bundle: Bundle, batches, tracker: OnlineTracker, source=None):
        self.bundle, self.batches, self.tracker, self.source = bundle, batches, tracker, source
        size = crop_side(bundle)
        self.smoother = CausalSmoother(size) if size else None
        self.stats = {"frames": 0, "faces": 0, "dropped": 0, "latency_s": [],
                      "gaps_s": source.gaps if source is not None else []}

    def __iter__(self):
        # A file's batches run as process_video's do (several at once on a CPU); a live source's one at a
        # time, as they come, so that none waits behind another.
        decoded = isinstance(self.batches, DecodedBatches)
        results = module_results(self.bundle, self.batches, queued=QUEUED_CALLS if decoded else 0, parallel=decoded)
        try:
            for batch, outputs in results:
                ready = time.perf_counter()
                self.batches.release(batch)
                yield from self._per_frame(batch, outputs, ready)
            if decoded:
                _check_end(self.batches)
        finally:
            results.close()
            self.close()

    def _per_frame(self, batch, outputs: dict[str, np.ndarray], ready: float):
        face_idx = self.tracker.update_frames(outputs["lms"], outputs["valid"])
        n = len(batch.frame_index)
        gaps = batch.gap_s if batch.gap_s is not None else np.zeros(n)
        dropped = batch.dropped_before if batch.dropped_before is not None else np.zeros(n, np.int64)
        self.stats["dropped"] += int(dropped.sum())
        for i in range(n):
            result = {"frame_index": int(batch.frame_index[i]), "pts_seconds": float(batch.pts_seconds[i]),
                      "latency_s": ready - float(batch.decoded_at[i]), "dropped_before": int(dropped[i]),
                      "gap_s": float(gaps[i]), "face_idx": face_idx[i]}
            result.update({k: outputs[k][i] for k in OUTPUTS if k in outputs})
            if self.smoother is not None:
                seconds = result["pts_seconds"] if np.isfinite(result["pts_seconds"]) else float(batch.decoded_at[i])
                result["smooth_crop_mat"] = self.smoother.update(face_idx[i], outputs["crop_mat"][i], seconds)
            self.stats["frames"] += 1
            self.stats["faces"] += int(outputs["valid"][i].sum())
            self.stats["latency_s"].append(result["latency_s"])
            yield result

    def close(self) -> None:
        """Stop reading the source (at once for files and the app's frames; within ``timeout_s`` for a
        network read in progress)."""
        self.batches.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_end(batches: DecodedBatches) -> None:
    """A file that ended early is an error, after its frames were yielded (as a live source's read error)."""
    end = batches.end
    if end is not None and end.note:
        warnings.warn(f"{batches.video}: {end.note}", stacklevel=3)
    if end is not None and end.problem:
        raise VideoError(f"{batches.video}: {end.problem}")


class LiveBatches:
    """Batches of a live source's (or the app's) frames as they arrive; iterate once.

    A reader thread takes frames from the source into a queue; a batch is the frames that have
    arrived, waiting at most ``max_delay`` seconds after the first for more (never fewer than one
    frame, one frame size each). ``policy``: see the module docstring.
    """

    def __init__(self, source, batch_size: int, max_delay: float, policy: str):
        self.source, self.batch_size, self.max_delay, self.policy = source, batch_size, max_delay, policy
        # 'all': the reader waits when two batches are queued; 'latest': it never waits, the consumer drops.
        self.queue: queue.Queue = queue.Queue(maxsize=2 * batch_size if policy == "all" else 0)
        self.stopping = threading.Event()
        # What the queue gave after a batch closed (a frame of another size, the end or the reader's
        # error): the next batch starts with it.
        self.carry = None
        self.ended = False
        self.reader = threading.Thread(target=self._read, name="facecrop-stream-reader", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            for frame in self.source:
                while not self.stopping.is_set():
                    try:
                        self.queue.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self.stopping.is_set():
                    return
            self.queue.put(_END)
        except BaseException as err:  # handed to the caller's thread, which raises it there
            self.queue.put(err)

    def __iter__(self):
        while True:
            frames = self._next_batch()
            if not frames:
                return
            yield Batch(-1, np.array([f.index for f in frames], np.int64), np.array([f.pts_seconds for f in frames]),
                        np.stack([f.rgb for f in frames]).transpose(0, 3, 1, 2),
                        decoded_at=np.array([f.decoded_at for f in frames]), gap_s=np.array([f.gap_s for f in frames]),
                        dropped_before=np.array([f.dropped_before for f in frames], np.int64))

    def _take(self, timeout: float | None):
        item = self.carry if self.carry is not None else self.queue.get(timeout=timeout)
        self.carry = None
        return item

    def _next_batch(self) -> list[Frame]:
        if self.ended:
            return []
        dropped = 0
        if self.policy == "latest":  # keep up: only the newest frames waiting are computed
            while self.carry is None and self.queue.qsize() > self.batch_size:
                item = self.queue.get()
                if not isinstance(item, Frame):
                    self.carry = item
                    break
                dropped += 1
        first = self._take(None)
        if first is _END:
            self.ended = True
            return []
        if isinstance(first, BaseException):  # the reader's error, once the frames read before it are yielded
            self.ended = True
            raise first
        first.dropped_before = dropped
        batch, deadline = [first], first.decoded_at + self.max_delay
        while len(batch) < self.batch_size:
            try:
                item = self._take(max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if not isinstance(item, Frame) or item.rgb.shape != first.rgb.shape:  # the end, an error or another size
                self.carry = item
                break
            batch.append(item)
        return batch

    def release(self, batch: Batch) -> None:
        """Nothing to hand back: the batch's frames are its own."""

    def close(self) -> None:
        self.stopping.set()
        while True:  # unblock a reader waiting on a full queue
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
