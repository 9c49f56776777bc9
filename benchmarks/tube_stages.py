"""Where writing face tubes spends its time: smoothing, decoding again, re-cropping, encoding, sound.

    python -m benchmarks.tube_stages BUNDLE [VIDEO ...]

For each video (default: Medusa's videos with faces), runs ``process_video`` without crop files,
then times each stage of ``--crops mp4`` on its results with the functions the run uses: cutting and
smoothing the tubes (``find_tubes``), the second decode (``sources.read_frames``), cutting the crops with
the smoothed matrices (``cut.cut_crops``), H.264 encoding (``TubeVideo``) and the sound (``read_audio``
and AAC). Prints a table of seconds and milliseconds a frame.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.photos import media_dir


def stages(bundle, video: Path, work: Path) -> dict[str, float]:
    from facecrop.runtime import process_video
    from facecrop.runtime.crops import TubeVideo, read_audio
    from facecrop.runtime.sources import read_frames
    from facecrop.runtime.face_quality import QUALITY_COLUMNS
    from facecrop.runtime.tubes import TubeOptions, find_tubes, frame_rate, summarize_tubes
    from facecrop.runtime.cut import cut_crops

    start = time.perf_counter()
    out = process_video(bundle, video, work / "r.npz", progress=False, force=True)
    seconds = {"run without crops": time.perf_counter() - start}
    with np.load(out, allow_pickle=False) as data:
        r = {k: data[k] for k in data.files}
    size = int(r["crop_size"][0])
    start = time.perf_counter()
    tubes = find_tubes(r["face_idx"], r["crop_mat"], r["track_kept"], {k: r[k] for k in QUALITY_COLUMNS}, size,
                       frame_rate(r["pts_seconds"]), TubeOptions())
    seconds["tubes and smoothing"] = time.perf_counter() - start
    r.update(tubes)
    listed = summarize_tubes(r, str(video))
    crops: dict[int, list] = {t: [] for t in range(len(listed))}
    decode = cut = 0.0
    clock = time.perf_counter()
    for index, frame, pts in read_frames(video, int(r["tube_stop"].max(initial=0))):
        decode += time.perf_counter() - clock
        clock = time.perf_counter()
        rows = np.flatnonzero(r["tube_frame_index"] == index)
        if len(rows):
            for row, crop in zip(rows, cut_crops(frame, r["tube_crop_mat"][rows], size)):
                crops[int(r["tube_frame_tube"][row])].append((crop, index, pts))
        cut += time.perf_counter() - clock
        clock = time.perf_counter()
    seconds["decoding again"], seconds["cutting crops"] = decode, cut
    encode = sound = 0.0
    for t, tube in enumerate(listed):
        clock = time.perf_counter()
        writer = TubeVideo(video, work / f"tube{t}.mp4", size)
        for crop, index, pts in crops[t]:
            writer.write(crop, index, pts)
        writer.out.container.mux(writer.out.stream.encode())
        encode += time.perf_counter() - clock
        clock = time.perf_counter()
        if writer.out.audio is not None:
            context = writer.out.audio.codec_context
            writer.out.write_audio(read_audio(video, tube["start_s"], tube["stop_s"], context.sample_rate,
                                              context.layout.name))
        sound += time.perf_counter() - clock
        writer.out.discard()
    seconds["H.264 encoding"], seconds["sound (decode, cut, AAC)"] = encode, sound
    seconds["frames"] = len(r["valid"])
    seconds["tube frames"] = len(r["tube_frame_index"])
    return seconds


def main(argv: list[str] | None = None) -> int:
    from benchmarks.backends import load_as_the_cli

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("videos", nargs="*", type=Path)
    args = parser.parse_args(argv)
    videos = args.videos or [media_dir() / n for n in ("1.mp4", "2.mp4", "3.mp4", "example_vid.mp4")]
    bundle = load_as_the_cli(args.bundle, "cpu")
    names = None
    with tempfile.TemporaryDirectory() as tmp:
        for video in videos:
            s = stages(bundle, video, Path(tmp))
            if names is None:
                names = [k for k in s if k not in ("frames", "tube frames")]
                print("| video | frames | tube frames | " + " | ".join(f"{n} s (ms/frame)" for n in names) + " |")
                print("|---" * (3 + len(names)) + "|")
            print(f"| {video.name} | {s['frames']} | {s['tube frames']} | "
                  + " | ".join(f"{s[n]:.2f} ({1000 * s[n] / max(s['frames'], 1):.2f})" for n in names) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
