"""The reference as its users run it: a Python script looping InsightFace over videos, one frame at a time.

    python benchmarks/insightface_run.py DETECTOR.onnx VIDEO [VIDEO ...] -o OUT_DIR [--det-size 224]

For each video: PyAV decode (``to_ndarray('bgr24')``, FFmpeg's threads on), ``SCRFD.detect`` at the
given det size with thresholds 0.3/0.3 (facecrop's bundle settings), then ``face_align.norm_crop``
per face (the ArcFace/MICA aligned crop), as the official ONNX files allow (batch 1 baked in). The
boxes of every frame go to ``OUT_DIR/<video stem>.npz``, so that the script, like ``facecrop run``,
ends with its results on disk. ``benchmarks/whole_process.py`` times it as a process, imports
included; ``benchmarks/cpu_video.py`` calls :func:`run_video` in a measuring process.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def load_detector(path: str, det_size: tuple[int, int]):
    """InsightFace's SCRFD on onnxruntime's CPU provider, prepared for ``det_size`` (width, height)."""
    import onnxruntime as ort
    from insightface.model_zoo.scrfd import SCRFD

    ort.set_default_logger_severity(3)
    detector = SCRFD(path, session=ort.InferenceSession(path, providers=["CPUExecutionProvider"]))
    detector.prepare(-1, input_size=tuple(det_size), det_thresh=0.3, nms_thresh=0.3)
    return detector


def run_video(detector, video: str | Path, output: str | Path, det_size: tuple[int, int], crop_size: int = 112,
              landmarks=None) -> dict:
    """Detect and crop every frame of ``video``; write the per-frame boxes to ``output`` (.npz).

    ``landmarks``: an InsightFace ``Landmark`` model run on every face first, or None.
    Returns ``{"seconds", "frames", "faces"}`` (seconds from opening the video to the file written).
    """
    import av
    import numpy as np
    from insightface.app.common import Face
    from insightface.utils import face_align

    start = time.perf_counter()
    frames = faces = 0
    boxes = []
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            bgr = frame.to_ndarray(format="bgr24")
            dets, kpss = detector.detect(bgr, input_size=tuple(det_size))
            for det, kps in zip(dets, kpss):
                if landmarks is not None:
                    landmarks.get(bgr, Face(bbox=det[:4], kps=kps, det_score=det[4]))
                face_align.norm_crop(bgr, kps, crop_size)
            boxes.append(dets[:, :4])
            frames += 1
            faces += len(dets)
    np.savez(output, *boxes)
    return {"seconds": time.perf_counter() - start, "frames": frames, "faces": faces}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("detector", help="SCRFD .onnx file")
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True, help="folder for one .npz per video")
    parser.add_argument("--det-size", type=int, default=224)
    parser.add_argument("--crop-size", type=int, default=112)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    det_size = (args.det_size, args.det_size)
    detector = load_detector(args.detector, det_size)
    for video in args.videos:
        run_video(detector, video, args.out / f"{video.stem}.npz", det_size, args.crop_size)


if __name__ == "__main__":
    main()
