"""Detector parity with InsightFace: per image and model, faces matched and the max errors.

Run: ``python benchmarks/detector_parity.py [--model-dir DIR] [--det-size 224]``.
The same comparison backs ``tests/test_detector_parity.py``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np


def insightface_detect(model_path: Path, rgb: np.ndarray, det_size, det_threshold=0.3, nms_threshold=0.3):
    """InsightFace's ``SCRFD.detect`` on an RGB image -> (boxes [N, 4], scores [N], kps [N, 5, 2])."""
    from insightface.model_zoo.scrfd import SCRFD

    ref = SCRFD(str(model_path))
    ref.prepare(-1, input_size=det_size, det_thresh=det_threshold, nms_thresh=nms_threshold)
    dets, kps = ref.detect(np.ascontiguousarray(rgb[:, :, ::-1]), input_size=det_size)  # it wants BGR
    return dets[:, :4], dets[:, 4], kps


def match(ref_boxes: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """One-to-one matching by IoU: ``pairs[i] = j`` pairs reference face i with ours j, or -1."""
    import torch
    from torchvision.ops import box_iou

    pairs = np.full(len(ref_boxes), -1)
    if len(ref_boxes) and len(boxes):
        iou = box_iou(torch.as_tensor(ref_boxes, dtype=torch.float32), torch.as_tensor(boxes, dtype=torch.float32)).numpy()
        taken = set()
        for i in np.argsort(-iou.max(1)):
            for j in np.argsort(-iou[i]):
                if iou[i, j] > 0.5 and j not in taken:
                    pairs[i] = j
                    taken.add(j)
                    break
    return pairs


def compare(model_path: Path, rgb: np.ndarray, det_size, detector=None) -> dict:
    """Run both detectors on one image; returns counts and max box/keypoint/score errors."""
    import torch

    from facecrop import SCRFDetector

    detector = detector or SCRFDetector(model_path=str(model_path), det_size=det_size)
    ref_boxes, ref_scores, ref_kps = insightface_detect(model_path, rgb, det_size)
    out = detector(torch.from_numpy(rgb).permute(2, 0, 1))
    boxes, scores, kps = out["bbox"].numpy(), out["conf"].numpy(), out["lms"].numpy()
    pairs = match(ref_boxes, boxes)
    ok = pairs >= 0
    err = lambda a, b: float(np.abs(a - b).max()) if ok.any() else 0.0  # noqa: E731
    return {
        "reference": len(ref_boxes),
        "ours": len(boxes),
        "matched": int(ok.sum()),
        "box_px": err(ref_boxes[ok], boxes[pairs[ok]]),
        "kps_px": err(ref_kps[ok], kps[pairs[ok]]),
        "score": err(ref_scores[ok], scores[pairs[ok]]),
    }


def main() -> None:
    from benchmarks.photos import parity_images
    from facecrop import SCRFDetector

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path(os.environ.get("FACECROP_MODEL_DIR", "../shared/models")))
    parser.add_argument("--det-size", type=int, default=224)
    args = parser.parse_args()
    det_size = (args.det_size, args.det_size)
    print(f"{'model':<10} {'image':<18} {'ref':>4} {'ours':>4} {'matched':>7} {'box px':>7} {'kps px':>7} {'score':>8}")
    for name in ("det_500m", "det_2.5g"):
        path = args.model_dir / f"{name}.onnx"
        detector = SCRFDetector(model_path=str(path), det_size=det_size)
        for image, rgb in parity_images().items():
            r = compare(path, rgb, det_size, detector)
            print(f"{name:<10} {image:<18} {r['reference']:>4} {r['ours']:>4} {r['matched']:>7} "
                  f"{r['box_px']:>7.3f} {r['kps_px']:>7.3f} {r['score']:>8.5f}")


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
