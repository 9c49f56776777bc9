"""How far facecrop's detections are from Medusa's own resize, measured on real photos.

Medusa letterboxes with kornia's float bilinear resize (``medusa.transforms.resize_with_pad``:
``F.interpolate``, no antialiasing, float output); facecrop (and InsightFace) use OpenCV's
fixed-point ``cv2.resize`` on uint8. Both feed the same converted net, anchor decoding and NMS
here, so the difference below is the resize's alone.

    python benchmarks/medusa_resize.py [--det-size 640] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def medusa_letterbox(frames: torch.Tensor, det_size: tuple[int, int]) -> tuple[torch.Tensor, float]:
    """``medusa.transforms.resize_with_pad`` with kornia's defaults (bilinear, align_corners=False)."""
    ih, iw = frames.shape[-2:]
    mw, mh = det_size
    if ih / iw > mh / mw:
        h, w = mh, mh / (ih / iw)
    else:
        w, h = mw, mw * (ih / iw)
    h, w = int(h), int(w)
    out = torch.zeros(frames.shape[0], 3, mh, mw)
    out[..., :h, :w] = F.interpolate(frames.float(), size=(h, w), mode="bilinear", align_corners=False)
    return out, h / ih


def detect(head, canvas: torch.Tensor, scale: float) -> dict:
    from facecrop.detect.core import decode_scrfd, select_faces

    inputs = (canvas - head.config.input_mean) / head.config.input_std
    scores, boxes, kps = decode_scrfd(head.net(inputs), head.anchors(), head.config)
    faces = select_faces(scores, boxes, kps, head.det_threshold, head.nms_threshold, head.max_faces)
    return {"valid": faces["valid"], "conf": faces["conf"], "bbox": faces["bbox"] / scale}


def main(argv=None) -> None:
    from benchmarks.detector_parity import match
    from facecrop.data import get_example_image
    from facecrop.detect.core import SCRFDHead
    from facecrop.zoo import resolve_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--det-size", type=int, default=640)
    parser.add_argument("--detector", default="det_500m")
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    size = (args.det_size, args.det_size)
    head = SCRFDHead(resolve_model(args.detector, args.model_dir), size, max_faces=16).eval()
    images = {f"example {n} faces": get_example_image(n, dtype=torch.uint8) for n in range(6)}
    try:
        from benchmarks.photos import t1_rgb

        images["t1 (InsightFace)"] = torch.from_numpy(t1_rgb()).permute(2, 0, 1)[None].contiguous()
    except ImportError:
        pass
    print("| image | faces facecrop / Medusa-style | max box diff px | max score diff |\n|---|---|---|---|")
    worst_box = worst_conf = 0.0
    with torch.inference_mode():
        for name, img in images.items():
            ours = head(img)
            theirs = detect(head, *medusa_letterbox(img, size))
            a_rows, b_rows = ours["valid"][0].nonzero()[:, 0], theirs["valid"][0].nonzero()[:, 0]
            pairs = match(ours["bbox"][0, a_rows].numpy(), theirs["bbox"][0, b_rows].numpy())
            box = max((float((ours["bbox"][0, a_rows[i]] - theirs["bbox"][0, b_rows[j]]).abs().max())
                       for i, j in enumerate(pairs) if j >= 0), default=0.0)
            conf = max((float((ours["conf"][0, a_rows[i]] - theirs["conf"][0, b_rows[j]]).abs())
                        for i, j in enumerate(pairs) if j >= 0), default=0.0)
            worst_box, worst_conf = max(worst_box, box), max(worst_conf, conf)
            print(f"| {name} | {len(a_rows)} / {len(b_rows)} | {box:.2f} | {conf:.4f} |")
    print(f"\nworst: {worst_box:.2f} px, score {worst_conf:.4f} (det {args.detector} at {args.det_size})")


if __name__ == "__main__":
    main()
