"""One benchmark job, run in its own process so its peak memory is its own.

Timings are medians over repeats after a warm-up; on CUDA the device is
synchronised before every clock read (and batch times come from CUDA events).
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.backends import Case, make_runner
from benchmarks.frames import decode_batches, synthetic_frames


class Clock:
    """Wall time of a block; on CUDA, events on the current stream and a synchronise."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            self.start_event = torch.cuda.Event(enable_timing=True)
            self.end_event = torch.cuda.Event(enable_timing=True)
            self.start_event.record()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.end_event.record()
            torch.cuda.synchronize()
            # Host-side work (decoding, onnxruntime) is invisible to events, so take the larger.
            self.seconds = max(self.start_event.elapsed_time(self.end_event) / 1e3, time.perf_counter() - self.start)
        else:
            self.seconds = time.perf_counter() - self.start


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB.

    On Linux from ``/proc/self/status`` (VmHWM), not ``ru_maxrss``: Linux keeps that across fork +
    exec, so a measuring subprocess would report its (large) parent's RSS at the fork instead.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1 << 20) if platform.system() == "Darwin" else peak / 1024


class ChildMemory:
    """Peak resident memory of this process's child processes (facecrop's decoder), MiB, sampled.

    Counts each child's ``RssAnon + RssFile``, leaving out ``RssShmem``: the shared frame slots
    are in this process's own VmHWM already. Used as ``with ChildMemory() as children: ...``,
    then ``children.peak_mb``.
    """

    def __init__(self, interval_s: float = 0.02):
        self.interval_s, self.peak_mb = interval_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            total = 0
            for pid in _children(os.getpid()):
                try:
                    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
                except OSError:
                    continue  # it has just ended
                total += sum(int(fields.get(k, "0 kB").split()[0]) for k in ("RssAnon", "RssFile"))
            self.peak_mb = max(self.peak_mb, total / 1024)


def _children(pid: int) -> list[int]:
    """Process ids of ``pid``'s children (Linux ``/proc``; elsewhere none)."""
    pids = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            pids += [int(p) for p in children.read_text().split()]
        except OSError:
            pass
    return pids


def load_frames(source: dict) -> np.ndarray:
    """``{"video": path, "count": n}`` (decoded) or ``{"n_faces": k, "count": n, "size": [w, h]}``."""
    if "video" in source:
        return np.concatenate(list(decode_batches(Path(source["video"]), 64, limit=source["count"])))
    return synthetic_frames(source["count"], source["n_faces"], tuple(source["size"]))


def chunks(frames: np.ndarray, batch: int, count: int) -> list[np.ndarray]:
    """``count`` batches of ``batch`` consecutive frames, wrapping around the frame set."""
    n = len(frames)
    return [frames[[(k * batch + j) % n for j in range(batch)]] for k in range(count)]


def run_job(spec: dict) -> dict:
    """Measure one backend on one frame set; see ``benchmarks/run.py`` for the spec's keys."""
    torch.set_num_threads(spec["threads"])
    case = Case(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["case"].items()})
    clock = lambda: Clock(case.device)  # noqa: E731
    if case.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    cache = Path(spec["bundle_cache"]) if spec.get("bundle_cache") else None
    runner = make_runner(spec["backend"], case, Path(spec["workdir"]), cache=cache)
    try:
        return _measure(runner, spec, case, clock)
    finally:
        runner.close()


def _measure(runner, spec: dict, case: Case, clock) -> dict:
    result = {"backend": spec["backend"], "note": runner.note, "setup_s": runner.setup_s,
              "load_before": os.getloadavg()[0]}
    if "frames" in spec:
        result.update(_measure_main(runner, spec, clock))
    result["sets"] = {}
    for label, source in spec.get("frame_sets", {}).items():
        frames = load_frames(source)
        result["sets"][label] = _fps(runner, frames, _main_batch(runner, spec), spec["repeats"], clock)[0]
    result["peak_rss_mb"] = peak_rss_mb()
    result["load_after"] = os.getloadavg()[0]  # other processes on the machine skew CPU timings
    if case.device.startswith("cuda"):
        result["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / (1 << 20)
    return result


def _main_batch(runner, spec: dict) -> int:
    return 1 if runner.one_frame_at_a_time else spec["batch"]


def _fps(runner, frames: np.ndarray, batch: int, repeats: int, clock) -> tuple[float, float, int]:
    """Decode-excluded frames/s over ``frames`` (median of ``repeats`` passes), faces per frame, frames."""
    batches = [runner.prepare(b) for b in chunks(frames, batch, -(-len(frames) // batch))]
    runner(batches[0])  # warm-up at this shape
    n_frames = sum(len(b) for b in batches)
    times, faces = [], None
    for _ in range(repeats):
        with clock() as c:
            outputs = [runner(b) for b in batches]
        times.append(c.seconds)
        if faces is None:
            faces = sum(runner.count(o) for o in outputs)
        del outputs
    return n_frames / statistics.median(times), faces / n_frames, n_frames


def _measure_main(runner, spec: dict, clock) -> dict:
    """Warm-up time, decode-included and -excluded frames/s, ms/frame per batch size."""
    repeats, main_batch = spec["repeats"], _main_batch(runner, spec)
    result = {"batch": main_batch}
    frames = load_frames(spec["frames"])
    first = runner.prepare(frames[:main_batch])
    with clock() as c:
        runner(first)
    result["first_call_s"] = c.seconds
    result["warmup_s"] = runner.setup_s + c.seconds

    if spec.get("decode_included"):
        # Decode (PyAV) + convert + run, batches streamed from the video as a user would.
        times = []
        for _ in range(max(1, spec.get("decode_repeats", 1))):
            with clock() as c:
                for batch in decode_batches(Path(spec["frames"]["video"]), main_batch, limit=len(frames)):
                    runner(runner.prepare(batch))
            times.append(c.seconds)
        result["fps_decode_included"] = len(frames) / statistics.median(times)
        result["peak_rss_streaming_mb"] = peak_rss_mb()

    result["fps"], result["faces_per_frame"], result["frames"] = _fps(runner, frames, main_batch, repeats, clock)
    result["ms_per_frame"] = {}
    for size in spec.get("batch_sizes", []):
        if runner.one_frame_at_a_time and size != 1:
            continue
        count = max(repeats, 6) if size == 1 else repeats  # batch 1 cycles through 1..6 faces
        units = [runner.prepare(b) for b in chunks(frames, size, count)]
        runner(units[0])  # warm-up at this shape (torch.compile recompiles per batch size)
        times = []
        for unit in units:
            with clock() as c:
                runner(unit)
            times.append(c.seconds)
        result["ms_per_frame"][str(size)] = 1e3 * statistics.median(times) / size
        del units
    return result
