"""Where a facecrop backend spends its time: torch.profiler over one batch of benchmark frames.

Run: ``python benchmarks/profile_backend.py [--backend torchscript] [--batch 8] [--detector det_500m]``.
Prints the top operators by self CPU time (CUDA time on ``--device cuda``) and the
share of the detector net, the resize and the crop, as the module names them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv=None) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.backends import ALL_BACKENDS, REFERENCE_LOOPS, Case, make_runner
    from benchmarks.frames import FRAME_SIZES, synthetic_frames
    from benchmarks.run import CROP_SIZE, DET_SIZE, MAX_FACES, default_model_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="torchscript", choices=[b for b in ALL_BACKENDS if b not in REFERENCE_LOOPS])
    parser.add_argument("--detector", default="det_500m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-dir", type=Path, default=default_model_dir())
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args(argv)

    case = Case(str(args.model_dir / f"{args.detector}.onnx"), None, DET_SIZE, CROP_SIZE,
                MAX_FACES, args.device)
    workdir = Path(tempfile.mkdtemp(prefix="profile-"))
    try:
        runner = make_runner(args.backend, case, workdir)
        frames = runner.prepare(synthetic_frames(args.batch))
        for _ in range(2):  # warm-up: first calls allocate, select kernels and (for compile) compile
            runner(frames)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
        with profile(activities=activities) as prof:
            runner(frames)
            runner.sync()
        runner.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    key = "self_cuda_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
    print(f"{args.backend}, {args.detector}@224 + align{CROP_SIZE}, batch {args.batch} of 720p frames, "
          f"{torch.get_num_threads()} threads")
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows))


if __name__ == "__main__":
    main()
