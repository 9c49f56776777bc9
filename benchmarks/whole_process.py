"""Speed as users live it: ``facecrop run`` as a process against an InsightFace script as a process.

    python benchmarks/whole_process.py [--bundle PATH] [--repeats 5] [--sets medusa long dataset]

Each row times whole processes from launch to exit (imports, model or bundle loading, decoding,
writing the results), alternating facecrop and the reference ``--repeats`` times, and reports the
medians and the peak memory of each side's whole process tree (``facecrop run`` has a decoding
process; the shared frame slots it writes are counted once).

- ``medusa``: every video of Medusa's example media (``../shared/media/medusa``, see
  ``benchmarks.photos.media_dir``; real people, 0-3 faces, 480x384 to 720x720).
- ``long``: 20 s videos made of real photos (1-6 faces a frame) at 480p, 720p and 1080p.
- ``fixed``: where the time of one run on Medusa's ``0.mp4`` goes, step by step.
- ``crops``: ``facecrop run`` with ``--crops png`` against the same without, on Medusa's videos with faces.
- ``tubes``: the InsightFace script, ``facecrop run`` without crops, and ``facecrop run --crops mp4``
  (smoothed tubes with their sound and the quality columns), on Medusa's videos with faces and on
  the folder of clips (``docs/tubes.md``; ``benchmarks/tube_stages.py`` splits the tubes' cost).
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
    """Resident memory of a process tree, MiB: private and file pages of each, shared memory once.

    A child with its parent's name is a fork that has not run its program yet (``subprocess``
    starting the decoding process): its pages are the parent's, so it is not counted (counted,
    it doubled the run's peak for a moment: 1320 MB measured for a folder run of 650 MB + decoders).
    """
    private, shared = 0, 0
    names: dict[int, str] = {}
    for p in _tree(pid):
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue  # it has just ended
        fields = dict(line.split(":", 1) for line in lines if line.startswith(("Rss", "Name", "PPid")))
        names[p] = fields.get("Name", "").strip()
        if names[p] == names.get(int(fields.get("PPid", "0")), None):
            continue
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


# The steps of a `facecrop run` before its first frame and after its last, timed in the child itself
# (its clock starts when Python runs the script; the parent's wall time covers the start and the exit).
TIMELINE = """
import json, sys, time
marks, t0 = [], time.perf_counter()
def mark(step):
    marks.append([step, time.perf_counter() - t0])
from pathlib import Path
from facecrop.runtime import load_bundle, process_video
from facecrop.runtime.bundle import read_manifest
from facecrop.runtime.decoder import Decoder
from facecrop.runtime.video import decoder_args
mark("import facecrop.runtime (numpy, PyAV)")
side = int(read_manifest(Path(sys.argv[1]))["input"]["max_side"])
decoder = Decoder(*decoder_args(sys.argv[2], 8, 0, side))  # as the CLI: decoding while the bundle loads
bundle = load_bundle(sys.argv[1], verify=False)
mark("load the bundle (SHA-256, torch's libraries, artifact)")
from facecrop.runtime.bundle import verify_golden
verify_golden(bundle)
mark("golden self-check")
first = []
def on_frames(n):
    if not first:
        first.append(n)
        mark("first batch (decoder start, warm-up, module)")
process_video(bundle, sys.argv[2], sys.argv[3], progress=False, on_frames=on_frames, decoder=decoder)
mark("the other batches, results file" + (" (torch imported)" if "torch" in sys.modules else ""))
print(json.dumps(marks), flush=True)
"""


def fixed_cost(bundle: Path, video: Path, out: Path, repeats: int) -> list[tuple[str, float]]:
    """Median seconds of each step of a run of ``video`` (see ``TIMELINE``), the start and exit included."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", TIMELINE, str(bundle), str(video), str(out)],
                              capture_output=True, text=True, cwd=REPO, check=True)
        wall = time.perf_counter() - start
        marks = json.loads(proc.stdout.strip().splitlines()[-1])
        # The child's clock starts after the interpreter's own start, which the wall time includes.
        steps, last = [], 0.0
        for step, at in marks:
            steps.append((step, at - last))
            last = at
        steps.append(("interpreter start and exit", wall - last))
        runs.append(steps)
    return [(name, statistics.median(run[i][1] for run in runs)) for i, (name, _) in enumerate(runs[0])]


