"""A one-line progress bar on stderr (frames done, frames/s), so the runtime needs no tqdm."""

from __future__ import annotations

import sys
import time


class Progress:
    """``Progress(total).update(n)`` ... ``close()``; ``total`` 0 when the frame count is unknown."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True, stream=None, every: float = 0.25,
                 label: str = ""):
        self.total, self.done, self.enabled, self.every, self.label = total, initial, enabled, every, label
        self.stream = stream or sys.stderr
        self.start = self.last = time.perf_counter()
        self.counted = 0  # frames processed in this run; resumed ones do not count towards the speed

    def update(self, n: int) -> None:
        self.done += n
        self.counted += n
        if self.total and self.done > self.total:
            self.total = 0  # the container's count was wrong (a stream joined to another): count without a total
        if self.enabled and time.perf_counter() - self.last >= self.every:
            self._draw()

    def _draw(self, end: str = "") -> None:
        self.last = time.perf_counter()
        rate = self.counted / max(self.last - self.start, 1e-9)
        if self.total:
            filled = min(30, 30 * self.done // self.total)
            text = f"[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} frames"
        else:
            text = f"{self.done} frames"
        self.stream.write(f"\r{self.label}{text}  {rate:.1f} frames/s{end}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(end="\n")
