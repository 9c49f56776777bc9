"""Results per frame, as frames come: a bundle over a live source (or a file, or the app's frames).

A reader thread takes frames from the source (:mod:`.sources`) into a queue; the caller's thread
forms a batch of the frames that have arrived, waiting at most ``max_delay`` seconds after the
first for more (never fewer than one frame), runs the module, gives the faces their ids (the
results files' :class:`~.track.OnlineTracker`) and yields one result per frame, in order.

When compute falls behind a live source, ``policy`` decides: ``'all'`` processes every frame and
the latency grows (the reader waits, and the source's own buffers fill); ``'latest'`` keeps up by
dropping the oldest waiting frames before compute, counted in each result's ``dropped_before``
(``frame_index`` keeps the source's numbering, so the dropped frames are the missing indices).
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np

from .bundle import Bundle
from .errors import UsageError
from .sources import Frame, open_source
from .track import DEFAULT_DIST_THRESHOLD, OnlineTracker
from .video import PER_FRAME

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
        ``imgs_crop [K, 3, S, S]`` when the bundle crops), as numpy arrays.

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
    return Stream(bundle, open_source(source, options, timeout_s, reconnects, format), batch_size, max_delay,
                  policy, tracker)


class Stream:
    """What :func:`stream` returns. ``stats`` counts frames, faces and dropped frames, and keeps every
    latency and the source's gaps; :meth:`close` (or leaving the ``with`` block) stops the reader."""

    def __init__(self, bundle: Bundle, source, batch_size: int, max_delay: float, policy: str, tracker: OnlineTracker):
        self.bundle, self.source, self.batch_size, self.max_delay, self.policy = bundle, source, batch_size, max_delay, policy
        self.tracker = tracker
        # 'all': the reader waits when two batches are queued; 'latest': it never waits, the consumer drops.
        self.queue: queue.Queue = queue.Queue(maxsize=2 * batch_size if policy == "all" else 0)
        self.stopping = threading.Event()
        # What the queue gave after a batch closed (a frame of another size, the end or the reader's
        # error): the next batch starts with it.
        self.carry = None
        self.ended = False
        self.stats = {"frames": 0, "faces": 0, "dropped": 0, "latency_s": [], "gaps_s": source.gaps}
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
        try:
            while True:
                batch = self._next_batch()
                if not batch:
                    return
                yield from self._run(batch)
        finally:
            self.close()

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
        self.stats["dropped"] += dropped
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

    def _run(self, batch: list[Frame]):
        outputs = self.bundle.run_frames(np.stack([f.rgb for f in batch]).transpose(0, 3, 1, 2))
        ready = time.perf_counter()
        face_idx = self.tracker.update_frames(outputs["lms"], outputs["valid"])
        for i, frame in enumerate(batch):
            result = {"frame_index": frame.index, "pts_seconds": frame.pts_seconds, "latency_s": ready - frame.decoded_at,
                      "dropped_before": frame.dropped_before, "gap_s": frame.gap_s, "face_idx": face_idx[i]}
            result.update({k: outputs[k][i] for k in OUTPUTS if k in outputs})
            self.stats["frames"] += 1
            self.stats["faces"] += int(outputs["valid"][i].sum())
            self.stats["latency_s"].append(result["latency_s"])
            yield result

    def close(self) -> None:
        """Stop reading the source (at once for files and the app's frames; within ``timeout_s`` for a
        network read in progress)."""
        self.stopping.set()
        while True:  # unblock a reader waiting on a full queue
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
