"""``facecrop run BUNDLE VIDEO -o OUT``: load and verify a bundle, process the video, optionally overlay."""

from __future__ import annotations

import argparse
import sys
import time

from .bundle import load_bundle
from .overlay import write_overlay
from .video import process_video


def run_from_args(args: argparse.Namespace) -> None:
    """Run the parsed ``facecrop run`` arguments; errors are raised as ValueError subclasses."""
    start = time.perf_counter()
    bundle = load_bundle(args.bundle, device=args.device)
    print(f"loaded {bundle!r} in {time.perf_counter() - start:.1f} s (golden self-check passed)", file=sys.stderr)
    start = time.perf_counter()
    output = process_video(bundle, args.video, args.output, batch_size=args.batch_size,
                           save_crops=args.save_crops, resume=args.resume)
    print(f"wrote {output} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if args.visualize is not None:
        print(f"wrote overlay {write_overlay(args.video, output, args.visualize)}", file=sys.stderr)
