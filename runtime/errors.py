"""The runtime's errors that users act on (each a ValueError: the CLI prints its one line)."""

from __future__ import annotations

__all__ = ["StaleCheckpoint", "VideoError"]


class VideoError(ValueError):
    """A video that cannot be (fully) processed, or results that cannot be written."""


class StaleCheckpoint(VideoError):
    """``<output>.partial/`` was made from another video, bundle or setting."""
