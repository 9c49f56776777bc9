"""``facecrop run`` against the InsightFace loop on the CPU, file in to results file out, side by side.

Each measurement is a fresh subprocess (its own peak RSS), alternating facecrop and the
reference on the same video, ``--repeats`` times; the best of the repeats is reported, and
ratios compare rows of the same video measured in the same run.

- **InsightFace loop**: PyAV decode (``to_ndarray('bgr24')``), ``SCRFD.detect`` at the same
  det size and thresholds, ``face_align.norm_crop`` per face; (with ``--landmarks``)
  ``Landmark.get`` per face first. One frame at a time, as the official ONNX files require.
- **facecrop**: ``facecrop.runtime.load_bundle`` + ``process_video`` (decode thread, batches,
  results ``.npz``), i.e. ``facecrop run`` without the CLI's printing; as the CLI does, it starts the
  decoding process before it loads the bundle. Bundle load time
  (SHA-256 + golden self-check) is reported apart.

Videos are real faces (InsightFace's ``t1.jpg``, scikit-image's astronaut) on a real-photo
background, 1-6 faces a frame, at 480p, 720p and 1080p (``benchmarks/frames.py``).

    python benchmarks/cpu_video.py --backends export aoti [--landmarks 2d106det --detector det_2.5g]

A per-stage profile (decode, colour convert, letterbox resize, detector net, decode + NMS,
crops, landmarks, write) follows the table: each stage of the same module timed on its
own with ``torch.compile``, on the 720p video's frames.
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
sys.path.insert(0, str(REPO))

SIZES = ("480p", "720p", "1080p")


def _child_insightface(spec: dict) -> dict:
    import onnxruntime as ort
    from insightface.model_zoo.landmark import Landmark

    from benchmarks.insightface_run import load_detector, run_video

    start = time.perf_counter()
    det = load_detector(spec["detector"], spec["det_size"])
    lmk = None
    if spec.get("landmarks"):
        lmk = Landmark(spec["landmarks"], session=ort.InferenceSession(spec["landmarks"],
                                                                       providers=["CPUExecutionProvider"]))
    setup = time.perf_counter() - start
    result = run_video(det, spec["video"], spec["output"], spec["det_size"], spec["crop_size"], landmarks=lmk)
    return {**result, "setup_s": setup}


def _child_facecrop(spec: dict) -> dict:
    import numpy as np

    from facecrop.runtime import load_bundle, process_video
    from facecrop.runtime.bundle import read_manifest
    from facecrop.runtime.decoder import Decoder
    from facecrop.runtime.tuning import tune_process
    from facecrop.runtime.video import decoder_args

    start = time.perf_counter()
    tune_process()  # as `facecrop run` does
    # As `facecrop run` does: the video decodes while the bundle loads (process_video takes the decoder over).
    side = int(read_manifest(Path(spec["bundle"]))["input"]["max_side"])
    early = Decoder(*decoder_args(spec["video"], spec["batch_size"], 0, side))
    bundle = load_bundle(spec["bundle"])
    setup = time.perf_counter() - start
    from benchmarks.measure import ChildMemory

    start = time.perf_counter()
    with ChildMemory() as decoder:
        out = process_video(bundle, spec["video"], spec["output"], batch_size=spec["batch_size"], progress=False,
                            decoder=early)
    seconds = time.perf_counter() - start
    with np.load(out, allow_pickle=False) as r:
        return {"seconds": seconds, "setup_s": setup, "frames": len(r["frame_index"]), "faces": int(r["valid"].sum()),
                "children_rss_mb": decoder.peak_mb}


def child(spec: dict) -> dict:
    from benchmarks.measure import peak_rss_mb

    result = (_child_insightface if spec["kind"] == "insightface" else _child_facecrop)(spec)
    result["peak_rss_mb"] = peak_rss_mb() + result.get("children_rss_mb", 0.0)  # the decoding process too
    return result


def measure(spec: dict, timeout: float) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def export_bundle(backend: str, args, out: Path) -> Path:
    from facecrop.bundle import write_bundle
    from facecrop.pipeline import build_pipeline
    from facecrop.pipeline_config import PipelineConfig
    from facecrop.zoo import resolve_model

    config = PipelineConfig(detector=str(resolve_model(args.detector, args.model_dir)),
                            landmarks=str(resolve_model(args.landmarks, args.model_dir)) if args.landmarks else None,
                            crop="align", det_size=(args.det_size, args.det_size), crop_size=args.crop_size)
    sources = {"detector": Path(config.detector)}
    if config.landmarks:
        sources["landmarks"] = Path(config.landmarks)
    return write_bundle(build_pipeline(config), config, backend=backend, out_root=out / "bundles",
                        name=f"bench-{backend}-{int(time.time())}", source_models=sources)


def profile(video: Path, args, batch: int = 8) -> list[tuple[str, float]]:
    """ms/frame of each stage of the fused module on ``batch`` frames of ``video``, each compiled on its own."""
    import av
    import numpy as np
    import torch

    from facecrop.bundle import cpu_kernel_configs
    from facecrop.detect.core import decode_scrfd, preprocess, select_faces
    from facecrop.pipeline import build_pipeline, cut_crops
    from av.video.reformatter import VideoReformatter

    from facecrop.runtime.decode_worker import _copy_rgb
    from facecrop.pipeline_config import PipelineConfig
    from facecrop.detect.letterbox import letterbox
    from facecrop.zoo import resolve_model

    rows = []
    with av.open(str(video)) as container:
        start = time.perf_counter()
        raw = [f for _, f in zip(range(batch), container.decode(video=0))]
        rows.append(("decode (PyAV, H.264)", (time.perf_counter() - start) / batch * 1e3))
    buffer = np.zeros((batch, raw[0].height, raw[0].width, 3), np.uint8)  # reused by the runtime: touched
    slot, to_rgb = memoryview(buffer).cast("B"), VideoReformatter()
    for i, frame in enumerate(raw):  # set up swscale and touch the buffer, as a video does once
        _copy_rgb(frame, slot, i * buffer[0].size, to_rgb)
    start = time.perf_counter()
    for i, frame in enumerate(raw):  # as facecrop.runtime.decode_worker does
        _copy_rgb(frame, slot, i * buffer[0].size, to_rgb)
    frames = torch.from_numpy(buffer).permute(0, 3, 1, 2)  # channels-last, as the runtime hands them over
    rows.append(("colour convert (swscale to RGB) into the channels-last batch",
                 (time.perf_counter() - start) / batch * 1e3))
    config = PipelineConfig(detector=str(resolve_model(args.detector, args.model_dir)),
                            landmarks=str(resolve_model(args.landmarks, args.model_dir)) if args.landmarks else None,
                            crop="align", det_size=(args.det_size, args.det_size), crop_size=args.crop_size)
    pipe = build_pipeline(config)
    head = pipe.detector

    def timed(name, fn, *inputs):
        # Compiled as an aoti bundle built on this machine is (scalar kernels on AVX2-only CPUs).
        compiled = torch.compile(fn, options=cpu_kernel_configs())
        with torch.inference_mode():
            compiled(*inputs)
            start = time.perf_counter()
            for _ in range(3):
                out = compiled(*inputs)
        rows.append((name, (time.perf_counter() - start) / 3 / batch * 1e3))
        return out

    torch._dynamo.config.capture_dynamic_output_shape_ops = True  # the landmark net runs on the faces that exist
    with torch.inference_mode():
        x, _ = preprocess(frames, head.det_size, head.config)
        raw_out = head.net(x)
        faces = head(frames)
    timed("letterbox resize (in the graph)", lambda f: letterbox(f, head.det_size), frames)
    timed("detector net", head.net, x)
    timed("anchor decode + threshold + NMS", lambda *net_out: select_faces(
        *decode_scrfd(net_out, head.anchors(), head.config), head.det_threshold, head.nms_threshold,
        head.max_faces), *raw_out)
    if pipe.landmarks is not None:
        timed("landmarks (crops + net, valid faces)", pipe.landmarks, frames, faces["bbox"], faces["valid"])
    with torch.inference_mode():
        out = pipe.forward_dict(frames)
    # Compiled, as in a bundle: about as many crops as the batch has faces.
    timed(f"aligned crops ({int(out['valid'].sum())} faces in {batch} frames)",
          lambda f, m, v: cut_crops(f, m, v, pipe.crop_size), frames,
          out["crop_mat"], out["valid"])
    start = time.perf_counter()
    arrays = {k: v.numpy() for k, v in out.items() if k != "imgs_crop"}
    np.savez(args.out / "profile-write.npz", **arrays)
    rows.append(("write results (.npz)", (time.perf_counter() - start) / batch * 1e3))
    return rows


def _size_wh(size: str) -> tuple[int, int]:
    width, height = size.lower().split("x")
    return int(width), int(height)


def _size(text: str) -> str:
    if text not in SIZES:
        try:
            _size_wh(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"size must be one of {', '.join(SIZES)} or WIDTHxHEIGHT, got {text!r}")
    return text


def _faces(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(n) for n in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"faces must be LO-HI, e.g. 0-3, got {text!r}") from None
    if not 0 <= lo <= hi <= 12:
        raise argparse.ArgumentTypeError(f"faces must satisfy 0 <= LO <= HI <= 12, got {text!r}")
    return lo, hi


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["export", "aoti"])
    parser.add_argument("--detector", default="det_500m")
    parser.add_argument("--landmarks", default=None)
    parser.add_argument("--det-size", type=int, default=224)
    parser.add_argument("--crop-size", type=int, default=112)
    parser.add_argument("--frames", type=int, default=150, help="frames per video")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), type=_size,
                        help="480p, 720p, 1080p or WIDTHxHEIGHT (e.g. 642x378)")
    parser.add_argument("--faces", default="1-6", type=_faces, help="faces a frame holds, LO-HI (e.g. 0-3)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8, help="as `facecrop run`")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cpu_video")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--bundle", action="append", default=[], metavar="BACKEND=PATH",
                        help="use this already exported bundle instead of exporting one")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    from benchmarks.frames import FRAME_SIZES, ensure_video
    from facecrop.zoo import resolve_model

    args.out.mkdir(parents=True, exist_ok=True)
    detector = str(resolve_model(args.detector, args.model_dir))
    landmarks = str(resolve_model(args.landmarks, args.model_dir)) if args.landmarks else None
    bundles = dict(item.split("=", 1) for item in args.bundle)
    for backend in [b for b in args.backends if b not in bundles]:
        start = time.perf_counter()
        bundles[backend] = export_bundle(backend, args, args.out)
        print(f"exported {backend} in {time.perf_counter() - start:.0f} s: {bundles[backend]}", file=sys.stderr)
    rows = []
    for size in args.sizes:
        video = ensure_video(args.out / "videos", args.frames, FRAME_SIZES.get(size) or _size_wh(size), args.faces)
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for kind in ["insightface"] + list(args.backends):  # alternating: load drifts hit every row alike
                spec = {"kind": kind, "video": str(video), "output": str(args.out / f"r-{kind}-{size}.npz"),
                        "detector": detector, "landmarks": landmarks, "det_size": [args.det_size] * 2,
                        "crop_size": args.crop_size, "batch_size": args.batch_size,
                        "bundle": str(bundles.get(kind, ""))}
                result = measure(spec, timeout=1800)
                if "error" in result:
                    best[kind] = result
                    continue
                result["fps"] = result["frames"] / result["seconds"]
                if kind not in best or "error" in best[kind] or result["fps"] > best[kind]["fps"]:
                    best[kind] = result
        ref = best["insightface"]
        for kind, r in best.items():
            rows.append({"size": size, "pipeline": kind, **r,
                         "ratio": r["fps"] / ref["fps"] if "fps" in r and "fps" in ref else None,
                         "rss_ratio": r["peak_rss_mb"] / ref["peak_rss_mb"] if "peak_rss_mb" in r and "peak_rss_mb" in ref else None})
    case = f"{args.detector}@{args.det_size}" + (f" + {args.landmarks}" if args.landmarks else "") + f" + align{args.crop_size}"
    faces = f"{args.faces[0]}-{args.faces[1]} faces a frame"
    lines = [f"### {case}, CPU ({os.cpu_count()} cores), {args.frames} frames a video, {faces}, best of {args.repeats}", "",
             "| video | pipeline | frames/s | x InsightFace | peak RSS MB | x RSS | faces | setup s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['size']} | {r['pipeline']} | failed: {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['size']} | {r['pipeline']} | {r['fps']:.1f} | {r['ratio']:.2f}x | {r['peak_rss_mb']:.0f} | "
                     f"{r['rss_ratio']:.2f}x | {r['faces']} | {r['setup_s']:.1f} |")
    print("\n".join(lines), flush=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    if not args.no_profile:
        video = ensure_video(args.out / "videos", args.frames, FRAME_SIZES["720p"])
        lines += ["", "Per-stage profile, 720p, batch 8 (each stage compiled on its own):", "",
                  "| stage | ms/frame |", "|---|---|"]
        profile_rows = profile(video, args)
        lines += [f"| {name} | {ms:.2f} |" for name, ms in profile_rows]
        print("\n".join(lines[-len(profile_rows) - 4:]))
    (args.out / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
