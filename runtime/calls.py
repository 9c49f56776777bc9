"""Module calls on worker threads, several batches at once, their results taken in the order they were given.

A bundle whose module releases the GIL (``Bundle.parallel`` > 1, see ``aoti.py``) runs one batch per
worker, each on ``threads_per_call`` intra-op threads (set in the worker: OpenMP's thread count belongs to
the calling thread), with ``queued`` more batches waiting, so that a worker whose call ends before the
oldest one starts the next batch at once instead of idling until the oldest is taken. Results are taken
oldest first, so face ids and checkpoints follow the frame order.
With one worker and ``inline``, calls run in the caller's thread (a GPU's module, whose streams are per thread).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from .native import set_intra_op_threads


class InOrderCalls:
    """``submit(tag, fn, *args)`` up to ``workers + queued`` calls, then ``take()`` the oldest ``(tag, result)``."""

    def __init__(self, workers: int, threads_per_call: int, inline: bool = False, queued: int = 0):
        self.capacity = workers if inline else workers + queued
        self._pool = None if inline else ThreadPoolExecutor(workers, thread_name_prefix="facecrop-module",
                                                            initializer=set_intra_op_threads,
                                                            initargs=(threads_per_call,))
        self._pending: deque[tuple[object, Future]] = deque()

    def submit(self, tag, fn, *args) -> None:
        if self._pool is not None:
            self._pending.append((tag, self._pool.submit(fn, *args)))
            return
        done = Future()
        try:
            done.set_result(fn(*args))
        except Exception as err:  # raised by take(), in order, as a worker's would be
            done.set_exception(err)
        self._pending.append((tag, done))

    def full(self) -> bool:
        return len(self._pending) >= self.capacity

    def take(self) -> tuple[object, object]:
        """The oldest call's ``(tag, result)``, waiting for it; its exception is raised here."""
        tag, future = self._pending.popleft()
        return tag, future.result()

    def __len__(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        """Drop the calls not started; wait for the running ones (a batch: tens of milliseconds)."""
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> InOrderCalls:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
