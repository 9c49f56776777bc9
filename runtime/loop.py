"""The one loop: batches of frames from a source through the module, each with its outputs, in frame order.

A source hands :class:`~.decoder.Batch` items: a file's come from its decoding process
(:class:`DecodedBatches`, never a frame dropped), a live source's or the app's from ``stream.py``'s
batcher. :func:`module_results` keeps several batches in the module at once where that is faster (two
on a CPU whose bundle releases the GIL, see ``calls.py``) and yields each batch with its outputs,
oldest first, so that whatever consumes them (the results sink of ``process_video``, the per-frame
results of ``stream()``) gives the faces their ids in frame order.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import numpy as np

from .bundle import Bundle
from .calls import InOrderCalls
from .decoder import Batch, Decoder, End
from .errors import VideoError
from .native import intra_op_threads

__all__ = ["DecodedBatches", "module_results"]


def module_results(bundle: Bundle, batches: Iterable[Batch], queued: int = 0,
                   parallel: bool = True) -> Iterator[tuple[Batch, dict[str, np.ndarray]]]:
    """``(batch, {output: [b, K, ...] numpy})`` for each batch of ``batches``, in their order.

    ``parallel``: on a CPU, run ``bundle.parallel`` batches at once on worker threads, the CPU's cores
    shared between them and the decoding process, with ``queued`` more waiting; else one call at a time
    in the caller's thread (a GPU's module always: its streams are per thread). Where ``batches`` itself
    fails (a damaged video), the batches already in the module are yielded first, then its error raised:
    they are results to keep. Closing the iterator drops the calls not yet taken.
    """
    on_cpu = bundle.device_type == "cpu"
    workers = getattr(bundle, "parallel", 1) if on_cpu and parallel else 1
    # The decoding process gets a core of its own; the module's calls share the others.
    per_call = max(1, (intra_op_threads() - 1) // workers)
    calls = InOrderCalls(workers, per_call, inline=not (on_cpu and parallel), queued=queued)
    source = iter(batches)
    try:
        while True:
            try:
                batch = next(source)
            except StopIteration:
                break
            except Exception:
                while calls:
                    yield calls.take()
                raise
            calls.submit(batch, bundle.run_frames, batch.frames)
            if calls.full():
                yield calls.take()
        while calls:
            yield calls.take()
    finally:
        calls.close()  # calls never taken are dropped: a resumed run computes their frames again


class DecodedBatches:
    """A file's batches from its decoding process, upright, in frame order; iterate once.

    Raises :class:`VideoError` for a frame outside the bundle's ``bounds`` (``(min, max)`` px a side);
    ``end`` is the decoder's :class:`~.decoder.End` once the batches ran out (None before). Each
    batch's ``decoded_at`` is when it arrived; :meth:`release` hands its frame slot back.
    """

    def __init__(self, decoder: Decoder, bounds: tuple[int, int], video):
        self.decoder, self.bounds, self.video = decoder, bounds, video
        self.end: End | None = None

    def __iter__(self) -> Iterator[Batch]:
        low, high = self.bounds
        for item in self.decoder:
            if isinstance(item, End):
                self.end = item
                return
            height, width = item.frames.shape[2:]
            if not (low <= height <= high and low <= width <= high):
                raise VideoError(f"{self.video}: frame {item.frame_index[0]} is {width}x{height}, outside the "
                                 f"bundle's {low}-{high} px a side")
            item.decoded_at = np.full(len(item.frame_index), time.perf_counter())
            yield item

    def release(self, batch: Batch) -> None:
        self.decoder.release(batch.slot)

    def close(self) -> None:
        self.decoder.close()
