"""Where live frames come from: a file, a URL, a capture device or the app's frames, as :class:`Frame` items.

:func:`open_source` opens one and returns an iterator of upright RGB frames in source order. A
network source that stalls or drops is reopened with backoff, up to ``reconnects`` times in a row;
the first frame after a gap carries the seconds lost (``gap_s``). Every other failure to open or
read is one :class:`~facecrop.runtime.errors.VideoError` naming the source.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .decode_worker import quarter_turns
from .decoder import upright
from .errors import VideoError

__all__ = ["Frame", "open_source", "read_frames"]

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
DEVICE_FORMATS = {"/dev/video": "v4l2"}  # Linux; macOS ("avfoundation") and Windows ("dshow") by format=


@dataclass
class Frame:
    index: int  # the source's numbering: the n-th frame decoded (or given), from 0
    pts_seconds: float  # presentation time; NaN where the source has none
    rgb: np.ndarray  # [H, W, 3] uint8, upright
    decoded_at: float  # time.perf_counter() when it left the decoder
    gap_s: float = 0.0  # seconds the source was lost just before this frame (a reconnect)
    dropped_before: int = 0  # frames dropped just before this one to keep up (stream policy 'latest')


def read_frames(video: str | Path, stop: int | None = None):
    """``(index, [H, W, 3] upright RGB uint8, pts in seconds or NaN)`` of a file's frames in decoding order
    (the first ``stop``), converted as the run's decoding process converts them: for what is made from a
    run's results afterwards (tubes, overlays, reports), frame by frame in this process."""
    to_rgb = VideoReformatter()
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if stop is not None and index >= stop:
                return
            rgb = upright(to_rgb.reformat(frame, format="rgb24").to_ndarray(), quarter_turns(frame))
            pts = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else float("nan")
            yield index, rgb, pts


def open_source(source, options: dict | None = None, timeout_s: float = 10.0, reconnects: int = 5,
                format: str | None = None) -> "Source":
    """The :class:`Source` of ``source``: a file path, a URL PyAV opens (``rtsp://``, ``http(s)://``,
    ``tcp://``, ...), a capture device (``/dev/video0``, or any name with ``format=`` such as
    ``'avfoundation'`` or ``'dshow'``), or an iterable of frames (RGB uint8 numpy ``[H, W, 3]`` or
    tensors ``[3, H, W]``). ``options`` go to FFmpeg (e.g. ``{"rtsp_transport": "tcp"}``);
    ``timeout_s`` bounds opening and each read. A file, URL or device is opened at once, so a source
    that cannot be opened is refused here."""
    if isinstance(source, (str, Path)):
        name = str(source)
        scheme = name.split("://", 1)[0].lower() if "://" in name else ""
        if scheme in NETWORK_SCHEMES:
            return Source(name, options, timeout_s, format, reconnects)
        device_format = format or next((f for prefix, f in DEVICE_FORMATS.items() if name.startswith(prefix)), None)
        if not device_format and not Path(name).is_file():
            raise VideoError(f"cannot open {name}: no such file (nor a URL or capture device)")
        return Source(name, options, timeout_s, device_format, reconnects=0)
    if hasattr(source, "__iter__"):
        return Source(source)
    raise TypeError(f"source must be a path, a URL, a device name or an iterable of frames, got {type(source).__name__}")


class Source:
    """Frames of one source, in order (iterate once); ``gaps`` lists the seconds lost at each drop of
    a network source that came back; ``gave_up_s``, the seconds spent trying to reopen one that did
    not (None while it has not ended so)."""

    def __init__(self, source, options=None, timeout_s: float = 10.0, format=None, reconnects: int = 0):
        self.source, self.options, self.timeout_s, self.format = source, options, timeout_s, format
        self.reconnects = reconnects
        self.gaps: list[float] = []
        self.gave_up_s: float | None = None
        self.live = reconnects > 0
        self.container = self._open() if isinstance(source, str) else None

    def __iter__(self):
        return self._decode() if self.container is not None else _app_frames(self.source)

    def _open(self):
        try:
            return av.open(self.source, format=self.format, options=dict(self.options or {}),
                           timeout=(self.timeout_s, self.timeout_s))
        except av.error.ExitError:  # FFmpeg's read timeout: a server that accepts and sends nothing
            raise VideoError(f"cannot open {self.source}: nothing arrived within {self.timeout_s:g} s") from None
        except (av.error.FFmpegError, OSError) as err:
            raise VideoError(f"cannot open {self.source}: {err}") from None

    def _decode(self):
        index, gap_s = 0, 0.0
        while True:
            try:
                with self.container as container:
                    if not container.streams.video:
                        raise VideoError(f"{self.source} has no video stream")
                    stream = container.streams.video[0]
                    stream.thread_type = "AUTO"
                    to_rgb = VideoReformatter()  # swscale set up once, not for every frame
                    for frame in container.decode(stream):
                        pts = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else float("nan")
                        rgb = upright(to_rgb.reformat(frame, format="rgb24").to_ndarray(), quarter_turns(frame))
                        yield Frame(index, pts, rgb, time.perf_counter(), gap_s)
                        index, gap_s = index + 1, 0.0
            except (av.error.FFmpegError, OSError):
                if not self.live:
                    raise VideoError(f"{self.source}: reading failed at frame {index}") from None
            if not self.live:
                return
            lost = time.perf_counter()  # a live stream that ends or fails has dropped: try to get it back
            self.container = self._reopen()
            gap_s = time.perf_counter() - lost
            if self.container is None:
                self.gave_up_s = gap_s  # the end of the source, not video lost in it
                return
            self.gaps.append(gap_s)

    def _reopen(self):
        """Open the source again, waiting 0.5, 1, 2, ... s between tries; None after ``reconnects`` failures."""
        for attempt in range(self.reconnects):
            time.sleep(min(0.5 * 2 ** attempt, 8.0))
            try:
                return self._open()
            except VideoError:
                continue
        return None


def _app_frames(frames):
    """The app's frames as :class:`Frame` items (numbered as given; no timestamps)."""
    torch = sys.modules.get("torch")  # an app that hands tensors has imported torch
    for index, item in enumerate(frames):
        if torch is not None and isinstance(item, torch.Tensor):
            if item.dtype != torch.uint8 or item.ndim != 3 or item.shape[0] != 3:
                raise ValueError(f"frame {index}: expected a uint8 tensor [3, H, W] (RGB), got {item.dtype} "
                                 f"{tuple(item.shape)}")
            rgb = item.permute(1, 2, 0).cpu().numpy()
        elif isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3:
                raise ValueError(f"frame {index}: expected a uint8 array [H, W, 3] (RGB), got {item.dtype} {item.shape}")
            rgb = item
        else:
            raise ValueError(f"frame {index}: expected a numpy array or a tensor, got {type(item).__name__}")
        yield Frame(index, float("nan"), np.ascontiguousarray(rgb), time.perf_counter())
