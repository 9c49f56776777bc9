"""The decoding process: decode a video, convert each frame to RGB into shared-memory slots.

Run by path by :class:`facecrop.runtime.decoder.Decoder`, with the slots' file descriptors; imports
PyAV and the standard library only (not even NumPy: 50 ms less before the first frame). JSON lines:
on stdin the job (``{"video", "batch_size", "skip", "max_frame_bytes"}``: the process can start
before its video is known), then the slots the parent is done with; on stdout, which slot holds
which frames (as stored, with the quarter turns that show them upright), then the end (or an error).
After the end it waits for the next job: a dataset run keeps its decoding processes.

    python decode_worker.py FD [FD ...]
"""

from __future__ import annotations

import json
import mmap
import signal
import sys

if __name__ == "__main__":
    # Ctrl-C and SIGTERM reach the whole process group: the parent handles them and stops this process.
    # Ignored before PyAV's import (0.1 s), so that an early Ctrl-C prints no traceback from here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

import av  # noqa: E402 - after the signals, on purpose
from av.video.reformatter import VideoReformatter  # noqa: E402

# A batch holds at most this many bytes of frames (and at least one frame): batch 8 up to 720p,
# 4 at 1080p, 1 at 4K. At 1080p, batch 4 ran as fast as 8 and the run's peak RSS was 84 MB lower.
BATCH_BYTES = 24 << 20


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


def _truncation(stream, count: int, decoded_end: float) -> str | None:
    """Say so when the container declares more video than was decoded (a cut or truncated file).

    ``decoded_end``: how far the decoded frames reach, in seconds: by their timestamps, or by their
    count at the frame rate where timestamps reset part way (two recordings joined by ``cat``).
    """
    if stream.frames and count < stream.frames:
        return f"decoding stopped at frame {count} of the {stream.frames} the container declares"
    end = declared_end(stream)
    rate = _rate(stream)
    if end is not None and count and decoded_end + 2.0 / rate < end:
        return f"decoding stopped at frame {count} ({decoded_end:.3f} s) but the container declares {end:.3f} s"
    return None


def _rate(stream) -> float:
    return float(stream.average_rate or stream.guessed_rate or 25)


def _copy_rgb(frame, slot: mmap.mmap, offset: int, to_rgb: VideoReformatter) -> None:
    """Write ``frame`` as ``H x W x 3`` rgb24 bytes at ``offset`` (channels-last, rows unpadded).

    swscale's rgb24, as the InsightFace loop decodes (``to_ndarray('bgr24')`` takes the same path;
    planar gbrp takes other code paths for some widths: 2.4 grey levels apart at 360 px wide, measured).
    ``to_rgb``: one reformatter for a video's frames, so that swscale sets up its conversion once
    (``frame.reformat`` makes a new one for every frame object).
    """
    plane = to_rgb.reformat(frame, format="rgb24").planes[0]
    row, pitch = frame.width * 3, plane.line_size
    data = memoryview(plane)
    if pitch == row:
        slot[offset:offset + row * frame.height] = data[:row * frame.height]
    else:
        for y in range(frame.height):
            slot[offset + y * row:offset + (y + 1) * row] = data[y * pitch:y * pitch + row]


def quarter_turns(frame) -> int:
    """Counterclockwise quarter turns (0-3) that show ``frame`` upright, as players do: phones store
    portrait video sideways with a display rotation (PyAV's ``frame.rotation``, degrees counterclockwise)."""
    return round((frame.rotation or 0) / 90) % 4


def frames_per_batch(batch_size: int, width: int, height: int) -> int:
    """How many ``width x height`` frames a batch of at most ``batch_size`` takes (see ``BATCH_BYTES``)."""
    return max(1, min(batch_size, BATCH_BYTES // (3 * width * height)))


def slot_bytes(batch_size: int, max_frame_bytes: int) -> int:
    """Bytes a slot needs to hold any batch (see :func:`frames_per_batch`): bounded by ``BATCH_BYTES`` or
    one frame, whatever the batch size asked for (``--batch-size 1000000000`` maps no more)."""
    return min(batch_size * max_frame_bytes, max(BATCH_BYTES, max_frame_bytes))


def map_slots(fds: list[int], length: int, mapped: list[mmap.mmap]) -> list[mmap.mmap]:
    """The slots mapped ``length`` bytes long: ``mapped`` (the last video's) if that is their length.

    A new mapping page-faults again every page the next video writes, one fault per 4 KiB: about
    20,000 for a video of 720x720 frames, about 1.5% of a folder run's CPU (``perf``), so mappings are kept.
    """
    if mapped and len(mapped[0]) == length:
        return mapped
    for old in mapped:
        old.close()
    return [mmap.mmap(fd, length) for fd in fds]


def serve(video: str, batch_size: int, skip: int, max_frame_bytes: int, slots: list[mmap.mmap]) -> None:
    """Decode ``video`` from frame ``skip`` on into ``slots``, saying on stdout what each holds."""
    free = list(range(len(slots)))
    count, last_pts, last_duration, problem, resets = 0, float("nan"), 0.0, None, []
    slot, shape, turns, index, seconds = None, None, 0, [], []
    to_rgb = VideoReformatter()

    def send(**message):
        print(json.dumps(message), flush=True)

    def flush_batch():
        nonlocal slot, index, seconds
        if index:
            send(slot=slot, shape=shape, turns=turns, index=index, seconds=seconds)
            slot, index, seconds = None, [], []

    with av.open(video) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                current, count = count, count + 1
                pts = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else float("nan")
                if pts < last_pts:
                    resets.append(current)  # timestamps went back: a stream joined to another, or a reset clock
                last_pts = pts
                last_duration = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 0.0
                if current < skip:
                    continue
                if shape != [3, frame.height, frame.width] or turns != quarter_turns(frame):
                    flush_batch()  # the stream changed size or display rotation: the batch ends here
                    shape, turns = [3, frame.height, frame.width], quarter_turns(frame)
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
                _copy_rgb(frame, slots[slot], len(index) * 3 * frame.height * frame.width, to_rgb)
                index.append(current)
                seconds.append(last_pts)
                if len(index) == frames_per_batch(batch_size, frame.width, frame.height):
                    flush_batch()
        except av.error.FFmpegError as err:
            problem = f"decoding failed at frame {count}: {err}"
        start = float((stream.start_time or 0) * stream.time_base) if stream.time_base else 0.0
        by_count = start + count / _rate(stream)
        if problem is None:
            problem = _truncation(stream, count, max(last_pts + last_duration, by_count))
    flush_batch()
    note = (f"timestamps go back at frame {resets[0]} ({len(resets)} time(s)): frames are kept in decoding order and "
            "pts_seconds are as the container gives them" if resets else None)
    send(end=count, problem=problem, note=note)


if __name__ == "__main__":
    fds, slots = [int(fd) for fd in sys.argv[1:]], []
    while True:  # one video after another, until the parent closes the pipe (or stops this process)
        line = sys.stdin.readline()
        if not line:
            break  # the parent left
        if not line.startswith("{"):
            continue  # a slot handed back after the last video's end
        job = json.loads(line)
        try:
            slots = map_slots(fds, slot_bytes(job["batch_size"], job["max_frame_bytes"]), slots)
            serve(job["video"], job["batch_size"], job["skip"], job["max_frame_bytes"], slots)
        except BrokenPipeError:
            break  # the parent stopped listening
        except Exception as err:  # handed to the parent, which raises it in the caller's thread and stops this
            print(json.dumps({"error": f"{type(err).__name__}: {err}"}), flush=True)
