"""How still a tube's crop holds and how closely it follows: jitter and drift, raw against smoothed.

Jitter is the crop's frame-to-frame motion: its four corners mapped back into the image (pixels),
their mean displacement from one frame to the next where the face is found in both. Drift is the
mean distance between the smoothed crop's corners and the raw per-frame crop's. On a face that keeps
still (a real photo made into a video, with and without per-frame sensor noise) smoothing must cut
jitter at least 5x; on real talking videos the smoothed crop must stay within 2 px of the raw one.

Usage: ``python -m benchmarks.tube_jitter [--bundle DIR]`` prints the table in ``docs/tubes.md``
(the bundle defaults to a det_500m align bundle exported into a temporary folder).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import av
import numpy as np

from benchmarks.photos import media_dir

PHOTOS = ("1_face.jpg", "2_face.jpg", "3_face.jpg", "4_face.jpg")
TALKING = ("example_vid.mp4", "1.mp4", "2.mp4")
NOISE = 8.0  # grey levels, the standard deviation of the per-frame sensor noise added


def still_video(photo: Path, path: Path, frames: int = 48, noise: float = 0.0, seed: int = 0) -> Path:
    """A video of ``photo`` held still for ``frames`` frames at 25 fps, each with its own Gaussian
    noise of ``noise`` grey levels (0: the same picture every frame); H.264 at CRF 12."""
    with av.open(str(photo)) as container:
        rgb = next(container.decode(video=0)).to_ndarray(format="rgb24")
    rgb = rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2]
    generator = np.random.default_rng(seed)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p"
        stream.options = {"crf": "12"}
        for _ in range(frames):
            image = rgb if not noise else np.clip(rgb + generator.normal(0, noise, rgb.shape), 0, 255).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        out.mux(stream.encode())
    return path


def corners(mats: np.ndarray, size: int) -> np.ndarray:
    """``[..., 4, 2]`` image coordinates of the crop's corners, from image -> crop matrices ``[..., 3, 3]``."""
    square = np.array([[0, 0, 1], [size - 1, 0, 1], [size - 1, size - 1, 1], [0, size - 1, 1]], np.float64)
    inverse = np.linalg.inv(mats.astype(np.float64))
    return np.einsum("...ij,kj->...ki", inverse, square)[..., :2]


def jitter_and_drift(results: dict[str, np.ndarray]) -> dict[str, float]:
    """``raw_jitter``, ``smooth_jitter``, ``drift`` (pixels) and ``frames`` over a results file's tube
    frames where the face is found, and the one before it too (for the jitter)."""
    size = int(results["crop_size"][0])
    found = results["tube_frame_slot"] >= 0
    frames, slots = results["tube_frame_index"][found], results["tube_frame_slot"][found]
    raw = corners(results["crop_mat"][frames, slots], size)
    smooth = corners(results["tube_crop_mat"][found], size)
    tube = results["tube_frame_tube"][found]
    steps = (np.diff(frames) == 1) & (np.diff(tube) == 0)  # consecutive frames of one tube

    def motion(c):
        return float(np.linalg.norm(np.diff(c, axis=0), axis=-1).mean(-1)[steps].mean()) if steps.any() else 0.0

    return {"raw_jitter": motion(raw), "smooth_jitter": motion(smooth),
            "drift": float(np.linalg.norm(smooth - raw, axis=-1).mean()) if len(raw) else 0.0, "frames": int(found.sum())}


def measure(bundle, video: Path, work: Path) -> dict[str, float]:
    from facecrop.runtime import process_video

    out = process_video(bundle, video, work / f"{video.stem}.npz", progress=False, force=True)
    with np.load(out, allow_pickle=False) as data:
        return jitter_and_drift({k: data[k] for k in data.files})


def main(argv: list[str] | None = None) -> int:
    from benchmarks.backends import load_as_the_cli

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.bundle is None:
            from facecrop.cli import main as cli

            cli(["export", "--detector", "det_500m", "--crop", "align", "--out", str(work / "bundles")])
            args.bundle = next((work / "bundles").glob("*/*"))
        bundle = load_as_the_cli(args.bundle, "cpu")
        print("| video | frames | raw jitter (px) | smoothed jitter (px) | jitter cut | drift (px) |")
        print("|---|---|---|---|---|---|")
        cases = [(f"{p} still", still_video(media_dir() / p, work / f"still_{i}.mp4")) for i, p in enumerate(PHOTOS)]
        cases += [(f"{p} still + noise {NOISE:g}", still_video(media_dir() / p, work / f"noisy_{i}.mp4", noise=NOISE))
                  for i, p in enumerate(PHOTOS)]
        cases += [(name, media_dir() / name) for name in TALKING]
        for name, video in cases:
            m = measure(bundle, video, work)
            cut = m["raw_jitter"] / m["smooth_jitter"] if m["smooth_jitter"] else float("inf")
            print(f"| {name} | {m['frames']} | {m['raw_jitter']:.3f} | {m['smooth_jitter']:.3f} | {cut:.1f}x | "
                  f"{m['drift']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
