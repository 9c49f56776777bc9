"""The one video writer: MP4 files facecrop makes (tubes, overlays, pictures' videos, Medusa's ``VideoWriter``).

:class:`VideoOut` encodes RGB frames with H.264 (libx264; MPEG-4 Part 2 where a PyAV build lacks it)
at the frame rate and time base the caller gives, with the timestamps the caller gives (or one frame
after another), and, where asked, a sound stream (AAC) the caller fills. It writes under a temporary
name beside the target (``.<stem>.tmp<suffix>``: FFmpeg picks the container by the suffix) and renames into place only when :meth:`close` finishes; a
failure or :meth:`discard` removes the temporary file, so a half-written video is never where a
finished one is expected. Odd frame sizes are padded by one black pixel (4:2:0 needs even sides).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["VideoOut", "video_codec"]

CODECS = ("libx264", "mpeg4")


def video_codec(preferred: str | None = None) -> str:
    """``preferred`` if this FFmpeg can encode it, else the first of :data:`CODECS` it can."""
    for name in ((preferred,) if preferred else ()) + CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except av.codec.codec.UnknownCodecError:
            continue
    raise RuntimeError(f"this PyAV/FFmpeg build has none of the video encoders {CODECS}")


class VideoOut:
    """An MP4 (or any container FFmpeg infers from the suffix) being written; see the module doc.

    Args:
        path: the finished file. width, height: the frames' size (padded to even).
        rate: frames a second (a ``Fraction`` keeps 24000/1001 exact). time_base: of the ``pts`` given
            to :meth:`write` (default ``1 / rate``).
        audio: ``(sample rate, layout name)`` for a sound stream, filled by :meth:`write_audio`.
        crf: x264's quality (18: visually lossless); preset: its speed against file size. reproducible: the same frames give the same bytes
            (x264 without macroblock-tree rate control, which varied from run to run).
        codec: an encoder to prefer over the default. pix_fmt: what the encoder gets (4:2:0 by default).

    Example:
        >>> out = VideoOut("/tmp/facecrop-doctest.mp4", 64, 48, rate=25)
        >>> for i in range(3):
        ...     out.write(np.full((48, 64, 3), 40 * i, np.uint8))
        >>> out.close()
        PosixPath('/tmp/facecrop-doctest.mp4')
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, rate: float | Fraction,
                 time_base: Fraction | None = None, audio: tuple[int, str] | None = None, crf: int = 18,
                 reproducible: bool = False, codec: str | None = None, pix_fmt: str = "yuv420p",
                 preset: str = "veryfast"):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        self.size = (width + width % 2, height + height % 2)
        rate = Fraction(rate).limit_denominator(1001) if not isinstance(rate, Fraction) else rate
        self.time_base = time_base or 1 / rate
        self.count = 0
        self.container = av.open(str(self.tmp), "w")
        try:
            self.stream = self.container.add_stream(video_codec(codec), rate=rate)
            self.stream.width, self.stream.height = self.size
            self.stream.pix_fmt = pix_fmt
            if self.stream.codec_context.name == "libx264":
                self.stream.options = {"crf": str(crf), "preset": preset,
                                       **({"x264-params": "no-mbtree=1"} if reproducible else {})}
            else:
                self.stream.bit_rate = 8_000_000
            self.stream.codec_context.time_base = self.time_base
            self.audio = self.container.add_stream("aac", rate=audio[0], layout=audio[1]) if audio else None
        except BaseException:
            self.discard()
            raise

    def write(self, rgb: np.ndarray, pts: int | None = None) -> None:
        """Append one frame ``[H, W, 3]`` uint8 RGB at ``pts`` (in ``time_base``; default: the next frame)."""
        height, width = rgb.shape[:2]
        if (width + width % 2, height + height % 2) != self.size:
            raise ValueError(f"a {width}x{height} frame cannot join a {self.size[0]}x{self.size[1]} video")
        if (width, height) != self.size:
            rgb = np.pad(rgb, ((0, self.size[1] - height), (0, self.size[0] - width), (0, 0)))
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = pts if pts is not None else round(self.count / self.stream.average_rate / self.time_base)
        frame.time_base = self.time_base
        self.container.mux(self.stream.encode(frame))
        self.count += 1

    def write_audio(self, samples: np.ndarray) -> None:
        """The sound, ``[channels, n]`` float32 planar at the stream's rate, from time 0; call once, at the end."""
        context = self.audio.codec_context
        step = context.frame_size or 1024
        for begin in range(0, samples.shape[1], step):
            piece = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, begin:begin + step], np.float32),
                                               format="fltp", layout=context.layout.name)
            piece.sample_rate, piece.pts, piece.time_base = context.sample_rate, begin, Fraction(1, context.sample_rate)
            self.container.mux(self.audio.encode(piece))
        self.container.mux(self.audio.encode())

    def close(self) -> Path:
        """Flush the encoder and move the finished file into place; on any failure nothing is left."""
        try:
            self.container.mux(self.stream.encode())
            self.container.close()
            os.replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)
        return self.path

    def discard(self) -> None:
        """Stop, and remove the temporary file: nothing is written."""
        try:
            self.container.close()
        finally:
            self.tmp.unlink(missing_ok=True)

