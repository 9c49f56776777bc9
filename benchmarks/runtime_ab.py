"""The runtime's CPU choices side by side in one process: what two batches at once and reused decoders buy.

    python benchmarks/runtime_ab.py [--bundle PATH] [--repeats 3] [--videos 1.mp4 ...] [--clips 20]

- ``process_video`` on each of Medusa's videos with faces, one module call at a time (``bundle.parallel
  = 1``) against two at once (the default on a CPU with an ``aoti`` bundle, see ``runtime/calls.py``);
- a folder of ``--clips`` short real clips (``benchmarks/whole_process.py``'s) through ``run_local``, a new
  decoding process per video against reused ones (``runtime/decoder.py``).

The two sides alternate, ``--repeats`` times each; medians. The bundle is the main job's (det_500m at
224, aligned crop 112, ``aoti``), cached as ``whole_process.py`` caches it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(REPO))


def side_by_side(sides: dict[str, object], repeats: int) -> dict[str, float]:
    """Median seconds of each side's call (no argument), alternating their order every repeat."""
    seconds = {name: [] for name in sides}
    for r in range(repeats):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            start = time.perf_counter()
            sides[name]()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def main(argv=None) -> list[str]:
    from benchmarks.photos import media_dir
    from benchmarks.whole_process import make_clips
    from facecrop.dataset import run_local
    from facecrop.runtime import decoder, load_bundle, process_video

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--videos", nargs="+", default=["1.mp4", "2.mp4", "3.mp4", "example_vid.mp4"],
                        help="Medusa's videos to run")
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "whole")
    parser.add_argument("--model-dir", type=Path,
                        default=Path(os.environ.get("FACECROP_MODEL_DIR", REPO.parent / "shared" / "models")))
    args = parser.parse_args(argv)
    media, out = media_dir().resolve(), args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    bundle_path = args.bundle
    if bundle_path is None:
        from benchmarks.backends import Case, cached_bundle

        case = Case(str(args.model_dir.resolve() / "det_500m.onnx"), None, (224, 224), 112)
        bundle_path = cached_bundle("aoti", case, out / "bundle-cache")[0]
    bundle = load_bundle(bundle_path)
    if bundle.parallel < 2:  # two threads then take turns: the figures show what that costs
        print(f"note: {bundle_path} runs one call at a time here (its backend, or a 1-core CPU)", flush=True)
    lines = []
    with tempfile.TemporaryDirectory() as work:
        result = Path(work) / "out.npz"

        def run(video: Path, parallel: int):
            def call():
                bundle.parallel = parallel
                process_video(bundle, video, result, progress=False)
            return call

        for name in args.videos:
            video = media / name
            medians = side_by_side({"one": run(video, 1), "two": run(video, 2)}, args.repeats)
            lines.append(f"| {name} | one call at a time {medians['one']:.3f} s | two at once {medians['two']:.3f} s "
                         f"| {medians['one'] / medians['two']:.2f}x |")
            print(lines[-1], flush=True)
        folder = make_clips(out / f"clips{args.clips}", media, count=args.clips)[0].parent

        def dataset(idle: int):
            def call():
                decoder._IDLE_MAX = idle
                shutil.rmtree(Path(work) / "dataset", ignore_errors=True)
                run_local(bundle_path, [folder], Path(work) / "dataset", progress=False)
            return call

        medians = side_by_side({"new": dataset(0), "reused": dataset(1)}, args.repeats)
        lines.append(f"| {args.clips} clips, `run_local` | a decoding process per video {medians['new']:.3f} s | reused "
                     f"{medians['reused']:.3f} s | {medians['new'] / medians['reused']:.2f}x |")
        print(lines[-1], flush=True)
    (out / "runtime_ab.md").write_text("\n".join(lines) + "\n")
    return lines


if __name__ == "__main__":
    main()
