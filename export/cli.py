"""The ``facecrop`` command: model zoo, bundle export/inspection and video runs.

Each subcommand parses its arguments here and hands them to the module that
does the work, so that the library functions stay usable without the CLI.
Errors that are the user's to fix (missing model, bad bundle, bad video) end
with one line on stderr and a non-zero exit, not a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path


from facecrop.runtime.crops import CROP_FORMATS
from facecrop.runtime.tubes import TubeOptions
from facecrop.runtime.errors import FacecropError
from facecrop.runtime.stream import POLICIES


class UserError(FacecropError):
    """An error whose message tells the user what is wrong and what to do."""


def _size(text: str) -> tuple[int, int]:
    """Parse ``224`` or ``640x480`` (width x height) into ``(width, height)``."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or WxH, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected N or WxH with positive sizes, got {text!r}")
    return values[0], values[1]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _models_fetch(args: argparse.Namespace) -> None:
    from facecrop import zoo

    zoo.fetch_pack(args.pack, model_dir=args.model_dir)


def _models_list(args: argparse.Namespace) -> None:
    from facecrop import zoo

    zoo.print_models(model_dir=args.model_dir)


def _export(args: argparse.Namespace) -> None:
    from facecrop import bundle

    bundle.export_from_args(args)


def _inspect(args: argparse.Namespace) -> None:
    from facecrop import bundle

    bundle.inspect_from_args(args)


def _single_video(args: argparse.Namespace) -> bool:
    """One video with ``-o results.npz``: the single-video run. Anything else is a dataset run."""
    inputs = args.inputs
    return (len(inputs) == 1 and inputs[0].is_file() and inputs[0].suffix.lower() != ".txt"
            and args.output.suffix.lower() == ".npz" and not args.output.is_dir())


def _run_options(args: argparse.Namespace) -> dict:
    """What ``facecrop run`` writes besides the per-frame arrays: ``process_video``'s keyword arguments."""
    from facecrop.runtime.tubes import TubeOptions

    tubes = TubeOptions(**{name: getattr(args, name) for name in TubeOptions.names()})
    return {"save_crops": args.save_crops, "crops": args.crops, "jpeg_quality": args.jpeg_quality,
            "dist_threshold": args.dist_threshold, "present_threshold": args.present_threshold, "tubes": tubes}


def _report_bundle(bundle) -> None:
    if "overflow" not in bundle.output_names:
        print(f"facecrop: note: {bundle.path} (format {bundle.manifest['format_version']}) cannot report frames with "
              "more faces than it keeps; re-export it with `facecrop export` to have them reported", file=sys.stderr)


def _run_one(args: argparse.Namespace) -> None:
    """``facecrop run BUNDLE VIDEO -o OUT.npz``: load and verify the bundle, process the video, optionally overlay."""
    from facecrop.overlay import write_overlay
    from facecrop.runtime import load_bundle, process_video, summarize_results
    from facecrop.runtime.bundle import read_manifest
    from facecrop.runtime.decoder import Decoder
    from facecrop.runtime.outputs import check_writable, refuse_overwrites
    from facecrop.runtime.quality import format_summary, overflow_warning
    from facecrop.runtime.video import decoder_args, run_outputs

    start = time.perf_counter()
    if args.visualize is not None:  # checked now, not after the whole run
        refuse_overwrites({"the video": args.inputs[0]},
                          {**run_outputs(args.output, args.crops), "--visualize": (args.visualize, False)})
        check_writable(args.visualize, "--visualize")
    max_side = int(read_manifest(args.bundle)["input"]["max_side"])
    # The video decodes while the bundle loads (process_video takes this decoder over); a resumed run
    # starts past frame 0, which process_video works out, and starts its own.
    decoder = None if args.resume else Decoder(*decoder_args(args.inputs[0], args.batch_size, 0, max_side))
    try:
        bundle = load_bundle(args.bundle, device=args.device)
        print(f"loaded {bundle!r} in {time.perf_counter() - start:.1f} s (golden self-check passed)", file=sys.stderr)
        _report_bundle(bundle)
        start = time.perf_counter()
        output = process_video(bundle, args.inputs[0], args.output, batch_size=args.batch_size, resume=args.resume,
                               force=args.force, decoder=decoder, **_run_options(args))
    finally:
        if decoder is not None:
            decoder.close()  # where process_video stopped before taking it over (closing twice does nothing)
    summary = summarize_results(output)
    print(f"wrote {output} in {time.perf_counter() - start:.1f} s: {format_summary(summary)}", file=sys.stderr)
    warning = overflow_warning(summary["overflow_frames"], bundle.manifest["config"]["max_faces"])
    if warning:
        print(f"facecrop: {warning}", file=sys.stderr)
    if args.visualize is not None:
        print(f"wrote overlay {write_overlay(args.inputs[0], output, args.visualize)}", file=sys.stderr)
    if args.report:
        from facecrop.report import write_report

        print(f"wrote report {write_report(output, video=args.inputs[0])}", file=sys.stderr)


