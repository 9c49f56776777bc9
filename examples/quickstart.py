"""The main job end to end: export one bundle from det_500m (aligned crop), run it on a video of any size.

Usage: ``python examples/quickstart.py [VIDEO] [--out DIR]``. Without VIDEO it
makes facecrop's example video (real astronaut photo, known motion) offline.
Writes ``DIR/results.npz`` (per-frame faces, their ids and tubes), ``DIR/results.crops/`` (each
person's face tubes: aligned, smoothed crops as PNG, one folder per tube) and ``DIR/overlay.mp4``.
Needs ``det_500m.onnx``: ``facecrop models fetch buffalo_sc`` downloads it, or
set ``FACECROP_MODEL_DIR`` to a folder that holds it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from facecrop import cli, zoo
    from facecrop.data import get_example_video

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", nargs="?", type=Path, help="any video (default: the example video)")
    parser.add_argument("--out", type=Path, default=Path("out"), help="folder for bundle and results")
    args = parser.parse_args(argv)

    try:
        zoo.resolve_model("det_500m")
    except (FileNotFoundError, ValueError) as err:
        print(f"quickstart: {err}", file=sys.stderr)
        return 1
    video = args.video or get_example_video(n_frames=96)
    # One bundle serves every video: it letterboxes each frame at its own size, as InsightFace does.
    # Each run replaces the last one's results and crops (--force: they may come from another video).
    bundles = args.out / "bundles"
    bundle = bundles / "quickstart" / "1.0.0"
    if not bundle.is_dir():
        # No --backend: the fast default (aoti, compiled once, about 4 minutes on 2 CPU cores).
        status = cli.main(["export", "--detector", "det_500m", "--crop", "align", "--crop-size", "112",
                           "--name", "quickstart", "--out", str(bundles)])
        if status:
            return status
    status = cli.main(["run", str(bundle), str(video), "-o", str(args.out / "results.npz"), "--crops", "png", "--force",
                       "--batch-size", "8", "--visualize", str(args.out / "overlay.mp4")])
    if status == 0:
        print(f"results: {args.out / 'results.npz'}\ncrops: {args.out / 'results.crops'}\n"
              f"overlay: {args.out / 'overlay.mp4'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
