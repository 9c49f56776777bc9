"""SCRFD face detection as static-shape tensor functions.

Every function here works on whole batches with shapes fixed by the frame size,
the detector input size and ``max_faces``, so the same code serves the eager
Medusa-compatible :class:`facecrop.SCRFDetector` and the fused, compiled
end-to-end module.

Conventions: frames are RGB ``[B, 3, H, W]`` with values 0-255; points are
``(x, y)`` pixels, boxes ``(x1, y1, x2, y2)``. Detector input sizes are
``(width, height)`` as in InsightFace.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from facecrop.convert import ConvertedNet, convert_onnx, load_onnx
from facecrop.detect.letterbox import letterbox


@dataclass(frozen=True)
class SCRFDConfig:
    """What an SCRFD file is, read once from its outputs at the detector input size.

    Attributes:
        strides: feature strides, e.g. ``(8, 16, 32)``.
        num_anchors: anchors per feature-map cell (2 for the official files).
        score_outputs, bbox_outputs, kps_outputs: per stride, the index of the
            network output holding scores ``[N, 1]``, box distances ``[N, 4]``
            and keypoint offsets ``[N, 10]``.
        input_mean, input_std: input normalisation ``(x - mean) / std``; every
            official SCRFD export uses 127.5 and 128.
    """

    strides: tuple[int, ...]
    num_anchors: int
    score_outputs: tuple[int, ...]
    bbox_outputs: tuple[int, ...]
    kps_outputs: tuple[int, ...]
    input_mean: float = 127.5
    input_std: float = 128.0


def read_scrfd_config(output_shapes: list[tuple[int, ...]], det_size: tuple[int, int]) -> SCRFDConfig:
    """Derive an :class:`SCRFDConfig` from the network's output shapes at ``det_size``.

    Args:
        output_shapes: per output, its shape for one image, ``[1, N, C]`` or ``[N, C]``.
        det_size: detector input ``(width, height)``.

    Raises:
        ValueError: the outputs are not those of an SCRFD detector with keypoints.
    """
    width, height = det_size
    expected = ("an SCRFD detector with keypoints: per stride three outputs, scores [N, 1], "
                "box distances [N, 4] and keypoint offsets [N, 10]")
    by_channels: dict[int, list[tuple[int, int]]] = {1: [], 4: [], 10: []}
    for index, shape in enumerate(output_shapes):
        if len(shape) not in (2, 3) or shape[-1] not in by_channels:
            raise ValueError(f"expected {expected}; output {index} has shape {tuple(shape)}")
        by_channels[shape[-1]].append((shape[-2], index))
    counts = {c: len(v) for c, v in by_channels.items()}
    if len(set(counts.values())) != 1 or counts[1] == 0:
        raise ValueError(f"expected {expected}; got output shapes {[tuple(s) for s in output_shapes]}")
    for entries in by_channels.values():
        entries.sort(key=lambda e: -e[0])  # finest stride (most anchors) first
    rows = [n for n, _ in by_channels[1]]
    if [n for n, _ in by_channels[4]] != rows or [n for n, _ in by_channels[10]] != rows:
        raise ValueError(f"expected {expected}; score/box/keypoint anchor counts differ: {output_shapes}")
    for num_anchors in (1, 2):
        strides = []
        for n in rows:
            cells = n // num_anchors
            stride = round((width * height / max(cells, 1)) ** 0.5)
            if cells * num_anchors != n or (width // stride) * (height // stride) != cells:
                break
            strides.append(stride)
        else:
            return SCRFDConfig(
                strides=tuple(strides),
                num_anchors=num_anchors,
                score_outputs=tuple(i for _, i in by_channels[1]),
                bbox_outputs=tuple(i for _, i in by_channels[4]),
                kps_outputs=tuple(i for _, i in by_channels[10]),
            )
    raise ValueError(f"expected {expected}; anchor counts {rows} match no stride layout at {width}x{height}")


def as_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Frames as uint8: float frames (0-255, e.g. Medusa's float32 loader) are rounded and clamped.

    InsightFace only ever sees uint8 frames, so this is where its numbers come from.
    """
    if frames.dtype == torch.uint8:
        return frames
    return frames.round().clamp(0, 255).to(torch.uint8)