def _report(args: argparse.Namespace) -> None:
    """``facecrop report RESULTS``: a results file's page, or a dataset output folder's index and pages."""
    from facecrop import dataset
    from facecrop.report import write_dataset_report, write_report

    if args.results.is_dir():
        rows = [row for row in dataset.Manifest(args.results).latest().values() if row]
        if not rows:
            raise UserError(f"{args.results} holds no {dataset.MANIFEST} with finished videos: not a dataset run's folder")
        written = write_dataset_report(args.results, rows, args.output)
    elif args.results.suffix == ".npz" and args.results.is_file():
        written = write_report(args.results, args.output, args.video)
    else:
        raise UserError(f"{args.results}: expected a results .npz file or a dataset run's output folder")
    print(f"wrote report {written}", file=sys.stderr)


def _input(text: str) -> Path | str:
    """A path, or a live source kept as written (``Path`` would fold ``rtsp://`` into ``rtsp:/``)."""
    if "://" in text:
        from facecrop.runtime.sources import NETWORK_SCHEMES

        scheme = text.split("://", 1)[0].lower()
        if scheme not in NETWORK_SCHEMES:
            raise argparse.ArgumentTypeError(f"{text}: unknown URL scheme {scheme!r}; facecrop reads "
                                             f"{', '.join(NETWORK_SCHEMES)} streams, or files by path")
        return text
    return text if text.startswith("/dev/video") else Path(text)


def _is_live(source) -> bool:
    return isinstance(source, str)  # _input keeps live sources as written, everything else as a Path


def _run_live(args: argparse.Namespace) -> None:
    """``facecrop run BUNDLE rtsp://host/cam -o faces.jsonl``: one JSON line per frame, flushed as it comes,
    until the stream ends or Ctrl-C; then one line with frames, faces, dropped frames and latency."""
    import numpy as np

    from facecrop.runtime import load_bundle, stream
    from facecrop.runtime.jsonl import write_json_lines

    if len(args.inputs) != 1 or args.output.suffix != ".jsonl" or args.visualize or args.resume or args.ray:
        raise UserError("a live source runs alone, into -o FILE.jsonl (no --visualize, --resume or --ray)")
    bundle = load_bundle(args.bundle, device=args.device)
    live = stream(bundle, args.inputs[0], batch_size=args.batch_size, max_delay=args.max_delay, policy=args.policy,
                  dist_threshold=args.dist_threshold)
    print(f"reading {args.inputs[0]} into {args.output} (Ctrl-C ends)", file=sys.stderr)
    with live, open(args.output, "w") as out:
        try:
            write_json_lines(live, out)
        except KeyboardInterrupt:
            pass  # the way to stop a live source: end as cleanly as a stream that ends
    stats = live.stats
    latency = np.array(stats["latency_s"] or [float("nan")]) * 1000
    gaps = f", {len(stats['gaps_s'])} drops of the source ({sum(stats['gaps_s']):.1f} s lost)" if stats["gaps_s"] else ""
    if live.source.gave_up_s is not None:
        gaps += f"; the source ended (not back after {live.source.gave_up_s:.1f} s of retries)"
    print(f"wrote {args.output}: {stats['frames']} frames, {stats['faces']} faces, {stats['dropped']} dropped, latency "
          f"p50 {np.percentile(latency, 50):.0f} ms p99 {np.percentile(latency, 99):.0f} ms{gaps}", file=sys.stderr)


