"""facecrop's own errors, under one root, and the warnings users act on (the CLI prints each as one line).

Each error is also the built-in it was before the root existed (``VideoError`` is a ``ValueError``), so
``except ValueError`` in callers keeps working; the CLI catches :class:`FacecropError` only, so that
anything else (a bug) shows its traceback.
"""

from __future__ import annotations

__all__ = ["FacecropError", "UsageError", "BundleError", "CheckpointDamaged", "RunInterrupted", "StaleCheckpoint", "StaleCropsRemoved", "VideoError"]


class FacecropError(Exception):
    """The root of facecrop's own errors: the message says what is wrong and what to do."""


class UsageError(FacecropError, ValueError):
    """An argument, option or input that cannot be used as given."""


class BundleError(FacecropError, ValueError):
    """A bundle that cannot be used here: unreadable, tampered, too new or built for another device."""


class VideoError(FacecropError, ValueError):
    """A video that cannot be (fully) processed, or results that cannot be written."""


class StaleCheckpoint(VideoError):
    """``<output>.partial/`` was made from another video, bundle or setting."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (or SIGTERM, in the CLI); the message says what was kept and where."""


class CheckpointDamaged(UserWarning):
    """Part of ``<output>.partial/`` cannot be read: those frames are computed again (a warning, not an error)."""


class StaleCropsRemoved(UserWarning):
    """A crops folder beside rewritten results no longer matched them (other face ids) and was removed."""
