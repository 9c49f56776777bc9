"""Parity of ``facecrop run`` with InsightFace 0.7.3, frame by frame, on real-photo videos of many shapes.

The reference decodes each frame with PyAV (as the InsightFace loop does), runs
``SCRFD.detect`` at the same det size and thresholds and ``face_align.norm_crop``
per face. facecrop's results file is matched against it frame by frame: face
counts, boxes (matched by nearest centre), aligned crops (mean absolute grey-level
difference over the crop pixels).

    python benchmarks/video_parity.py BUNDLE [--frames 12]   # prints one row per video shape
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Shapes of the parity videos, (width, height): square, portrait, 16:9, odd ratios, odd sides, 1080p.
SHAPES = {"square 480": (480, 480), "portrait 360x640": (360, 640), "642x378": (642, 378),
          "odd 641x377": (641, 377), "720p": (1280, 720), "1080p": (1920, 1080)}


def make_video(path: Path, size: tuple[int, int], frames: int, seed: int = 0) -> Path:
    """A real-photo video of ``size``: 0-6 faces per frame (frame 3 has none). ffv1/MKV for odd sides."""
    import av

    from benchmarks.frames import _background, compose_frame

    width, height = size
    odd = width % 2 or height % 2
    path = path.with_suffix(".mkv" if odd else ".mp4")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1" if odd else "libx264", rate=25)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv444p" if odd else "yuv420p"
        if not odd:
            stream.options = {"crf": "18", "preset": "veryfast"}
        for i in range(frames):
            rgb = _background(size).copy() if i == 3 else compose_frame(1 + (i + seed) % 6, seed=seed * 100 + i, size=size)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


@dataclass
class Reference:
    """InsightFace's output per frame: boxes ``[n, 4]``, keypoints ``[n, 5, 2]``, crops ``[n, S, S, 3]`` RGB."""

    boxes: list[np.ndarray]
    kps: list[np.ndarray]
    crops: list[np.ndarray]


def insightface_reference(video: Path, detector: Path, det_size=(224, 224), crop_size: int = 112,
                          det_threshold: float = 0.3, nms_threshold: float = 0.3) -> Reference:
    """Decode with PyAV, then ``SCRFD.detect`` + ``norm_crop`` on every frame (BGR, as InsightFace wants)."""
    import av
    import onnxruntime as ort
    from insightface.model_zoo.scrfd import SCRFD
    from insightface.utils import face_align

    ort.set_default_logger_severity(3)
    model = SCRFD(str(detector), session=ort.InferenceSession(str(detector), providers=["CPUExecutionProvider"]))
    model.prepare(-1, input_size=tuple(det_size), det_thresh=det_threshold, nms_thresh=nms_threshold)
    ref = Reference([], [], [])
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            bgr = frame.to_ndarray(format="rgb24")[:, :, ::-1].copy()
            dets, kpss = model.detect(bgr, input_size=tuple(det_size))
            ref.boxes.append(dets[:, :4])
            ref.kps.append(kpss.reshape(-1, 5, 2))
            ref.crops.append(np.stack([face_align.norm_crop(bgr, k, crop_size)[:, :, ::-1] for k in kpss])
                             if len(kpss) else np.zeros((0, crop_size, crop_size, 3), np.uint8))
    return ref


def compare(results: dict, ref: Reference) -> dict:
    """Frame-by-frame agreement of a facecrop results file (dict of arrays) with the reference.

    Returns ``frames``, ``count_agree`` (fraction of frames with the same number of faces),
    ``box_p99``/``box_max`` (px, largest corner difference of matched faces), ``crop_mad``
    (mean |grey-level difference| over all matched crops' pixels; NaN without crops),
    ``matched`` (faces compared).
    """
    valid = results["valid"]
    if len(valid) != len(ref.boxes):
        raise ValueError(f"results hold {len(valid)} frames, the reference {len(ref.boxes)}")
    crops_by_slot = {}
    if "imgs_crop" in results:
        for crop, frame, slot in zip(results["imgs_crop"], results["crop_frame_index"], results["crop_slot"]):
            crops_by_slot[(int(frame), int(slot))] = crop
    agree, box_errors, crop_diffs = 0, [], []
    for i, (want_boxes, want_crops) in enumerate(zip(ref.boxes, ref.crops)):
        slots = np.flatnonzero(valid[i])
        agree += len(slots) == len(want_boxes)
        if not len(slots) or not len(want_boxes):
            continue
        got = results["bbox"][i][slots]
        centres_got, centres_want = (got[:, :2] + got[:, 2:]) / 2, (want_boxes[:, :2] + want_boxes[:, 2:]) / 2
        nearest = np.linalg.norm(centres_want[:, None] - centres_got[None], axis=-1).argmin(1)
        for j, k in enumerate(nearest):
            box_errors.append(float(np.abs(got[k] - want_boxes[j]).max()))
            crop = crops_by_slot.get((i, int(slots[k])))
            if crop is not None:
                crop_diffs.append(np.abs(crop.transpose(1, 2, 0).astype(np.int16) - want_crops[j]).mean())
    errors = np.array(box_errors) if box_errors else np.zeros(1)
    return {"frames": len(valid), "count_agree": agree / len(valid), "matched": len(box_errors),
            "box_p99": float(np.percentile(errors, 99)), "box_max": float(errors.max()),
            "crop_mad": float(np.mean(crop_diffs)) if crop_diffs else float("nan")}


def main(argv=None) -> None:
    from facecrop.runtime import load_bundle, process_video

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--work", type=Path, default=Path("benchmarks/results/parity"))
    args = parser.parse_args(argv)
    bundle = load_bundle(args.bundle)
    config = bundle.manifest["config"]
    args.work.mkdir(parents=True, exist_ok=True)
    from facecrop.zoo import resolve_model

    print("| video | frames | faces | count agrees | box p99 px | box max px | crop MAD |")
    print("|---|---|---|---|---|---|---|")
    for name, size in SHAPES.items():
        video = make_video(args.work / name.replace(" ", "_"), size, args.frames)
        out = process_video(bundle, video, video.with_suffix(".npz"), save_crops=True, progress=False)
        with np.load(out, allow_pickle=False) as data:
            results = {k: data[k] for k in data.files}
        ref = insightface_reference(video, resolve_model(config["detector"]), config["det_size"],
                                    bundle.manifest["outputs"][-1]["shape"][-1])
        s = compare(results, ref)
        print(f"| {name} ({size[0]}x{size[1]}) | {s['frames']} | {s['matched']} | {s['count_agree']:.0%} | "
              f"{s['box_p99']:.3f} | {s['box_max']:.3f} | {s['crop_mad']:.3f} |")


if __name__ == "__main__":
    main()
