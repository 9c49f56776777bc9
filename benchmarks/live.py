"""Live latency: ``facecrop.runtime.stream`` on real video served over loopback TCP at real-time pace.

    python benchmarks/live.py [--bundle PATH] [--seconds 10] [--out benchmarks/out/live]

A producer process remuxes H.264 video (real people: Medusa's ``2.mp4`` scaled to 480p and 720p,
encoded at 25 and 30 fps) to MPEG-TS over ``tcp://127.0.0.1:PORT?listen=1``, packet by packet at
the pace of their timestamps, as a camera does. For each case: latency p50/p99 (a frame leaving
the decoder to its result being ready), frames/s sustained, frames dropped (policy ``all``: none
by design, so latency shows falling behind), the mean batch the latency bound allowed and the
share of the wall time spent in the module. Then the input rate is raised (policy ``latest``) to
find the highest rate kept without a dropped frame. det_500m at 224 with the aligned 112 crop, the
default backend (``aoti``), built into ``--out/bundle-cache`` unless ``--bundle`` names one.
Writes ``live.json`` and ``live.md`` under ``--out``.

``python benchmarks/live.py --serve VIDEO PORT [FIRST COUNT]`` is the producer alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(REPO))

CASES = [("480p", (854, 480), 25), ("480p", (854, 480), 30), ("720p", (1280, 720), 25), ("720p", (1280, 720), 30)]


def serve(video: str, port: int, first: int = 0, count: int = 10**9, rate: float = 1.0) -> None:
    """Send packets ``first .. first + count`` of ``video`` to the first client of ``tcp://127.0.0.1:port``,
    each at its timestamp (``rate`` times real time), as MPEG-TS. Prints ``listening`` first."""
    import av

    print("listening", flush=True)
    with av.open(video) as source, av.open(f"tcp://127.0.0.1:{port}?listen=1", "w", format="mpegts") as target:
        src = source.streams.video[0]
        out = target.add_stream_from_template(src)
        start, sent = None, 0
        for packet in source.demux(src):
            if packet.dts is None:
                continue
            if sent >= first + count:
                break
            sent += 1
            if sent <= first:
                continue
            seconds = float(packet.pts * packet.time_base) / rate
            start = start if start is not None else time.perf_counter() - seconds
            time.sleep(max(0.0, start + seconds - time.perf_counter()))
            packet.stream = out
            target.mux(packet)


def produce(video: Path, port: int, first: int = 0, count: int = 10**9, rate: float = 1.0) -> subprocess.Popen:
    """:func:`serve` in its own process; returns once it is about to listen."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", str(video), str(port),
                             str(first), str(count), str(rate)], stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "listening":
        raise RuntimeError(f"the producer for {video} did not start")
    return proc


def open_when_listening(bundle, url: str, **options):
    """``stream(bundle, url)`` once the producer (another process, just started) accepts connections."""
    from facecrop.runtime import VideoError, stream

    deadline = time.time() + 30
    while True:
        try:
            return stream(bundle, url, **options)
        except VideoError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_clip(path: Path, size: tuple[int, int], fps: int, seconds: float) -> Path:
    """Medusa's ``2.mp4`` (two people) scaled to ``size``, ``seconds`` long at ``fps``; H.264, a keyframe a second."""
    import av
    import numpy as np
    from PIL import Image

    from benchmarks.photos import media_dir

    frames = []
    with av.open(str(media_dir() / "2.mp4")) as container:
        for frame in container.decode(video=0):
            frames.append(np.asarray(Image.fromarray(frame.to_ndarray(format="rgb24")).resize(size, Image.BILINEAR)))
            if len(frames) == int(seconds * fps):
                break
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast", "g": str(fps), "bf": "0"}
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


class TimedBundle:
    """The bundle, with the time of each call kept (where the time goes)."""

    def __init__(self, bundle):
        self.bundle, self.calls = bundle, []

    def __getattr__(self, name):  # everything else the loop asks a bundle (device_type, parallel, ...)
        return getattr(self.bundle, name)

    def run_frames(self, frames):  # what the runtime's stream calls (numpy in and out)
        start = time.perf_counter()
        out = self.bundle.run_frames(frames)
        self.calls.append((len(frames), time.perf_counter() - start))
        return out