def make_clips(folder: Path, media: Path, count: int = CLIPS, seconds: float = CLIP_SECONDS) -> list[Path]:
    """``count`` clips of ``seconds`` cut from Medusa's videos with faces (H.264, their own size and rate).

    Clips start every ``seconds`` in each video in turn, overlapping where a video is too short; each
    is re-encoded (libx264, CRF 18) so that it starts with a keyframe, as a clip in a dataset does.
    Built once into ``folder`` (written to a temporary name, then renamed).
    """
    import av

    sources = [media / name for name in ("1.mp4", "2.mp4", "3.mp4", "example_vid.mp4")]
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
    """Run each side's command ``repeats`` times, alternating the sides; medians and peaks per side.
    The first side is the baseline the others are compared with."""
    runs = {side: [] for side in commands}
    for r in range(repeats):
        order = list(commands) if r % 2 == 0 else list(commands)[::-1]
        for side in order:
            for path in clean:  # every run starts from an empty output, as a first run does
                shutil.rmtree(path, ignore_errors=True)
                path.mkdir(parents=True)
            runs[side].append(timed_process(commands[side]))
    row = {"input": label, "frames": frames, "sides": list(commands), "baseline": list(commands)[0]}
    for side, results in runs.items():
        row[side] = {"seconds": statistics.median(r["seconds"] for r in results),
                     "all_seconds": [round(r["seconds"], 3) for r in results],
                     "peak_mb": max(r["peak_mb"] for r in results)}
    print(f"[whole] {label}: " + ", ".join(f"{s} {row[s]['seconds']:.2f} s" for s in runs), file=sys.stderr, flush=True)
    return row


