"""Throughput and memory of facecrop against the reference pipelines, measured in one run.

Run: ``python benchmarks/run.py [--quick | --smoke] [--device cuda] [--out benchmarks/results]``.

Every pipeline runs on the same frames (a 720p test video built from real photos, 1-6 faces
per frame, cached under ``--out``) with the same weights on the same machine: the InsightFace
loop, a Medusa-style loop, facecrop eager and each facecrop bundle backend (loaded through
``facecrop.runtime.load_bundle``). Each measurement runs in its own process so its peak memory
is its own. Writes ``results.json``, ``results.md`` and ``results.png`` under ``--out`` and
prints the markdown report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `benchmarks` and `tests` importable
    sys.path.insert(0, str(REPO))

MODES = {
    # frames: frames measured per backend; batch: batch of the frames/s runs; sweep_frames: frames per sweep point.
    "smoke": dict(frames=2, video_frames=4, batch=2, batch_sizes=(1, 2), repeats=1, sweep_frames=1,
                  backends=("insightface", "eager"), cases=("det_500m",), sizes=("480p",),
                  job_timeout=300),
    "quick": dict(frames=24, video_frames=256, batch=8, batch_sizes=(1, 8), repeats=3, sweep_frames=12,
                  backends=("insightface", "medusa", "eager", "export", "aoti"), cases=("det_500m",),
                  sizes=("480p", "720p", "1080p"), job_timeout=400),
    "full": dict(frames=256, video_frames=256, batch=32, batch_sizes=(1, 8, 32, 128), repeats=3, sweep_frames=32,
                 backends=("insightface", "medusa", "eager", "compile", "torchscript", "export", "aoti"),
                 cases=("det_500m", "det_2.5g"), sizes=("480p", "720p", "1080p"), job_timeout=900),
}
FACE_COUNTS = (1, 6, 8)  # faces a frame in the sweep
DET_SIZE, CROP_SIZE, MAX_FACES = (224, 224), 224, 32  # facecrop export's default K


def default_model_dir() -> Path:
    return Path(os.environ.get("FACECROP_MODEL_DIR", REPO.parent / "shared" / "models"))


def make_cases(model_dir: Path, out: Path, device: str, names) -> tuple[dict, list[str]]:
    """``{label: Case}`` for the named detectors; det_2.5g adds 106 landmarks (real or stand-in)."""
    from benchmarks.backends import Case
    from benchmarks.frames import FRAME_SIZES

    cases, notes = {}, []
    for name in names:
        detector = model_dir / f"{name}.onnx"
        if not detector.is_file():
            raise SystemExit(f"detector {detector} not found: pass --model-dir or set FACECROP_MODEL_DIR")
        landmarks = None
        if name == "det_2.5g":
            landmarks = model_dir / "2d106det.onnx"
            if not landmarks.is_file():
                from facecrop.testing import build_landmark_onnx

                (out / "models").mkdir(exist_ok=True)
                landmarks = build_landmark_onnx(out / "models" / "2d106det_standin.onnx", "2d106det")
                notes.append("2d106det weights are absent here: the landmark rows use a stand-in network with the "
                             "official input/output contract (facecrop.testing), so their landmark cost is not the real net's")
        label = f"{name}@224 + " + ("2d106det + " if landmarks else "") + f"align{CROP_SIZE}"
        cases[label] = Case(str(detector), str(landmarks) if landmarks else None, DET_SIZE, CROP_SIZE,
                            MAX_FACES, device)
    return cases, notes


def run_job(spec: dict, workdir: Path, timeout: float) -> dict:
    """Run one measurement in a fresh process; returns its result or ``{"error": ...}``."""
    handle, spec_path = tempfile.mkstemp(suffix=".json", dir=workdir)
    os.close(handle)
    result_path = Path(spec_path).with_suffix(".out.json")
    Path(spec_path).write_text(json.dumps(spec))
    label = f"{spec['backend']} {spec['case']['detector'].rsplit('/', 1)[-1]}"
    print(f"[bench] {label} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--job", spec_path, "--job-out", str(result_path)],
                              capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"backend": spec["backend"], "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0 or not result_path.is_file():
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "no output")
        print(proc.stderr[-3000:], file=sys.stderr)
        return {"backend": spec["backend"], "error": reason.strip()[:160]}
    print(f"[bench] {label} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    return json.loads(result_path.read_text())


def main(argv=None) -> dict:
    from dataclasses import asdict

    import torch

    from benchmarks.backends import ALL_BACKENDS, REFERENCE_LOOPS
    from benchmarks.frames import FRAME_SIZES, ensure_video
    from benchmarks.report import best_bundle, machine_info, markdown, plot

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_true", help="fewer frames and batch sizes; bundles cached by configuration and torch version "
                       "(first run about 8 min on 2 cores, later runs under 5)")
    modes.add_argument("--smoke", action="store_true", help="a few frames, reference loops and eager only (for the tests)")
    parser.add_argument("--device", default="cpu", help="'cpu' or 'cuda[:N]'")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--model-dir", type=Path, default=default_model_dir())
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--backends", nargs="+", choices=ALL_BACKENDS, help="override the mode's backend list")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--job-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        from benchmarks.measure import run_job as measure

        Path(args.job_out).write_text(json.dumps(measure(json.loads(Path(args.job).read_text()))))
        return {}
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: this machine has no usable CUDA device")

    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    mode = dict(MODES[mode_name])
    backends = list(args.backends or mode["backends"])
    if args.device.startswith("cuda") and not args.backends:
        backends += ["tensorrt"]
    started = time.perf_counter()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cases, notes = make_cases(args.model_dir.resolve(), out, args.device, mode["cases"])
    video = ensure_video(out / "videos", mode["video_frames"], FRAME_SIZES["720p"])
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=out))  # bundles and job files, removed at the end
    source = {"video": str(video), "count": mode["frames"]}
    base = {"threads": args.threads, "workdir": str(workdir), "repeats": mode["repeats"], "batch": mode["batch"],
            # Bundles are kept between runs: compiling aoti alone takes about 4 minutes on 2 cores.
            "bundle_cache": str(out / "bundle-cache")}

    rows = []
    for label, case in cases.items():
        for backend in backends:
            spec = dict(base, backend=backend, case=asdict(case), frames=source, decode_included=True,
                        batch_sizes=list(mode["batch_sizes"]))
            rows.append({"case": label, "kind": _kind(backend), **run_job(spec, workdir, mode["job_timeout"])})
            (out / "rows.partial.json").write_text(json.dumps(rows, indent=1))  # kept if the run is cut short
        reference = next((r for r in rows if r["case"] == label and r["backend"] == "insightface" and "fps" in r), None)
        for r in rows:
            if r["case"] == label and reference and r.get("fps"):
                r["ratio"] = r["fps"] / reference["fps"]

    target_case = next(iter(cases))
    sweeps = {}
    target_rows = [r for r in rows if r["case"] == target_case and r.get("fps")]
    best = best_bundle(target_rows) or max((r for r in target_rows if r["backend"] not in REFERENCE_LOOPS),
                                           key=lambda r: r["fps"], default=None)
    case = cases[target_case]
    faces = {f"{k} faces": {"n_faces": k, "count": mode["sweep_frames"], "size": list(FRAME_SIZES["720p"])}
             for k in FACE_COUNTS}
    sizes = {s: {"n_faces": None, "count": mode["sweep_frames"], "size": list(FRAME_SIZES[s])} for s in mode["sizes"]}
    sweep_backends = ["insightface"] + ([best["backend"]] if best else [])
    sweeps["faces"] = {"case": target_case, "labels": list(faces), "fps": {}}
    sweeps["sizes"] = {"case": target_case, "labels": list(sizes), "fps": {}}
    for backend in sweep_backends:
        jobs = [(case, {**faces, **sizes})]  # one process for every point: one module serves every size
        for job_case, frame_sets in jobs:
            spec = dict(base, backend=backend, case=asdict(job_case), frame_sets=frame_sets)
            result = run_job(spec, workdir, mode["job_timeout"])
            if "error" in result:
                notes.append(f"sweep point(s) {', '.join(frame_sets)} of {backend} failed: {result['error']}")
            for label, fps in result.get("sets", {}).items():
                sweeps["faces" if label in faces else "sizes"]["fps"].setdefault(backend, {})[label] = fps

    notes += _notes(mode_name, backends, args.device)
    results = {"mode": mode_name, "machine": machine_info(args.device, args.threads), "repeats": mode["repeats"],
               "video": {"path": str(video), "frames_total": mode["video_frames"], "frames_used": mode["frames"],
                         "size": list(FRAME_SIZES["720p"])},
               "target_case": target_case, "cases": {k: asdict(v) for k, v in cases.items()},
               "rows": rows, "sweeps": sweeps, "notes": notes, "elapsed_s": time.perf_counter() - started}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    report = markdown(results)
    (out / "results.md").write_text(report)
    plot(results, out / "results.png")
    _remove(workdir)
    (out / "rows.partial.json").unlink(missing_ok=True)
    print(report)
    print(f"wrote {out / 'results.json'}, results.md, results.png ({results['elapsed_s']:.0f} s)")
    return results


def _kind(backend: str) -> str:
    from benchmarks.backends import BUNDLE_BACKENDS, REFERENCE_LOOPS

    return "reference" if backend in REFERENCE_LOOPS else "bundle" if backend in BUNDLE_BACKENDS else "module"


def _notes(mode: str, backends: list[str], device: str) -> list[str]:
    notes = [
        "bundle rows (torchscript, export, aoti, tensorrt) are written with facecrop.bundle.write_bundle and run "
        "through facecrop.runtime.load_bundle, as users run them; they are cached under --out/bundle-cache, keyed by "
        "configuration, torch version and facecrop's code: warm-up = build (when not cached) + verify + load + first call",
        "decode included = PyAV decode + RGB conversion + run, sequentially in one thread for every pipeline "
        "(facecrop.runtime.process_video decodes in a separate process beside the module's calls, which this does "
        "not credit; benchmarks/whole_process.py measures runs as users make them)",
        "the reference loops run one frame at a time (the official ONNX files have batch 1 baked in): "
        "only their batch-1 ms/frame is meaningful; peak RSS includes the frames held in memory",
        "load = the machine's 1-minute load average before/after each measurement: on a shared machine a load "
        "above the thread count means other processes took CPU time from that row",
        "faces/frame = faces each pipeline found (the video has 3.5 on average), a check that all see the same faces",
    ]
    if mode != "full":
        notes.append(f"{mode} mode: fewer frames, batch sizes and repeats; torch.compile and torchscript skipped; "
                     "run without --quick for them")
    if "aoti" in backends:
        notes.append("aoti is the fast backend (`facecrop export`'s default); export and torchscript are portable, "
                     "not fast: their graphs run uncompiled, op by op (each crop pixel's taps and weights become "
                     "whole tensors), which is why they slow down as faces per frame grow")
    if device == "cpu":
        notes.append("TensorRT runs on CUDA only and is not measured on the CPU")
    return notes


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
