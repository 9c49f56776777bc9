"""The runtime's module calls (runtime/calls.py): results in frame order, queued batches started by any free worker."""

import threading
import time

import pytest

from facecrop.runtime.calls import InOrderCalls


def _wait_until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return condition()


def test_a_free_worker_starts_queued_batches_while_the_oldest_runs():
    oldest_may_end = threading.Event()
    started = []

    def call(i):
        started.append(i)
        if i == 0:
            assert oldest_may_end.wait(10)
        return i * i

    with InOrderCalls(workers=2, threads_per_call=1, queued=2) as calls:
        for i in range(4):
            assert not calls.full()
            calls.submit(f"batch {i}", call, i)
        assert calls.full()
        # Batch 0 still runs: the other worker went on with 1, 2 and 3 without waiting for 0 to be taken.
        assert _wait_until(lambda: len(started) == 4), started
        oldest_may_end.set()
        assert [calls.take() for _ in range(4)] == [(f"batch {i}", i * i) for i in range(4)]
        assert len(calls) == 0


def test_a_failed_call_raises_in_its_turn():
    def call(i):
        if i == 1:
            raise ValueError("bad batch")
        return i

    with InOrderCalls(workers=2, threads_per_call=1, queued=2) as calls:
        for i in range(3):
            calls.submit(i, call, i)
        assert calls.take() == (0, 0)
        with pytest.raises(ValueError, match="bad batch"):
            calls.take()
        assert calls.take() == (2, 2)


def test_inline_calls_run_at_submit_one_at_a_time():
    thread = []
    with InOrderCalls(workers=1, threads_per_call=1, inline=True, queued=2) as calls:
        calls.submit("a", lambda: thread.append(threading.get_ident()) or 1)
        assert thread == [threading.get_ident()]  # a GPU module's streams are per thread: the caller's
        assert calls.full()  # queueing means nothing when calls run as they are submitted
        assert calls.take() == ("a", 1)
