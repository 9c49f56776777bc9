"""The runtime as one loop, measured: ``facecrop run`` before and after it, and ``stream()`` on a file.

    python benchmarks/loop_ab.py --bundle PATH [--before REV] [--repeats 5] [--videos V ...]

- ``facecrop run BUNDLE VIDEO -o OUT.npz`` as a whole process, this tree against the tree at git
  revision ``--before`` (its ``export/`` and ``runtime/`` unpacked into a temporary folder put first on
  ``sys.path``), alternating, the median of ``--repeats`` runs of each video.
- In one process that loaded the bundle once, as the CLI tunes its own: ``process_video`` on a file
  against iterating ``stream(bundle, file, batch_size=8, policy='latest')`` on it, alternating, the
  median of ``--repeats``; and the frames each gave (a file is never dropped from).

Prints a markdown table (the ratios are the figures to compare: the machine's speed moves by the hour).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(REPO))

BEFORE = "71e3b27"  # main before the one loop (two loops: video._run_frames and Stream)
LAUNCH = ("import sys; sys.path[:0] = [p for p in [{pkg!r}] if p]; sys.argv[0] = 'facecrop'; "
          "from facecrop.cli import console; console()")


def unpack(revision: str, into: Path) -> Path:
    """The package at ``revision`` as an importable folder: ``into/facecrop`` (export/) with ``runtime/`` inside."""
    src = into / "src"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "export", "runtime"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    package = into / "pkg" / "facecrop"
    shutil.copytree(src / "export", package)
    shutil.copytree(src / "runtime", package / "runtime")
    return into / "pkg"


def run_seconds(pkg: str, bundle: Path, video: Path, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", LAUNCH.format(pkg=pkg), "run", str(bundle), str(video), "-o", str(out)],
                   check=True, capture_output=True)
    return time.perf_counter() - start


def in_process(bundle_path: str, video: str, repeats: int, out: str) -> dict:
    """``process_video`` against ``stream()`` on ``video`` in this process, alternating: seconds and frames."""
    from facecrop.runtime import load_bundle, process_video, stream
    from facecrop.runtime.tuning import tune_process

    tune_process()
    bundle = load_bundle(bundle_path)
    times = {"process_video": [], "stream": []}
    frames = {}
    for _ in range(repeats):
        start = time.perf_counter()
        process_video(bundle, video, out, progress=False)
        times["process_video"].append(time.perf_counter() - start)
        start = time.perf_counter()
        with stream(bundle, video, batch_size=8, policy="latest") as results:
            frames["stream"] = sum(1 for _ in results)
        times["stream"].append(time.perf_counter() - start)
    import numpy as np

    with np.load(out) as data:
        frames["process_video"] = len(data["frame_index"])
    return {"seconds": {k: statistics.median(v) for k, v in times.items()}, "frames": frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--before", default=BEFORE, help="git revision to compare `facecrop run` against")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--videos", type=Path, nargs="+", default=None,
                        help="default: Medusa's 2.mp4 and example_vid.mp4 (../shared/media/medusa)")
    parser.add_argument("--in-process", nargs=3, metavar=("BUNDLE", "VIDEO", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process:
        print(json.dumps(in_process(*args.in_process[:2], args.repeats, args.in_process[2])))
        return
    from benchmarks.photos import media_dir

    videos = args.videos or [media_dir() / "2.mp4", media_dir() / "example_vid.mp4"]
    rows = ["| video | frames | `facecrop run` before | after | after / before | `process_video` | `stream()` on the "
            "file | stream / process_video |", "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        before = str(unpack(args.before, tmp))
        for video in videos:
            runs = {"before": [], "after": []}
            for _ in range(args.repeats):
                runs["before"].append(run_seconds(before, args.bundle, video, tmp / "before.npz"))
                runs["after"].append(run_seconds("", args.bundle, video, tmp / "after.npz"))
            old, new = (statistics.median(runs[k]) for k in ("before", "after"))
            child = subprocess.run([sys.executable, __file__, "--bundle", str(args.bundle), "--repeats",
                                    str(args.repeats), "--in-process", str(args.bundle), str(video),
                                    str(tmp / "inproc.npz")], check=True, capture_output=True, text=True)
            inproc = json.loads(child.stdout.strip().splitlines()[-1])
            pv, st = inproc["seconds"]["process_video"], inproc["seconds"]["stream"]
            frames = inproc["frames"]
            assert frames["stream"] == frames["process_video"], frames  # every frame, through either door
            rows.append(f"| {video.name} | {frames['stream']} | {old:.2f} s | {new:.2f} s | {new / old:.2f} | "
                        f"{pv:.2f} s | {st:.2f} s | {st / pv:.2f} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
