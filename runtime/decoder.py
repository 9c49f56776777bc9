"""Decode a video in a child process, into batches of RGB frames in shared memory.

A compiled module holds the GIL while it runs (AOTInductor's loader does), so a decoding *thread*
stalls for a whole batch; a child process (:mod:`decode_worker`, run by path) decodes the next
batches while the module runs. Frames travel through anonymous shared-memory slots (``memfd``: no
copy, no ``/dev/shm`` limit), JSON lines through pipes: the child says which slot holds which
frames, the parent hands slots back when the module is done with them.
"""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass

import av
import numpy as np

from . import decode_worker

SLOTS = 7  # four batches with the module (two running, two queued: see video.py) while the child decodes three ahead


@dataclass
class Batch:
    slot: int  # hand it back with :meth:`Decoder.release` once the module is done with ``frames``
    frame_index: np.ndarray  # [b] int64
    pts_seconds: np.ndarray  # [b] float64, NaN where the frame has no timestamp
    frames: np.ndarray  # [b, 3, H, W] uint8 RGB upright, channels-last (a view of the slot unless turned)
    rotation: int = 0  # degrees counterclockwise the stored frames were turned to show them upright
    decoded_at: np.ndarray | None = None  # [b] time.perf_counter() when each frame arrived (a stream's latency)
    gap_s: np.ndarray | None = None  # [b] seconds a live source was lost just before each frame
    dropped_before: np.ndarray | None = None  # [b] frames dropped just before each (stream policy 'latest')


@dataclass
class End:
    count: int  # frames decoded, skipped ones included
    problem: str | None  # why decoding stopped early; None when the video ended normally
    note: str | None = None  # something odd but harmless about the video (timestamps that reset), for a warning


def upright(pixels: np.ndarray, turns: int) -> np.ndarray:
    """Frames ``[..., H, W, 3]`` turned ``turns`` quarter turns counterclockwise (see
    :func:`decode_worker.quarter_turns`); a contiguous copy when turned, ``pixels`` itself when not."""
    return np.ascontiguousarray(np.rot90(pixels, turns, axes=(-3, -2))) if turns else pixels


class DecoderDied(RuntimeError):
    """The child process failed; the message says how."""


def _start_process() -> tuple[subprocess.Popen, list[int]]:
    """A decoding process that waits on stdin for its video, and its frame slots (empty so far)."""
    # memfd where the OS has it (Linux); elsewhere an unlinked temporary file does the same job.
    fds = [os.memfd_create("facecrop-frames") if hasattr(os, "memfd_create")
           else os.dup(tempfile.TemporaryFile().fileno()) for _ in range(SLOTS)]
    # -S: no site-packages scan, only PyAV's own folder on the path (about 20 ms less start-up).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.path.dirname(os.path.dirname(av.__file__)), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.Popen([sys.executable, "-S", decode_worker.__file__, *map(str, fds)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, pass_fds=fds, text=True, bufsize=1, env=env), fds


class DecoderProcesses:
    """Decoding processes kept between videos by their owner, a run over several videos (``with`` ends them).

    A dataset run reuses them instead of starting Python and PyAV again for every video (about 0.1 s of
    CPU each, which on a 2-core machine the module's calls wanted). ``keep``: how many idle ones to keep
    (one per worker). Nothing is kept at module level: a library caller's processes end with its block.
    """

    def __init__(self, keep: int = 1):
        self.keep = keep
        self._idle: list[tuple[subprocess.Popen, list[int]]] = []
        self._lock = threading.Lock()

    def take(self) -> tuple[subprocess.Popen, list[int]]:
        """An idle process that is still alive, else a new one."""
        while True:
            with self._lock:
                if not self._idle:
                    break
                process, fds = self._idle.pop()
            if process.poll() is None:
                return process, fds
            _stop(process, fds)
        return _start_process()

    def give_back(self, process: subprocess.Popen, fds: list[int]) -> bool:
        """Keep a process whose video ended for the next one; False (not kept) when enough are idle."""
        with self._lock:
            if len(self._idle) < self.keep and process.poll() is None:
                self._idle.append((process, fds))
                return True
        return False

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for process, fds in idle:
            _stop(process, fds)

    def __enter__(self) -> "DecoderProcesses":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _stop(process: subprocess.Popen, fds: list[int]) -> None:
    process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout):
        try:
            stream.close()
        except OSError:  # the child is gone and the pipe with it
            pass
    for fd in fds:
        os.close(fd)


class Decoder:
    """Batches of ``video``'s frames from ``skip`` on, decoded by a child process.

    Iterate to get :class:`Batch` items of ``batch_size`` frames (fewer above 720p, see
    :func:`decode_worker.frames_per_batch`), one frame size each, then one :class:`End`. ``max_frame_bytes``
    bounds ``3 * H * W``. ``processes``: where to take the process from and give it back to after the
    video (see :class:`DecoderProcesses`); without, the decoder starts its own and stops it when closed.
    """

    def __init__(self, video: str, batch_size: int, skip: int, max_frame_bytes: int,
                 processes: DecoderProcesses | None = None):
        self.args = (video, batch_size, skip, max_frame_bytes)
        self.processes = processes
        self.capacity = decode_worker.slot_bytes(batch_size, max_frame_bytes)
        self.process, self.fds = processes.take() if processes is not None else _start_process()
        self.ended = False  # the child said its video ended: it waits for another and can be reused
        for fd in self.fds:
            os.ftruncate(fd, self.capacity)  # sparse: memory is used only where frames are written
        self.slots = [np.frombuffer(mmap.mmap(fd, self.capacity), np.uint8) for fd in self.fds]
        job = {"video": video, "batch_size": batch_size, "skip": skip, "max_frame_bytes": max_frame_bytes}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()

    def __iter__(self):
        for line in self.process.stdout:
            message = json.loads(line)
            if "slot" in message:
                n, shape = len(message["index"]), tuple(message["shape"])
                height, width = shape[1:]
                pixels = self.slots[message["slot"]][:n * height * width * 3].reshape(n, height, width, 3)
                frames = upright(pixels, message["turns"]).transpose(0, 3, 1, 2)
                yield Batch(message["slot"], np.array(message["index"], np.int64),
                            np.array(message["seconds"], np.float64), frames, 90 * message["turns"])
            elif "end" in message:
                self.ended = True
                yield End(message["end"], message["problem"], message.get("note"))
                return
            else:
                raise DecoderDied(message["error"])
        raise DecoderDied(f"the decoding process ended without finishing (exit code {self.process.wait()})")

    def release(self, slot: int) -> None:
        try:
            self.process.stdin.write(f"{slot}\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # the child has sent everything and left (or died, which iterating reports)

    def close(self) -> None:
        """Hand the child back to its owner if its video ended, else stop it; free the slots (again: nothing)."""
        if not self.fds:
            return
        process, fds, self.fds = self.process, self.fds, []
        if not (self.ended and self.processes is not None and self.processes.give_back(process, fds)):
            _stop(process, fds)
