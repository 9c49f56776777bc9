"""Speed as users live it: ``facecrop run`` as a process against an InsightFace script as a process.

    python benchmarks/whole_process.py [--bundle PATH] [--repeats 5] [--sets medusa long dataset]

Each row times whole processes from launch to exit (imports, model or bundle loading, decoding,
writing the results), alternating facecrop and the reference ``--repeats`` times, and reports the
medians and the peak memory of each side's whole process tree (``facecrop run`` has a decoding
process; the shared frame slots it writes are counted once).

- ``medusa``: every video of ``../shared/media/medusa`` (real people, 0-3 faces, 480x384 to 720x720).
- ``long``: 20 s videos made of real photos (1-6 faces a frame) at 480p, 720p and 1080p.
- ``dataset``: a folder of 20 short real clips (4 s each, cut from Medusa's videos): one
  ``facecrop run BUNDLE FOLDER -o OUT/`` against a shell loop of ``facecrop run`` per clip, and
  against one Python process looping InsightFace over the clips (``benchmarks/insightface_run.py``).

The bundle is the README's main job, det_500m at 224 with the aligned 112 crop, built with the
default backend (``aoti``) into ``--out/bundle-cache`` unless ``--bundle`` names one. The
reference uses the same detector, det size and thresholds. Writes ``whole_process.json`` and
``whole_process.md`` under ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(REPO))

MEDIA = REPO.parent / "shared" / "media" / "medusa"
LONG_SIZES = ("480p", "720p", "1080p")
LONG_SECONDS, CLIPS, CLIP_SECONDS = 20, 20, 4


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants started from main threads (Linux ``/proc``): facecrop's decoding
    process, the shell loop's ``facecrop run`` and its decoder. Reading one file per process keeps the
    sampling cheap: it shares the machine with what it measures."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            todo += [int(p) for p in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except OSError:
            pass  # it has just ended
    return pids


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of a process tree, MiB: private and file pages of each, shared memory once."""
    private, shared = 0, 0
    for p in _tree(pid):
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue  # it has just ended
        fields = dict(line.split(":", 1) for line in lines if line.startswith("Rss"))
        kb = {k: int(fields.get(k, "0 kB").split()[0]) for k in ("RssAnon", "RssFile", "RssShmem")}
        private += kb["RssAnon"] + kb["RssFile"]
        shared = max(shared, kb["RssShmem"])  # the frame slots, mapped by both facecrop processes
    return (private + shared) / 1024


def timed_process(cmd: list[str], interval_s: float = 0.02) -> dict:
    """Run ``cmd`` to its end; its wall seconds and the peak resident memory of its process tree,
    sampled every ``interval_s`` (about 1% of one core)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    peak = 0.0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.wait(interval_s):
            peak = max(peak, _tree_rss_mb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{err.decode()[-2000:]}")
    return {"seconds": seconds, "peak_mb": peak}


def make_clips(folder: Path, count: int = CLIPS, seconds: float = CLIP_SECONDS) -> list[Path]:
    """``count`` clips of ``seconds`` cut from Medusa's videos with faces (H.264, their own size and rate).

    Clips start every ``seconds`` in each video in turn, overlapping where a video is too short; each
    is re-encoded (libx264, CRF 18) so that it starts with a keyframe, as a clip in a dataset does.
    Built once into ``folder`` (written to a temporary name, then renamed).
    """
    import av

    sources = [MEDIA / name for name in ("1.mp4", "2.mp4", "3.mp4", "example_vid.mp4")]
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(count):
        source = sources[i % len(sources)]
        path = folder / f"clip_{i:02d}_{source.stem}.mp4"
        clips.append(path)
        if path.is_file():
            continue
        tmp = path.with_name(path.stem + ".tmp.mp4")
        with av.open(str(source)) as src, av.open(str(tmp), "w") as dst:
            stream = src.streams.video[0]
            rate = stream.average_rate
            total = stream.frames
            length = int(round(seconds * float(rate)))
            first = (i // len(sources)) * length % max(1, total - length)
            out = dst.add_stream("libx264", rate=rate)
            out.width, out.height, out.pix_fmt = stream.width, stream.height, "yuv420p"
            out.options = {"crf": "18", "preset": "veryfast"}
            for index, frame in enumerate(src.decode(stream)):
                if index >= first + length:
                    break
                if index >= first:
                    dst.mux(out.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")))
            dst.mux(out.encode())
        tmp.rename(path)
    return clips


def _frames(video: Path) -> int:
    import av

    with av.open(str(video)) as container:
        return sum(1 for _ in container.decode(video=0))


def _facecrop_bin() -> str:
    script = Path(sys.executable).parent / "facecrop"
    if not script.is_file():
        raise SystemExit(f"{script} not found: install facecrop as README says (pip install -e .)")
    return str(script)


def compare(label: str, frames: int, commands: dict[str, list[str]], repeats: int, clean: list[Path]) -> dict:
    """Run each side's command ``repeats`` times, alternating the sides; medians and peaks per side."""
    runs = {side: [] for side in commands}
    for r in range(repeats):
        order = list(commands) if r % 2 == 0 else list(commands)[::-1]
        for side in order:
            for path in clean:  # every run starts from an empty output, as a first run does
                shutil.rmtree(path, ignore_errors=True)
                path.mkdir(parents=True)
            runs[side].append(timed_process(commands[side]))
    row = {"input": label, "frames": frames}
    for side, results in runs.items():
        row[side] = {"seconds": statistics.median(r["seconds"] for r in results),
                     "all_seconds": [round(r["seconds"], 3) for r in results],
                     "peak_mb": max(r["peak_mb"] for r in results)}
    print(f"[whole] {label}: " + ", ".join(f"{s} {row[s]['seconds']:.2f} s" for s in runs), file=sys.stderr, flush=True)
    return row