def _run(args: argparse.Namespace) -> None:
    if any(_is_live(source) for source in args.inputs):
        _run_live(args)
        return
    if _single_video(args):
        _run_one(args)
        return
    if args.visualize is not None or args.resume:
        raise UserError("--visualize and --resume are for one video with -o results.npz; a dataset run "
                        "(-o FOLDER) always resumes, and overlays are made per video afterwards")
    from facecrop import dataset

    start = time.perf_counter()
    if args.ray is not None:
        from facecrop import distributed

        rows, skipped = distributed.run_dataset(args.bundle, args.inputs, args.output, address=args.ray,
                                                concurrency=args.concurrency, num_cpus=args.num_cpus,
                                                num_gpus=args.num_gpus, batch_size=args.batch_size,
                                                options=_run_options(args), force=args.force)
    else:
        devices = args.devices or ([args.device] if args.device else None)
        rows, skipped = dataset.run_local(args.bundle, args.inputs, args.output, devices=devices,
                                          batch_size=args.batch_size, options=_run_options(args), force=args.force)
    print(dataset.summary(rows, skipped, time.perf_counter() - start), file=sys.stderr)
    if args.report:
        from facecrop.report import write_dataset_report

        latest = dataset.Manifest(args.output).latest()
        videos = [str(r["video"]) for r in rows + skipped]
        current = [latest[v] for v in videos if latest.get(v)]
        print(f"wrote report {write_dataset_report(args.output, current)}", file=sys.stderr)
    failed = sum(r["status"] == "failed" for r in rows)
    if failed:
        raise UserError(f"{failed} of {len(rows) + len(skipped)} videos failed; see {args.output / dataset.MANIFEST}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facecrop", description=__doc__.splitlines()[0])
    parser.add_argument("--traceback", action="store_true", help="print the traceback of every error, not one line")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="download and list InsightFace model packs")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    fetch = models_sub.add_parser("fetch", help="download, verify and extract an official pack")
    fetch.add_argument("pack", help="buffalo_l, buffalo_m, buffalo_s or buffalo_sc")
    fetch.add_argument("--model-dir", type=Path, default=None)
    fetch.set_defaults(func=_models_fetch)
    listing = models_sub.add_parser("list", help="show which models are present and verified")
    listing.add_argument("--model-dir", type=Path, default=None)
    listing.set_defaults(func=_models_list)

    export = sub.add_parser("export", help="build a versioned bundle from ONNX models")
    export.add_argument("--name", default=None, help="bundle name (default: derived from the config)")
    export.add_argument("--version", default="1.0.0", help="semantic version of the bundle")
    export.add_argument("--detector", default="det_10g", help="SCRFD model name or .onnx path")
    export.add_argument("--landmarks", default=None, help="2d106det, 1k3d68 or an .onnx path")
    export.add_argument("--crop", choices=["none", "align", "bbox"], default="align")
    export.add_argument("--det-size", type=_size, default=(224, 224), metavar="N|WxH")
    export.add_argument("--crop-size", type=_positive, default=None, help="crop side in pixels")
    export.add_argument("--max-faces", type=_positive, default=32,
                        help="faces kept per frame (default 32); frames with more are reported by `facecrop run`")
    export.add_argument("--det-threshold", type=float, default=0.3)
    export.add_argument("--nms-threshold", type=float, default=0.3)
    export.add_argument("--device", default="cpu")
    export.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    export.add_argument("--backend", choices=["aoti", "export", "torchscript", "tensorrt"], default=None,
                        help="aoti (default): the fast one, AOTInductor compiles the module to native code (about 4 "
                             "minutes on 2 CPU cores). export, torchscript: portable, not fast; their graphs run "
                             "uncompiled, about half as fast as the InsightFace loop on the CPU. tensorrt: NVIDIA "
                             "GPUs, needs torch-tensorrt")
    export.add_argument("--model-dir", type=Path, default=None)
    export.add_argument("--out", type=Path, default=Path("bundles"), help="bundle root folder")
    export.set_defaults(func=_export)

    inspect = sub.add_parser("inspect", help="print a bundle's manifest and verify it")
    inspect.add_argument("bundle", type=Path)
    inspect.add_argument("--device", default=None)
    inspect.set_defaults(func=_inspect)

    report = sub.add_parser("report", help="write an HTML page of a run's faces, tubes and quality")
    report.add_argument("results", type=Path, help="a results .npz file, or a dataset run's output folder")
    report.add_argument("-o", "--output", type=Path, default=None,
                        help="the page (default <results>.report.html), or the folder of a dataset's pages "
                             "(default <folder>/report/)")
    report.add_argument("--video", type=Path, default=None, help="the video, where it moved since the run")
    report.set_defaults(func=_report)

    run = sub.add_parser("run", help="run a bundle on a video, or on a dataset of videos")
    run.add_argument("bundle", type=Path)
    run.add_argument("inputs", type=_input, nargs="+", metavar="INPUT",
                     help="videos, folders (searched recursively) or .txt files listing videos; or one live "
                          "source (rtsp://, http(s)://, tcp://, udp://, /dev/video0) with -o FILE.jsonl")
    run.add_argument("-o", "--output", type=Path, required=True,
                     help="results file (.npz) for one video, else the output folder of a dataset run")
    run.add_argument("--batch-size", type=_positive, default=8)
    run.add_argument("--device", default=None)
    run.add_argument("--save-crops", action="store_true", help="also save every face crop in the results file")
    run.add_argument("--crops", choices=CROP_FORMATS, default=None,
                     help="write the face tubes' smoothed crops to <results>.crops/: mp4 (one video per tube, with "
                          "its sound), png or jpg folders (one per tube) or webdataset tar shards (bundles/README.md)")
    run.add_argument("--jpeg-quality", type=int, default=2, metavar="Q",
                     help="--crops jpg: FFmpeg's JPEG quantiser, 2 (best, the default) to 31")
    run.add_argument("--dist-threshold", type=float, default=250.0, metavar="PX",
                     help="face tracking: landmark distance (px, all points together) from which a face is new "
                          "(Medusa's default 250)")
    run.add_argument("--present-threshold", type=float, default=0.1, metavar="FRACTION",
                     help="face ids in fewer than this fraction of frames are marked in track_kept (rows are "
                          "kept; Medusa's default 0.1)")
    tubes = run.add_argument_group("face tubes (runs of frames of one face, cut stably; docs/tubes.md)")
    defaults = TubeOptions()
    tubes.add_argument("--min-tube", type=_positive, default=defaults.min_tube, metavar="FRAMES",
                       help=f"drop tubes shorter than this (default {defaults.min_tube})")
    tubes.add_argument("--max-tube", type=_positive, default=defaults.max_tube, metavar="FRAMES",
                       help=f"split tubes longer than this (default {defaults.max_tube})")
    tubes.add_argument("--max-gap", type=int, default=defaults.max_gap, metavar="FRAMES",
                       help=f"a face missing for more frames than this ends its tube (default {defaults.max_gap})")
    tubes.add_argument("--smooth", dest="smooth_s", type=float, default=defaults.smooth_s, metavar="SECONDS",
                       help=f"crop smoothing, a Gaussian's sigma in seconds; 0 for raw crops (default {defaults.smooth_s})")
    tubes.add_argument("--still-speed", type=float, default=defaults.still_speed, metavar="PX",
                       help="crop speed (image pixels a frame) at which smoothing halves: faster faces are followed "
                            f"more closely (default {defaults.still_speed})")
    tubes.add_argument("--max-shift", type=float, default=defaults.max_shift, metavar="FRACTION",
                       help="a crop moving more than this fraction of its side between detections starts a new tube "
                            f"(default {defaults.max_shift})")
    tubes.add_argument("--max-zoom", type=float, default=defaults.max_zoom, metavar="RATIO",
                       help=f"a crop scaling by more than this between detections starts a new tube (default {defaults.max_zoom})")
    tubes.add_argument("--keep-all", action="store_true",
                       help="write the tubes of every face id, not only of tracks kept by --present-threshold")
    tubes.add_argument("--min-face", type=float, default=defaults.min_face, metavar="PX",
                       help="drop faces whose box is smaller (square root of its area, pixels)")
    tubes.add_argument("--max-yaw", type=float, default=None, metavar="DEGREES", help="drop faces turned further")
    tubes.add_argument("--max-pitch", type=float, default=None, metavar="DEGREES", help="drop faces tilted further")
    tubes.add_argument("--min-sharpness", type=float, default=defaults.min_sharpness, metavar="VAR",
                       help="drop faces whose crop is blurrier (variance of the Laplacian)")
    run.add_argument("--report", action="store_true",
                     help="write an HTML report at the end (<results>.report.html, or <folder>/report/index.html)")
    run.add_argument("--visualize", type=Path, default=None, metavar="FILE", help="write an overlay video (one video)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run (one video)")
    run.add_argument("--force", action="store_true",
                     help="redo every video of a dataset run, even with another bundle or settings (a plain rerun "
                          "continues an interrupted --force run); one video: discard an interrupted run's checkpoint "
                          "and replace a crops folder facecrop did not make")
    run.add_argument("--devices", nargs="+", default=None, metavar="DEVICE",
                     help="dataset run: one worker per device, e.g. cuda:0 cuda:1")
    run.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                     help="dataset run on a Ray cluster (default: the one `ray start` made here)")
    run.add_argument("--policy", choices=POLICIES, default="all",
                     help="live source: process every frame (latency grows when compute falls behind), or keep up "
                          "by dropping the oldest waiting frames (counted)")
    run.add_argument("--max-delay", type=float, default=0.03, metavar="SECONDS",
                     help="live source: how long a batch waits for more frames after its first")
    run.add_argument("--concurrency", type=int, default=1, help="--ray: number of actors")
    run.add_argument("--num-cpus", type=float, default=1, help="--ray: CPUs per actor")
    run.add_argument("--num-gpus", type=float, default=0, help="--ray: GPUs per actor")
    run.set_defaults(func=_run)
    return parser


