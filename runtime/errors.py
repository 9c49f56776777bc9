"""The runtime's errors and warnings that users act on (the CLI prints each as one line)."""

from __future__ import annotations

__all__ = ["BundleError", "CheckpointDamaged", "RunInterrupted", "StaleCheckpoint", "StaleCropsRemoved", "VideoError"]


class BundleError(ValueError):
    """A bundle that cannot be used here: unreadable, tampered, too new or built for another device."""


class VideoError(ValueError):
    """A video that cannot be (fully) processed, or results that cannot be written."""


class StaleCheckpoint(VideoError):
    """``<output>.partial/`` was made from another video, bundle or setting."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (or SIGTERM, in the CLI); the message says what was kept and where."""


class CheckpointDamaged(UserWarning):
    """Part of ``<output>.partial/`` cannot be read: those frames are computed again (a warning, not an error)."""


class StaleCropsRemoved(UserWarning):
    """A crops folder beside rewritten results no longer matched them (other face ids) and was removed."""