def preprocess(frames: torch.Tensor, det_size: tuple[int, int], config: SCRFDConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Letterbox (at the frames' own size, see :func:`facecrop.detect.letterbox.letterbox`) and normalise.

    Args:
        frames: RGB ``[B, 3, H, W]``, uint8 or float in 0-255; H and W may be symbolic.
        det_size: detector input ``(width, height)``.

    Returns:
        ``(inputs, det_scale)``: float ``[B, 3, det_h, det_w]`` and the float32 scalar
        resize factor (canvas pixels per frame pixel).
    """
    canvas, det_scale = letterbox(as_uint8(frames), det_size)
    # InsightFace normalises the whole canvas: its zero padding becomes (0 - mean) / std, not 0.
    return (canvas.float() - config.input_mean) / config.input_std, det_scale


def anchor_centers(height: int, width: int, stride: int, num_anchors: int) -> torch.Tensor:
    """Anchor centres of one stride, ``[(h // s) * (w // s) * num_anchors, 2]`` as ``(x, y)``.

    Rows are in raster order with each cell repeated ``num_anchors`` times.
    """
    rows, cols = height // stride, width // stride
    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    centers = torch.stack([xs, ys], dim=-1).reshape(-1, 2).float() * stride
    return centers.repeat_interleave(num_anchors, dim=0)


def decode_scrfd(
    outputs: tuple[torch.Tensor, ...], anchors: list[torch.Tensor], config: SCRFDConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turn SCRFD outputs into scores, boxes and keypoints in detector-input pixels.

    Args:
        outputs: the network outputs, each ``[B, ..., C]`` (C = 1, 4 or 10).
        anchors: per stride, the ``[N_s, 2]`` anchor centres.

    Returns:
        scores ``[B, N]``, boxes ``[B, N, 4]``, keypoints ``[B, N, 5, 2]`` with
        ``N = sum(N_s)``.
    """
    scores, boxes, kps = [], [], []
    for s, stride in enumerate(config.strides):
        batch = outputs[config.score_outputs[s]].shape[0]
        centers = anchors[s]  # [N_s, 2]
        scores.append(outputs[config.score_outputs[s]].reshape(batch, -1))
        dist = outputs[config.bbox_outputs[s]].reshape(batch, -1, 4) * stride
        boxes.append(torch.cat([centers - dist[..., :2], centers + dist[..., 2:]], dim=-1))
        offsets = outputs[config.kps_outputs[s]].reshape(batch, -1, 5, 2) * stride
        kps.append(centers[:, None, :] + offsets)
    return torch.cat(scores, 1), torch.cat(boxes, 1), torch.cat(kps, 1)


def _iou_one_to_many(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """IoU of ``box [B, 4]`` with each of ``boxes [B, T, 4]`` -> ``[B, T]``.

    torchvision's convention (areas without InsightFace's "+1"), as Medusa uses
    ``torchvision.ops.nms``; the two differ only for boxes a few pixels wide.
    """
    box = box[:, None, :]
    top_left = torch.maximum(box[..., :2], boxes[..., :2])
    bottom_right = torch.minimum(box[..., 2:], boxes[..., 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    area_a = (box[..., 2:] - box[..., :2]).prod(-1)
    area_b = (boxes[..., 2:] - boxes[..., :2]).prod(-1)
    return inter / (area_a + area_b - inter)


def select_faces(
    scores: torch.Tensor,
    boxes: torch.Tensor,
    kps: torch.Tensor,
    det_threshold: float,
    nms_threshold: float,
    max_faces: int,
    pre_nms_topk: int = 1000,
) -> dict[str, torch.Tensor]:
    """Score threshold, pre-NMS top-k and greedy NMS with a fixed number of outputs.

    Greedy NMS picks, again and again, the best box not yet suppressed; running
    that pick ``max_faces`` times gives exactly the first ``max_faces`` boxes of
    ``torchvision.ops.nms`` with fixed-size tensor ops only (no data-dependent
    shapes), so it compiles, exports and can be replayed in a CUDA graph.

    Args:
        scores: ``[B, N]``; boxes: ``[B, N, 4]``; kps: ``[B, N, 5, 2]``.
        det_threshold: keep scores ``>=`` this.
        nms_threshold: suppress boxes whose IoU with a kept box is ``>`` this.
        max_faces: K, faces kept per frame.
        pre_nms_topk: candidates considered per frame (the highest scores).

    Returns:
        dict with ``valid [B, K]`` bool, ``conf [B, K]``, ``bbox [B, K, 4]``,
        ``lms [B, K, 5, 2]`` (best first, padding rows zero and invalid) and
        ``overflow [B]`` bool: faces were left out because K was too small.
    """
    topk = min(pre_nms_topk, scores.shape[1])
    cand_scores, order = scores.topk(topk, dim=1)  # [B, T]
    cand_boxes = boxes.gather(1, order[..., None].expand(-1, -1, 4))  # [B, T, 4]
    cand_kps = kps.gather(1, order[..., None, None].expand(-1, -1, 5, 2))  # [B, T, 5, 2]
    alive = cand_scores >= det_threshold  # [B, T]

    def picks(rounds: int, alive: torch.Tensor, cand_scores: torch.Tensor, cand_boxes: torch.Tensor):
        """``rounds`` greedy picks: ``(index [B, rounds], valid [B, rounds], alive [B, T])``."""
        positions = torch.arange(cand_scores.shape[1], device=cand_scores.device)
        index, is_valid = [], []
        for _ in range(rounds):
            best = torch.where(alive, cand_scores, -1.0).argmax(dim=1)  # [B]
            is_valid.append(alive.gather(1, best[:, None])[:, 0])  # [B]
            best_box = cand_boxes.gather(1, best[:, None, None].expand(-1, 1, 4))[:, 0]  # [B, 4]
            suppressed = _iou_one_to_many(best_box, cand_boxes) > nms_threshold
            alive = alive & ~suppressed & (positions[None, :] != best[:, None])
            index.append(best)
        return torch.stack(index, 1), torch.stack(is_valid, 1), alive

    def none_left(rounds: int, alive: torch.Tensor, cand_scores: torch.Tensor, cand_boxes: torch.Tensor):
        """What ``picks`` gives when no box is alive: index 0, never valid (``alive`` copied: a branch
        of ``torch.cond`` may not return its input)."""
        shape = (alive.shape[0], rounds)
        return alive.new_zeros(shape, dtype=torch.int64), alive.new_zeros(shape), alive.clone()

    def branches(rounds: int):
        return (lambda *args: picks(rounds, *args)), (lambda *args: none_left(rounds, *args))

    # Compiled, the picks come in rounds of 8 and a round runs only while a box is left: at 1-6 faces
    # a frame, K = 32 costs what K = 8 does (one round; 32 unrolled picks made the 480p module 7%
    # slower). Eager and traced modules (TorchScript would record one branch) pick K times.
    rounds = [max_faces] if not torch.compiler.is_compiling() else [min(8, max_faces - i) for i in range(0, max_faces, 8)]
    index, valid, alive = picks(rounds[0], alive, cand_scores, cand_boxes)
    index, valid = [index], [valid]
    for n in rounds[1:]:
        more = torch.cond(alive.any(), *branches(n), (alive, cand_scores, cand_boxes))
        index.append(more[0])
        valid.append(more[1])
        alive = more[2]
    index, valid = torch.cat(index, 1), torch.cat(valid, 1)  # [B, K]

    mask = valid.to(scores.dtype)
    conf = cand_scores.gather(1, index) * mask
    bbox = cand_boxes.gather(1, index[..., None].expand(-1, -1, 4)) * mask[..., None]
    lms = cand_kps.gather(1, index[..., None, None].expand(-1, -1, 5, 2)) * mask[..., None, None]
    return {"valid": valid, "conf": conf, "bbox": bbox, "lms": lms, "overflow": alive.any(dim=1)}


class SCRFDHead(nn.Module):
    """SCRFD detection with static shapes: frames in, ``max_faces`` padded faces out.

    Args:
        model_path: path to an SCRFD ONNX file with keypoints.
        det_size: detector input ``(width, height)``.
        det_threshold, nms_threshold, max_faces, pre_nms_topk: see :func:`select_faces`.

    ``forward(frames)``: RGB ``[B, 3, H, W]`` (0-255, uint8 or float) -> the dict
    of :func:`select_faces`, coordinates in frame pixels.
    """

    def __init__(
        self,
        model_path,
        det_size: tuple[int, int] = (224, 224),
        det_threshold: float = 0.3,
        nms_threshold: float = 0.3,
        max_faces: int = 32,
        pre_nms_topk: int = 1000,
    ):
        super().__init__()
        det_w, det_h = det_size
        self.net: ConvertedNet = convert_onnx(load_onnx(model_path), det_h, det_w)
        with torch.no_grad():
            shapes = [tuple(o.shape[1:]) for o in self.net(torch.zeros(1, 3, det_h, det_w))]
        self.config = read_scrfd_config(shapes, det_size)
        self.det_size = (int(det_w), int(det_h))
        self.det_threshold = float(det_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_faces = int(max_faces)
        self.pre_nms_topk = int(pre_nms_topk)
        for s, stride in enumerate(self.config.strides):
            self.register_buffer(f"anchors_{s}", anchor_centers(det_h, det_w, stride, self.config.num_anchors), persistent=False)

    def anchors(self) -> list[torch.Tensor]:
        return [getattr(self, f"anchors_{s}") for s in range(len(self.config.strides))]

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        inputs, det_scale = preprocess(frames, self.det_size, self.config)
        scores, boxes, kps = decode_scrfd(self.net(inputs), self.anchors(), self.config)
        faces = select_faces(scores, boxes, kps, self.det_threshold, self.nms_threshold,
                             self.max_faces, self.pre_nms_topk)
        faces["bbox"] = faces["bbox"] / det_scale
        faces["lms"] = faces["lms"] / det_scale
        return faces

    def extra_repr(self) -> str:
        return (f"det_size={self.det_size}, det_threshold={self.det_threshold}, "
                f"nms_threshold={self.nms_threshold}, max_faces={self.max_faces}, config={self.config}")