def markdown(rows: list[dict], repeats: int, bundle: Path) -> str:
    lines = [f"`facecrop run` ({bundle.parent.name}) against "
             f"the InsightFace script, whole processes, median of {repeats} alternating runs:", "",
             "| input | frames | InsightFace script s | facecrop s | speed-up | peak MB InsightFace / facecrop |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        ref = row["insightface"]
        for side in [s for s in row if s not in ("input", "frames", "insightface")]:
            name = row["input"] + ("" if side == "facecrop" else f" ({side})")
            ours = row[side]
            lines.append(f"| {name} | {row['frames']} | {ref['seconds']:.2f} | {ours['seconds']:.2f} | "
                         f"{ref['seconds'] / ours['seconds']:.2f}x | {ref['peak_mb']:.0f} / {ours['peak_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None, help="default: the main job's aoti bundle, cached")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sets", nargs="+", choices=("medusa", "long", "dataset"), default=["medusa", "long", "dataset"])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "whole")
    parser.add_argument("--model-dir", type=Path,
                        default=Path(os.environ.get("FACECROP_MODEL_DIR", REPO.parent / "shared" / "models")))
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    detector = args.model_dir.resolve() / "det_500m.onnx"
    if not detector.is_file():
        raise SystemExit(f"{detector} not found: pass --model-dir or set FACECROP_MODEL_DIR")
    bundle = args.bundle
    if bundle is None:
        from benchmarks.backends import Case, cached_bundle

        case = Case(str(detector), None, (224, 224), 112)
        bundle = cached_bundle("aoti", case, out / "bundle-cache")[0]
    facecrop = _facecrop_bin()
    reference = [sys.executable, str(REPO / "benchmarks" / "insightface_run.py"), str(detector), "--det-size", "224",
                 "--crop-size", "112", "-o"]
    work = out / "work"

    inputs = []
    if "medusa" in args.sets:
        inputs += [(f"medusa {v.name}", v) for v in sorted(MEDIA.glob("*.mp4"))]
    if "long" in args.sets:
        from benchmarks.frames import FPS, FRAME_SIZES, ensure_video

        inputs += [(f"{LONG_SECONDS} s {s}", ensure_video(out / "videos", LONG_SECONDS * FPS, FRAME_SIZES[s]))
                   for s in LONG_SIZES]
    rows = []
    for label, video in inputs:
        commands = {"insightface": reference + [str(work / "ref"), str(video)],
                    "facecrop": [facecrop, "run", str(bundle), str(video), "-o", str(work / "ours" / "out.npz")]}
        rows.append(compare(label, _frames(video), commands, args.repeats, [work / "ref", work / "ours"]))
    if "dataset" in args.sets:
        clips = make_clips(out / "clips")
        folder = clips[0].parent
        loop = ('for f in "$1"/*.mp4; do "$2" run "$3" "$f" -o "$4/$(basename "$f").npz" || exit 1; done')
        commands = {"insightface": reference + [str(work / "ref")] + [str(c) for c in clips],
                    "facecrop": [facecrop, "run", str(bundle), str(folder), "-o", str(work / "ours")],
                    "shell loop of facecrop run": ["bash", "-c", loop, "_", str(folder), facecrop, str(bundle),
                                                   str(work / "loop")]}
        rows.append(compare(f"{CLIPS} clips of {CLIP_SECONDS} s", sum(_frames(c) for c in clips), commands,
                            args.repeats, [work / "ref", work / "ours", work / "loop"]))
    shutil.rmtree(work, ignore_errors=True)
    report = markdown(rows, args.repeats, bundle)
    (out / "whole_process.json").write_text(json.dumps({"bundle": str(bundle), "repeats": args.repeats, "rows": rows},
                                                       indent=1))
    (out / "whole_process.md").write_text(report)
    print(report)
    return rows


if __name__ == "__main__":
    main()
