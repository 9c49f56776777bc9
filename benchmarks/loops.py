"""The reference pipelines facecrop is measured against, one frame at a time on onnxruntime.

- :class:`InsightFaceLoop`: InsightFace's own ``SCRFD.detect`` + ``Landmark.get`` +
  ``face_align.norm_crop`` (what Medusa's pipeline is built on);
- :class:`MedusaLoop`: Medusa's structure: onnxruntime detector per image, torch
  post-processing (anchor decoding, torchvision NMS), one landmark run per detection,
  kornia warps for the crops.

Both take RGB uint8 frames ``[B, H, W, 3]`` and return the number of faces found, so
the benchmark can check that every pipeline sees the same faces.
"""

from __future__ import annotations

import numpy as np
import torch

TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)
LANDMARK_SIZE = 192


def ort_providers(device: str) -> list[str]:
    """onnxruntime's CUDA provider on ``cuda`` (onnxruntime-gpu), else the CPU one."""
    import onnxruntime as ort

    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError("device 'cuda' needs onnxruntime-gpu for the reference loops (pip install 'facecrop[gpu]')")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _session(path, device: str):
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # the official detectors declare output shapes they do not produce
    return ort.InferenceSession(str(path), providers=ort_providers(device))


class InsightFaceLoop:
    """InsightFace's reference loop; it wants BGR, so each frame is flipped to BGR first."""

    def __init__(self, detector, landmarks, det_size, crop_size: int, device: str = "cpu",
                 det_threshold: float = 0.3, nms_threshold: float = 0.3):
        from insightface.model_zoo.landmark import Landmark
        from insightface.model_zoo.scrfd import SCRFD

        self.detector = SCRFD(str(detector), session=_session(detector, device))
        self.detector.prepare(-1, input_size=tuple(det_size), det_thresh=det_threshold, nms_thresh=nms_threshold)
        self.landmarks = Landmark(str(landmarks), session=_session(landmarks, device)) if landmarks else None
        self.det_size, self.crop_size = tuple(det_size), crop_size

    def __call__(self, frames: np.ndarray) -> int:
        from insightface.app.common import Face
        from insightface.utils import face_align

        found = 0
        for rgb in frames:
            bgr = np.ascontiguousarray(rgb[:, :, ::-1])
            dets, kpss = self.detector.detect(bgr, input_size=self.det_size)
            for det, kps in zip(dets, kpss):
                if self.landmarks is not None:
                    self.landmarks.get(bgr, Face(bbox=det[:4], kps=kps, det_score=det[4]))
                face_align.norm_crop(bgr, kps, self.crop_size)
            found += len(dets)
        return found


def _anchor_centres(height: int, width: int, stride: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(height // stride), torch.arange(width // stride), indexing="ij")
    centres = torch.stack([xs, ys], -1).reshape(-1, 2).float() * stride  # [HW, 2]
    return centres.repeat_interleave(2, dim=0)  # two anchors per cell


def _umeyama(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Similarity ``[N, 2, 3]`` mapping points ``src [N, P, 2]`` onto ``dst [P, 2]`` (least squares)."""
    mu_s, mu_d = src.mean(1, keepdim=True), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / src.shape[1]  # [N, 2, 2]
    u, s, vh = torch.linalg.svd(cov)
    d = torch.ones(src.shape[0], 2)
    d[:, 1] = torch.sign(torch.det(u) * torch.det(vh))
    rot = u @ torch.diag_embed(d) @ vh
    scale = (s * d).sum(1) / xs.pow(2).sum((1, 2)) * src.shape[1]
    mat = scale[:, None, None] * rot
    trans = mu_d - (mat @ mu_s.transpose(1, 2)).squeeze(-1)
    return torch.cat([mat, trans[..., None]], -1)


class MedusaLoop:
    """Medusa-style loop: per image, ONNX detector -> torch decoding and NMS -> per-face landmarks -> kornia crop."""

    def __init__(self, detector, landmarks, det_size, crop_size: int, device: str = "cpu",
                 det_threshold: float = 0.3, nms_threshold: float = 0.3):
        self.detector = _session(detector, device)
        self.landmarks = _session(landmarks, device) if landmarks else None
        self.det_size, self.crop_size, self.device = tuple(det_size), crop_size, torch.device(device)
        self.det_threshold, self.nms_threshold = det_threshold, nms_threshold
        width, height = self.det_size
        self.anchors = [_anchor_centres(height, width, s).to(self.device) for s in (8, 16, 32)]
        self.template = torch.as_tensor(TEMPLATE_112 * crop_size / 112, device=self.device)

    def detect(self, img: torch.Tensor):
        """img float ``[3, H, W]`` RGB -> boxes ``[N, 4]``, scores ``[N]``, keypoints ``[N, 5, 2]``."""
        import torch.nn.functional as F
        from torchvision.ops import nms

        width, height = self.det_size
        scale = min(width / img.shape[2], height / img.shape[1])
        new_h, new_w = int(img.shape[1] * scale), int(img.shape[2] * scale)
        resized = F.interpolate(img[None], size=(new_h, new_w), mode="bilinear", align_corners=False)
        blob = F.pad((resized - 127.5) / 128, (0, width - new_w, 0, height - new_h))
        outputs = self.detector.run(None, {self.detector.get_inputs()[0].name: blob.cpu().numpy()})
        boxes, scores, kpss = [], [], []
        for i, stride in enumerate((8, 16, 32)):
            score, dist, kps = (torch.from_numpy(outputs[i + 3 * k]).to(self.device) for k in range(3))
            keep = score[:, 0] >= self.det_threshold
            centres = self.anchors[i][keep]
            dist, kps = dist[keep] * stride, kps[keep].reshape(-1, 5, 2) * stride
            boxes.append(torch.cat([centres - dist[:, :2], centres + dist[:, 2:]], 1))
            kpss.append(centres[:, None] + kps)
            scores.append(score[keep, 0])
        boxes, scores, kpss = torch.cat(boxes) / scale, torch.cat(scores), torch.cat(kpss) / scale
        keep = nms(boxes, scores, self.nms_threshold)
        return boxes[keep], scores[keep], kpss[keep]

    def __call__(self, frames: np.ndarray) -> int:
        """Run every stage on each frame; the landmarks and crops are computed, then dropped (only timed)."""
        from kornia.geometry.transform import warp_affine

        found = 0
        for rgb in frames:
            img = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1).float()  # [3, H, W]
            boxes, _, kps = self.detect(img)
            if self.landmarks is not None:
                for box in boxes:  # one landmark run per detection: the nets have batch 1 baked in
                    size = (box[2:] - box[:2]).max() * 1.5
                    s = LANDMARK_SIZE / size
                    centre = (box[:2] + box[2:]) / 2
                    mat = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], device=self.device) * s
                    mat[:, 2] = LANDMARK_SIZE / 2 - centre * s
                    crop = warp_affine(img[None], mat[None], (LANDMARK_SIZE, LANDMARK_SIZE))
                    pred = self.landmarks.run(None, {self.landmarks.get_inputs()[0].name: crop.cpu().numpy()})[0]
                    pred = pred.reshape(106, 2) if pred.size == 212 else pred.reshape(-1, 3)[-68:, :2]
                    points = (torch.from_numpy(pred) + 1) * (LANDMARK_SIZE / 2)
                    (points.to(self.device) - mat[:, 2]) / s
            if len(kps):
                mats = _umeyama(kps, self.template)
                warp_affine(img[None].expand(len(kps), -1, -1, -1), mats, (self.crop_size, self.crop_size))
            found += len(boxes)
        return found
