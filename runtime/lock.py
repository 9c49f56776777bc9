"""One run per output: ``<output>.lock``, held with an OS lock for as long as the run writes.

The kernel drops the lock when its process ends, however it ends (SIGKILL included), so a lock
file left by a dead run is simply taken over; the file only says which process holds it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import VideoError

__all__ = ["OutputLock"]


class OutputLock:
    """Hold ``<output>.lock`` while writing ``output``; raises :class:`VideoError` when another run holds it.

    Example:
        >>> with OutputLock(Path("talk.npz")):  # doctest: +SKIP
        ...     ...  # a second run on talk.npz is refused until this block ends
    """

    def __init__(self, output: Path):
        self.output = output
        self.path = output.with_name(output.name + ".lock")
        self.fd: int | None = None

    def __enter__(self) -> "OutputLock":
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise VideoError(f"another run is writing {self.output} (pid {holder}); wait for it to end, "
                                 "or stop it first") from None
            # The holder before us may have removed the file as it ended: then ours is no longer the
            # one others open, and we try again on the new one.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still held: nobody can have taken it in between
            os.close(self.fd)
            self.fd = None