def markdown(rows: list[dict], repeats: int, bundle: Path) -> str:
    lines = [f"`facecrop run` ({bundle.parent.name}) against the InsightFace script, whole processes, median of "
             f"{repeats} alternating runs (speed-up: the baseline's seconds / these):", "",
             "| input | frames | baseline | baseline s | facecrop | facecrop s | speed-up | peak MB baseline / facecrop |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        base = row[row["baseline"]]
        for side in [s for s in row["sides"] if s != row["baseline"]]:
            ours = row[side]
            lines.append(f"| {row['input']} | {row['frames']} | {row['baseline']} | {base['seconds']:.2f} | {side} | "
                         f"{ours['seconds']:.2f} | {base['seconds'] / ours['seconds']:.2f}x | "
                         f"{base['peak_mb']:.0f} / {ours['peak_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None, help="default: the main job's aoti bundle, cached")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sets", nargs="+", choices=("medusa", "long", "dataset", "fixed", "crops", "tubes"),
                        default=["medusa", "long", "dataset", "fixed", "crops"],
                        help="fixed: where a run's fixed cost goes; crops: facecrop run with and without --crops png")
    parser.add_argument("--clips", type=int, default=CLIPS, help="clips in the dataset set")
    parser.add_argument("--media-dir", type=Path, default=None, help="Medusa's example media (default: "
                        "benchmarks.photos.media_dir())")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "whole")
    parser.add_argument("--model-dir", type=Path,
                        default=Path(os.environ.get("FACECROP_MODEL_DIR", REPO.parent / "shared" / "models")))
    args = parser.parse_args(argv)
    from benchmarks.photos import media_dir

    media = (args.media_dir or media_dir()).resolve()
    if not (media / "1.mp4").is_file():
        raise SystemExit(f"Medusa's example media are not in {media}: pass --media-dir or set FACECROP_MEDIA_DIR")
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
        inputs += [(f"medusa {v.name}", v) for v in sorted(media.glob("*.mp4"))]
    if "long" in args.sets:
        from benchmarks.frames import FPS, FRAME_SIZES, ensure_video

        inputs += [(f"{LONG_SECONDS} s {s}", ensure_video(out / "videos", LONG_SECONDS * FPS, FRAME_SIZES[s]))
                   for s in LONG_SIZES]
    rows = []
    for label, video in inputs:
        commands = {"InsightFace script": reference + [str(work / "ref"), str(video)],
                    "facecrop run": [facecrop, "run", str(bundle), str(video), "-o", str(work / "ours" / "out.npz")]}
        rows.append(compare(label, _frames(video), commands, args.repeats, [work / "ref", work / "ours"]))
    if "dataset" in args.sets:
        clips = make_clips(out / f"clips{args.clips}", media, count=args.clips)
        folder = clips[0].parent
        loop = ('for f in "$1"/*.mp4; do "$2" run "$3" "$f" -o "$4/$(basename "$f").npz" || exit 1; done')
        commands = {"InsightFace script": reference + [str(work / "ref")] + [str(c) for c in clips],
                    "facecrop run (folder)": [facecrop, "run", str(bundle), str(folder), "-o", str(work / "ours")],
                    "shell loop of facecrop run": ["bash", "-c", loop, "_", str(folder), facecrop, str(bundle),
                                                   str(work / "loop")]}
        rows.append(compare(f"{args.clips} clips of {CLIP_SECONDS} s", sum(_frames(c) for c in clips), commands,
                            args.repeats, [work / "ref", work / "ours", work / "loop"]))
    if "crops" in args.sets:
        for video in (media / name for name in ("1.mp4", "2.mp4", "3.mp4", "example_vid.mp4")):
            run = [facecrop, "run", str(bundle), str(video), "-o", str(work / "ours" / "out.npz")]
            commands = {"facecrop run": run, "facecrop run --crops png": run + ["--crops", "png", "--force"]}
            rows.append(compare(f"medusa {video.name}", _frames(video), commands, args.repeats, [work / "ours"]))
    if "tubes" in args.sets:
        clips = make_clips(out / f"clips{args.clips}", media, count=args.clips)
        for label, video in [(f"medusa {name}", media / name) for name in ("1.mp4", "2.mp4", "3.mp4", "example_vid.mp4")] + [
                (f"{args.clips} clips of {CLIP_SECONDS} s", clips[0].parent)]:
            target = work / "ours" / ("out.npz" if video.is_file() else "folder")
            run = [facecrop, "run", str(bundle), str(video), "-o", str(target)]
            files = [video] if video.is_file() else clips
            commands = {"InsightFace script": reference + [str(work / "ref")] + [str(f) for f in files],
                        "facecrop run": run, "facecrop run --crops mp4": run + ["--crops", "mp4"]}
            rows.append(compare(label, sum(_frames(f) for f in files), commands, args.repeats,
                                [work / "ref", work / "ours"]))
    report = markdown(rows, args.repeats, bundle)
    steps = []
    if "fixed" in args.sets:
        video = media / "0.mp4"
        work.mkdir(parents=True, exist_ok=True)
        steps = fixed_cost(bundle, video, work / "fixed.npz", args.repeats)
        report += (f"\nWhere the time of `facecrop run` on `{video.name}` ({_frames(video)} frames) goes, median of "
                   f"{args.repeats} (the run as `python -c`, so its exit includes the interpreter's teardown, which "
                   f"the `facecrop` executable skips):\n\n| step | seconds |\n|---|---|\n")
        report += "".join(f"| {name} | {seconds:.3f} |\n" for name, seconds in steps)
    shutil.rmtree(work, ignore_errors=True)
    (out / "whole_process.json").write_text(json.dumps({"bundle": str(bundle), "repeats": args.repeats, "rows": rows,
                                                        "fixed_cost_s": steps}, indent=1))
    (out / "whole_process.md").write_text(report)
    print(report)
    return rows


if __name__ == "__main__":
    main()