def measure(bundle, clip: Path, rate: float = 1.0, policy: str = "all", batch_size: int = 4,
            max_delay: float = 0.03) -> dict:
    import numpy as np

    timed = TimedBundle(bundle)
    port = free_port()
    producer = produce(clip, port, rate=rate)
    try:
        live = open_when_listening(timed, f"tcp://127.0.0.1:{port}", batch_size=batch_size, max_delay=max_delay,
                                   policy=policy, reconnects=0)
        start = time.perf_counter()
        with live:
            for _ in live:
                pass
        wall = time.perf_counter() - start
        stats = live.stats
    finally:
        producer.kill()
        producer.wait()
    latency = np.array(stats["latency_s"]) * 1000
    return {"frames": stats["frames"], "dropped": stats["dropped"], "latency_p50_ms": float(np.percentile(latency, 50)),
            "latency_p99_ms": float(np.percentile(latency, 99)), "fps_sustained": stats["frames"] / wall,
            "mean_batch": float(np.mean([n for n, _ in timed.calls])),
            "module_share": sum(t for _, t in timed.calls) / wall,
            "module_ms_per_frame": 1000 * sum(t for _, t in timed.calls) / max(stats["frames"], 1)}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "live")
    parser.add_argument("--model-dir", type=Path, default=Path(os.environ.get("FACECROP_MODEL_DIR", REPO.parent / "shared" / "models")))
    parser.add_argument("--quick", action="store_true", help="480p 25 fps and one raised rate only (a smoke test)")
    parser.add_argument("--fifty", type=int, default=0, metavar="RUNS",
                        help="only Medusa's 2.mp4 as it is (642x378, 50 fps, policy all), RUNS times")
    parser.add_argument("--serve", nargs="+", default=None, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        video, port, *rest = args.serve
        serve(video, int(port), *(int(x) for x in rest[:2]), *(float(x) for x in rest[2:3]))
        return []
    from benchmarks.backends import load_as_the_cli

    args.out.mkdir(parents=True, exist_ok=True)
    if args.bundle is None:
        from benchmarks.backends import Case, cached_bundle

        args.bundle = cached_bundle("aoti", Case(str(args.model_dir / "det_500m.onnx"), None, (224, 224), 112),
                                    args.out / "bundle-cache")[0]
    bundle = load_as_the_cli(args.bundle, None)
    rows = []
    for run in range(args.fifty):  # the case: every frame of a real 50 fps video, at its pace
        from benchmarks.photos import media_dir

        row = {"case": f"medusa 2.mp4 642x378 50 fps, run {run + 1}", "policy": "all", **measure(bundle, media_dir() / "2.mp4")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    for name, size, fps in () if args.fifty else CASES[:1] if args.quick else CASES:
        clip = make_clip(args.out / f"live_{name}_{fps}.mp4", size, fps, args.seconds)
        row = {"case": f"{name} {fps} fps", "policy": "all", **measure(bundle, clip)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    # The highest input rate kept without a dropped frame: the last clip, served faster.
    for rate in () if args.fifty else (2.0,) if args.quick else (1.5, 2.0, 3.0):
        row = {"case": f"{name} {fps * rate:.0f} fps", "policy": "latest",
               **measure(bundle, clip, rate=rate, policy="latest")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = ["| input | policy | frames | dropped | latency p50 | p99 | frames/s sustained | mean batch | module ms/frame | module share |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['policy']} | {r['frames']} | {r['dropped']} | {r['latency_p50_ms']:.0f} ms | "
              f"{r['latency_p99_ms']:.0f} ms | {r['fps_sustained']:.1f} | {r['mean_batch']:.2f} | "
              f"{r['module_ms_per_frame']:.1f} | {r['module_share']:.0%} |" for r in rows]
    (args.out / "live.json").write_text(json.dumps(rows, indent=1))
    (args.out / "live.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
