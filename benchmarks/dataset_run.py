"""A folder of videos: one ``facecrop run BUNDLE FOLDER -o OUT`` against a shell loop of one-video runs.

Both sides run the same bundle on the same real-photo videos (``benchmarks/frames.py``, several
sizes), side by side in one run, ``--repeats`` times alternating; the best of each is reported.

- **shell loop**: ``for v in videos: facecrop run BUNDLE v -o v.npz``, a fresh process per
  video, as users write it today (each pays Python, torch, bundle load and self-check).
- **folder run**: ``facecrop run BUNDLE FOLDER -o OUT``: one process, one bundle load, a
  manifest, every video decoded in its own child process.

    python benchmarks/dataset_run.py --bundle bundles/<name>/1.0.0 [--videos 8 --frames 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = [(640, 360), (854, 480), (480, 480), (1280, 720)]


def make_videos(folder: Path, count: int, frames: int) -> list[Path]:
    """``count`` videos of ``frames`` frames, cycling through :data:`SIZES`, cached in ``folder``."""
    from benchmarks.frames import ensure_video

    videos = []
    for i in range(count):
        cache = ensure_video(folder / "cache", frames, SIZES[i % len(SIZES)])
        video = folder / "videos" / f"v{i:03d}_{cache.name}"
        if not video.exists():
            video.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cache, video)  # distinct files: a folder run sees every one as its own video
        videos.append(video)
    return videos


def facecrop(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "facecrop.cli", "run", *args], check=True, capture_output=True, text=True)


def shell_loop(bundle: Path, videos: list[Path], out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    for video in videos:
        facecrop(str(bundle), str(video), "-o", str(out / f"{video.name}.npz"))
    return time.perf_counter() - start


def folder_run(bundle: Path, folder: Path, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    facecrop(str(bundle), str(folder), "-o", str(out))
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=100, help="frames per video")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "dataset_run")
    args = parser.parse_args(argv)

    videos = make_videos(args.out, args.videos, args.frames)
    total_frames = args.videos * args.frames
    best = {"shell loop": float("inf"), "folder run": float("inf")}
    for _ in range(args.repeats):  # alternating, so drifts in machine load hit both alike
        best["shell loop"] = min(best["shell loop"], shell_loop(args.bundle, videos, args.out / "loop"))
        best["folder run"] = min(best["folder run"], folder_run(args.bundle, videos[0].parent, args.out / "folder"))
    rows = [{"pipeline": name, "seconds": s, "videos_per_min": 60 * args.videos / s, "fps": total_frames / s,
             "ratio": best["shell loop"] / s} for name, s in best.items()]
    lines = [f"### {args.videos} videos x {args.frames} frames ({', '.join(f'{w}x{h}' for w, h in SIZES)}), "
             f"CPU ({os.cpu_count()} cores), best of {args.repeats}", "",
             "| run | seconds | videos/min | frames/s | x shell loop |", "|---|---|---|---|---|"]
    lines += [f"| {r['pipeline']} | {r['seconds']:.1f} | {r['videos_per_min']:.1f} | {r['fps']:.1f} | {r['ratio']:.2f}x |"
              for r in rows]
    print("\n".join(lines))
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    (args.out / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
