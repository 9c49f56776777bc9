"""Decode a video in a child process, into batches of RGB frames in shared memory.

A compiled module holds the GIL while it runs (AOTInductor's loader does), so a decoding
*thread* stalls for a whole batch; a child process decodes and converts the next batches
while the module runs on this one. Frames travel through a few anonymous shared-memory
slots (``memfd``, mapped by both processes; no copy, no ``/dev/shm`` size limit), and
small JSON messages through pipes: the child says which slot holds which frames, the
parent hands slots back when the module is done with them.

This file is also the child's program (run by path: it imports only PyAV and numpy).
"""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import av
import numpy as np

SLOTS = 2  # one in the module while the child fills the other


@dataclass
class Batch:
    slot: int  # hand it back with :meth:`Decoder.release` once the module is done with ``frames``
    frame_index: np.ndarray  # [b] int64
    pts_seconds: np.ndarray  # [b] float64, NaN where the frame has no timestamp
    frames: np.ndarray  # [b, 3, H, W] uint8 RGB at the video's own size, a channels-last view of the slot


@dataclass
class End:
    count: int  # frames decoded, skipped ones included
    problem: str | None  # why decoding stopped early; None when the video ended normally


class DecoderDied(RuntimeError):
    """The child process failed; the message says how."""


def declared_end(stream) -> float | None:
    """End of the video stream in seconds as its container declares it, if it does."""
    if stream.duration and stream.time_base:
        return float((stream.start_time or 0) + stream.duration) * float(stream.time_base)
    text = (stream.metadata or {}).get("DURATION")  # Matroska keeps it as a tag: HH:MM:SS.fffffffff
    try:
        h, m, s = text.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    except (AttributeError, ValueError):
        return None


def _truncation(stream, count: int, last_pts: float, last_duration: float) -> str | None:
    """Say so when the container declares more video than was decoded (a cut or truncated file)."""
    if stream.frames and count < stream.frames:
        return f"decoding stopped at frame {count} of the {stream.frames} the container declares"
    end = declared_end(stream)
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    if end is not None and count and last_pts + last_duration + 2.0 / rate < end:
        return f"decoding stopped at frame {count} ({last_pts:.3f} s) but the container declares {end:.3f} s"
    return None


class Decoder:
    """Batches of ``video``'s frames from ``skip`` on, decoded by a child process.

    Iterate to get :class:`Batch` items (one frame size per batch: where a stream changes
    size, a batch ends), then one :class:`End`. ``max_frame_bytes`` bounds ``3 * H * W``.
    """

    def __init__(self, video: str, batch_size: int, skip: int, max_frame_bytes: int):
        self.args = (video, batch_size, skip, max_frame_bytes)
        self.capacity = batch_size * max_frame_bytes
        # memfd where the OS has it (Linux); elsewhere an unlinked temporary file does the same job.
        self.fds = [os.memfd_create("facecrop-frames") if hasattr(os, "memfd_create")
                    else os.dup(tempfile.TemporaryFile().fileno()) for _ in range(SLOTS)]
        for fd in self.fds:
            os.ftruncate(fd, self.capacity)  # sparse: memory is used only where frames are written
        self.slots = [np.frombuffer(mmap.mmap(fd, self.capacity), np.uint8) for fd in self.fds]
        self.process = subprocess.Popen(
            [sys.executable, __file__, video, str(batch_size), str(skip), str(max_frame_bytes), *map(str, self.fds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=self.fds, text=True, bufsize=1)

    def __iter__(self):
        for line in self.process.stdout:
            message = json.loads(line)
            if "slot" in message:
                n, shape = len(message["index"]), tuple(message["shape"])
                height, width = shape[1:]
                pixels = self.slots[message["slot"]][:n * height * width * 3].reshape(n, height, width, 3)
                frames = pixels.transpose(0, 3, 1, 2)
                yield Batch(message["slot"], np.array(message["index"], np.int64),
                            np.array(message["seconds"], np.float64), frames)
            elif "end" in message:
                yield End(message["end"], message["problem"])
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
        """Stop the child and free the slots (again: nothing)."""
        if not self.fds:
            return
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:  # the child is gone and the pipe with it
                pass
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def _serve(video: str, batch_size: int, skip: int, max_frame_bytes: int, fds: list[int]) -> None:
    """The child: decode, convert to RGB into free slots, and say what each holds on stdout."""
    slots = [np.frombuffer(mmap.mmap(fd, batch_size * max_frame_bytes), np.uint8) for fd in fds]
    free = list(range(len(slots)))
    count, last_pts, last_duration, problem = 0, float("nan"), 0.0, None
    slot, shape, index, seconds = None, None, [], []

    def send(**message):
        print(json.dumps(message), flush=True)

    def flush_batch():
        nonlocal slot, index, seconds
        if index:
            send(slot=slot, shape=shape, index=index, seconds=seconds)
            slot, index, seconds = None, [], []

    with av.open(video) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                current, count = count, count + 1
                last_pts = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else float("nan")
                last_duration = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 0.0
                if current < skip:
                    continue
                if shape != [3, frame.height, frame.width]:  # the stream changed size: the batch ends here
                    flush_batch()
                    shape = [3, frame.height, frame.width]
                    if 3 * frame.height * frame.width > max_frame_bytes:
                        send(error=f"frame {current} is {frame.width}x{frame.height}, too large for this bundle")
                        return
                if slot is None:
                    if not free:
                        line = sys.stdin.readline()  # wait for the parent to hand a slot back
                        if not line:
                            return  # the parent is gone
                        free.append(int(line))
                    slot = free.pop()
                view = slots[slot][:batch_size * 3 * frame.height * frame.width]
                view = view.reshape(batch_size, frame.height, frame.width, 3)
                # swscale's rgb24, as the InsightFace loop decodes (its planar gbrp output takes
                # other code paths for some widths: 2.4 grey levels apart at 360 px wide, measured),
                # kept pixel-interleaved (channels-last): a plain copy, and the module's layout.
                view[len(index)] = frame.to_ndarray(format="rgb24")
                index.append(current)
                seconds.append(last_pts)
                if len(index) == batch_size:
                    flush_batch()
        except av.error.FFmpegError as err:
            problem = f"decoding failed at frame {count}: {err}"
        if problem is None:
            problem = _truncation(stream, count, last_pts, last_duration)
    flush_batch()
    send(end=count, problem=problem)


if __name__ == "__main__":
    try:
        _serve(sys.argv[1], *map(int, sys.argv[2:5]), [int(fd) for fd in sys.argv[5:]])
    except BrokenPipeError:
        pass  # the parent stopped listening
    except Exception as err:  # handed to the parent, which raises it in the caller's thread
        print(json.dumps({"error": f"{type(err).__name__}: {err}"}), flush=True)