def _warn_in_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    """One line per warning, said by whoever warned: facecrop, or the installed package it came from (Ray)."""
    parts = Path(filename).parts
    owner = next((parts[i + 1] for i, part in enumerate(parts[:-1]) if part in ("site-packages", "dist-packages")),
                 "facecrop")
    print(f"{owner}: warning: {message}", file=sys.stderr)


def _users_to_fix(err: Exception) -> bool:
    """facecrop's own errors, and the system's about a file the user named (permission denied, no such file)."""
    return isinstance(err, FacecropError) or (isinstance(err, OSError) and err.filename is not None)


class _Stop:
    """SIGINT and SIGTERM handler: the first ends the run as Ctrl-C does (results kept, one line said); later
    ones while the run saves what it computed are said and ignored, so the saving is never cut short."""

    def __init__(self):
        self.stopping = False

    def __call__(self, signum, frame) -> None:
        if self.stopping:
            print("\nfacecrop: still saving what was computed; Ctrl-\\ quits at once without it", file=sys.stderr)
            return
        self.stopping = True
        raise KeyboardInterrupt("stopped by SIGTERM" if signum == signal.SIGTERM else "")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Schedulers stop jobs with SIGTERM: it ends a run as Ctrl-C does, results kept and one line said.
    previous = {}
    if threading.current_thread() is threading.main_thread():
        stop = _Stop()
        previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    shown = warnings.showwarning
    warnings.showwarning = _warn_in_one_line
    try:
        if args.command == "run":
            from facecrop.runtime.tuning import tune_process

            tune_process()  # facecrop's own process: the library never does this for an app (runtime/tuning.py)
        args.func(args)
    except Exception as err:  # noqa: BLE001 - each error ends in one line, or (a bug) its traceback
        if args.traceback or not _users_to_fix(err):
            traceback.print_exc()
        if _users_to_fix(err):
            print(f"facecrop: error: {err}", file=sys.stderr)
        else:
            print(f"facecrop: internal error ({type(err).__name__}): this is a bug in facecrop; please report it "
                  "with the traceback above", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # one line, not the traceback: what was kept, and how to go on
        said = str(err) or "interrupted"
        if args.func is _run and "kept in" in said:
            if _single_video(args):
                said += f"; run the same command with --resume{' instead of --force' if args.force else ''} to continue"
            else:
                said += (f"; run the same command again{', without --force,' if args.force else ''} to continue "
                         "(finished videos are skipped)")
        print(f"facecrop: {said}", file=sys.stderr)
        return 143 if said.startswith("stopped by SIGTERM") else 130
    finally:
        warnings.showwarning = shown
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def console() -> None:
    """The ``facecrop`` executable: :func:`main`, then an exit without the interpreter's teardown.

    With torch loaded, the teardown alone takes about 0.3 s of every run (``python -c 'import torch'``:
    1.39-1.48 s, with ``os._exit``: 1.11-1.13 s), a tenth of a short clip's whole run. Every file
    facecrop writes is closed and renamed into place before :func:`main` returns, so nothing is lost.
    """
    code = main()
    if "ray" in sys.modules:
        sys.exit(code)  # Ray's exit hooks tell the cluster this driver is gone
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    console()
