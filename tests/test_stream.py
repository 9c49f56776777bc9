"""Live video in an app: ``facecrop.runtime.stream`` on real streams over loopback, files and the app's frames.

A producer process remuxes a real H.264 video (Medusa's example video, one person talking) to
MPEG-TS over ``tcp://127.0.0.1:PORT?listen=1`` at real-time pace, packet for packet, as a camera
or a media server would; the results must equal ``process_video`` on the file those packets came
from. Producers that die mid-stream, and come back, show the reconnect and the gap.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from benchmarks import live as live_bench
from benchmarks.live import free_port, open_when_listening
from conftest import as_in_a_terminal, real_media
from facecrop.runtime import VideoError, process_video, stream
from test_runtime import npz

# Exact, or within float32 rounding: process_video runs the module on one thread fewer (its decoding
# process gets a core), and sums over other thread splits differ in their last bits.
TOLERANCE = {"valid": 0, "face_idx": 0, "conf": 1e-5, "bbox": 1e-3, "lms": 1e-3, "crop_mat": 1e-4}


def assert_same(results: list[dict], offline: dict, names=tuple(TOLERANCE), frames=slice(None)) -> None:
    for name in names:
        np.testing.assert_allclose(stacked(results, name), offline[name][frames], rtol=0, atol=TOLERANCE[name],
                                   err_msg=name)

def produce(port: int, first: int = 0, count: int = 10_000) -> subprocess.Popen:
    """A producer serving packets ``first .. first + count`` of the example video to one client."""
    return live_bench.produce(real_media("example_vid.mp4"), port, first, count)


@pytest.fixture(scope="module")
def offline(bundle, tmp_path_factory):
    """``process_video`` on the file the producer streams."""
    return npz(process_video(bundle, real_media("example_vid.mp4"), tmp_path_factory.mktemp("o") / "o.npz",
                             progress=False))


def stacked(results: list[dict], name: str) -> np.ndarray:
    return np.stack([r[name] for r in results])


def test_live_tcp_stream_equals_offline_processing(bundle, offline):
    port = free_port()
    producer = produce(port)
    try:
        with open_when_listening(bundle, f"tcp://127.0.0.1:{port}", reconnects=0) as live:
            results = list(live)
            stats = live.stats
    finally:
        producer.wait(timeout=60)
    assert [r["frame_index"] for r in results] == list(range(len(offline["valid"])))  # every frame, in order
    assert_same(results, offline)
    assert stats["dropped"] == 0 and stats["frames"] == len(results) and stats["faces"] == offline["valid"].sum()
    latency = np.array(stats["latency_s"])
    assert (latency > 0).all()  # its size is measured in benchmarks/live.py, not asserted here
    print(f"\nlive 480x384 24 fps: latency p50 {np.percentile(latency, 50) * 1000:.0f} ms, "
          f"p99 {np.percentile(latency, 99) * 1000:.0f} ms")


def test_a_dropped_stream_is_reconnected_and_the_gap_reported(bundle):
    port = free_port()
    producer = produce(port, 0, 48)  # two seconds, then the producer goes away
    try:
        live = open_when_listening(bundle, f"tcp://127.0.0.1:{port}", reconnects=3)
        results = []
        for result in live:
            results.append(result)
            if len(results) == 40:  # while the client is still reading, a new producer gets ready
                producer.wait(timeout=30)
                producer = produce(port, 0, 48)  # from a keyframe, as a camera that comes back starts
        producer.wait(timeout=60)
    finally:
        producer.kill()
    indices = [r["frame_index"] for r in results]
    assert indices == list(range(len(results))) and len(results) >= 80  # both connections' frames, numbered on
    gaps = [r["gap_s"] for r in results if r["gap_s"] > 0]
    assert len(gaps) == 1 and gaps[0] < 10, gaps
    # The second producer left for good: the iterator ended after the tries, no error; the time spent
    # trying is the source's end, not video lost.
    assert live.stats["gaps_s"] == gaps and live.source.gave_up_s > 0.5


@pytest.mark.parametrize("policy", ["all", "latest"])
def test_a_file_through_stream_is_process_video_frame_for_frame(bundle, offline, policy):
    """A file runs through the one loop as process_video runs it: every frame, whatever the policy (a file
    is never dropped from), and with the same batches (8 frames) the same bytes."""
    with stream(bundle, real_media("example_vid.mp4"), batch_size=8, policy=policy) as results:
        got = list(results)
    assert [r["frame_index"] for r in got] == list(range(len(offline["valid"])))
    for name in ("valid", "face_idx", "conf", "bbox", "lms", "crop_mat", "pts_seconds"):
        assert np.array_equal(stacked(got, name), offline[name]), name
    assert results.source is None and results.stats["dropped"] == 0 and results.stats["frames"] == len(got)


def test_app_frames_including_a_size_change(bundle, offline):
    import av

    with av.open(str(real_media("example_vid.mp4"))) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(20), container.decode(video=0))]
    small = [np.ascontiguousarray(f[::2, ::2]) for f in frames[10:]]
    given = frames[:6] + [torch.from_numpy(f).permute(2, 0, 1) for f in frames[6:10]] + small
    results = list(stream(bundle, given, batch_size=4))
    assert [r["frame_index"] for r in results] == list(range(20))
    assert_same(results[:10], offline, ("valid", "bbox", "lms", "crop_mat"), slice(0, 10))
    half = stacked(results[10:], "bbox")[stacked(results[10:], "valid")]
    full = offline["bbox"][10:20][offline["valid"][10:20]]
    assert np.abs(half * 2 - full).max() < 6  # the same face, found in the half-size frames


def test_bad_sources_say_what_is_wrong(bundle, tmp_path):
    with pytest.raises(VideoError, match="cannot open .*missing.mp4: no such file"):
        stream(bundle, tmp_path / "missing.mp4")
    start, url = time.time(), f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(VideoError, match=f"cannot open {url}: .*Connection refused"):
        stream(bundle, url)
    assert time.time() - start < 15
    frames = [np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.float32)]
    with pytest.raises(ValueError, match=r"frame 1: expected a uint8 array \[H, W, 3\] \(RGB\), got float32"):
        list(stream(bundle, frames))
    with pytest.raises(ValueError, match="policy"):
        stream(bundle, frames, policy="newest")


def test_latest_policy_drops_to_keep_up(bundle):
    import av

    with av.open(str(real_media("example_vid.mp4"))) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]

    def camera(fps: float = 200.0):  # far faster than a 2-core CPU computes
        start = time.perf_counter()
        for i, frame in enumerate(frames):
            time.sleep(max(0.0, start + i / fps - time.perf_counter()))
            yield frame

    results = list(stream(bundle, camera(), batch_size=2, policy="latest"))
    indices = [r["frame_index"] for r in results]
    dropped = sum(r["dropped_before"] for r in results)
    assert dropped > 0 and len(results) + dropped == len(frames)  # every frame computed or counted as dropped
    assert indices == sorted(indices) and indices[-1] == len(frames) - 1
    for r, next_index in zip(results[1:], indices[1:]):
        previous = indices[indices.index(next_index) - 1]
        assert next_index - previous - 1 == r["dropped_before"]


def test_cli_writes_a_json_line_per_frame_until_ctrl_c(bundle_path, tmp_path):
    import json
    import os
    import signal

    port = free_port()
    producer = produce(port)
    out = tmp_path / "faces.jsonl"
    cli = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "facecrop"), "run", str(bundle_path),
                            f"tcp://127.0.0.1:{port}", "-o", str(out)], stderr=subprocess.PIPE, text=True,
                           start_new_session=True, preexec_fn=as_in_a_terminal)
    try:
        deadline = time.time() + 120
        while not (out.exists() and len(out.read_text().splitlines()) >= 30):  # lines come as frames do
            assert cli.poll() is None and time.time() < deadline, cli.stderr.read() if cli.poll() is not None else ""
            time.sleep(0.05)
        os.killpg(cli.pid, signal.SIGINT)
        _, stderr = cli.communicate(timeout=60)
    finally:
        cli.kill()
        producer.kill()
    assert cli.returncode == 0 and "Traceback" not in stderr, stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame_index"] for r in lines] == list(range(len(lines))) and 30 <= len(lines) < 232
    assert all(len(r["faces"]) == 1 and r["faces"][0]["face_idx"] == 0 and len(r["faces"][0]["lms"]) == 5 for r in lines)
    # stream()'s names, the results file's and the WebDataset JSON's: one vocabulary
    assert set(lines[0]) == {"frame_index", "pts_seconds", "latency_s", "dropped_before", "gap_s", "faces"}
    summary = stderr.strip().splitlines()[-1]
    assert summary.startswith(f"wrote {out}: {len(lines)} frames, {len(lines)} faces, 0 dropped, latency p50"), summary
