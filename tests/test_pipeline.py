"""The end-to-end FacePipeline: export, compile, and frame-by-frame equality with the eager classes."""

from __future__ import annotations

import pytest
import torch

from benchmarks.photos import astronaut_rgb, rotate, t1_rgb
from conftest import real_model
from facecrop import AlignCropModel, BboxCropModel, RetinafaceLandmarkModel, SCRFDetector
from facecrop.pipeline import FacePipeline, build_pipeline
from facecrop.pipeline_config import PipelineConfig
from facecrop.testing import build_landmark_onnx

# Four frames of one size with 6, 4, 1 and 0 faces.
_T1 = t1_rgb()[:720, :1280]


def _frames() -> torch.Tensor:
    import numpy as np

    astro = np.zeros_like(_T1)
    astro[:512, :512] = astronaut_rgb()
    frames = [_T1, rotate(_T1, 30), astro, np.zeros_like(_T1)]
    return torch.stack([torch.from_numpy(f).permute(2, 0, 1) for f in frames])


FRAMES = _frames()
PIPELINES = ["detector", "align", "landmarks", "bbox"]


@pytest.fixture(scope="module")
def landmark_path(tmp_path_factory):
    return build_landmark_onnx(tmp_path_factory.mktemp("lmk") / "2d106det.onnx", kind="2d106det")


def _eager_and_fused(kind: str, landmark_path):
    detector = SCRFDetector(model_path=str(real_model("det_500m")), det_size=(224, 224), max_faces=8)
    if kind == "detector":
        eager = detector
        fused = FacePipeline(detector.head)
    elif kind == "align":
        eager = AlignCropModel(output_size=(112, 112), detector=detector)
        fused = eager.pipeline
    elif kind == "landmarks":
        eager = RetinafaceLandmarkModel(str(landmark_path), detector=detector)
        fused = eager.pipeline
    else:
        eager = BboxCropModel(str(landmark_path), output_size=(224, 224), detector=detector)
        fused = eager.pipeline
    return eager, fused.eval()


def _check_same(padded: dict, ragged: dict, atol: float = 1e-3, crops: bool = True) -> None:
    """Padded per-frame outputs equal the eager rows, frame by frame (``crops``: compare the crops too)."""
    if "img_idx" not in ragged:  # Medusa's no-face output: n_img alone, the class's keys set to None
        assert not padded["valid"].any()
        assert all(v is None for k, v in ragged.items() if k != "n_img")
        return
    frame, slot = padded["valid"].nonzero(as_tuple=True)
    assert frame.tolist() == ragged["img_idx"].tolist()
    for key in ("conf", "bbox", "lms") + (("crop_mat",) if crops else ()):
        if key in ragged:
            # crop_mat's translations reach ~1000: a relative part keeps the bound at the values' magnitude.
            rtol = 1e-4 if key == "crop_mat" and atol > 1e-3 else 0
            torch.testing.assert_close(padded[key][frame, slot], ragged[key], rtol=rtol, atol=atol)
    if crops and "imgs_crop" in ragged:
        diff = (padded["imgs_crop"][frame, slot].int() - ragged["imgs_crop"].int()).abs()
        if diff.numel():
            # Crops are judged by mean grey level; where the crop matrix comes from landmarks
            # that moved ~0.01 px (see below), single edge pixels can move by 2.
            assert diff.float().mean() <= 1.0
            assert diff.max() <= (1 if atol <= 1e-3 else 4)
    # Padding rows are zero and invalid.
    invalid = ~padded["valid"]
    if invalid.any():
        for key in ("conf", "bbox", "lms"):
            assert padded[key][invalid].abs().max() == 0


@pytest.mark.parametrize("kind", PIPELINES)
def test_exported_pipeline_equals_eager_frame_by_frame(kind, landmark_path):
    eager, fused = _eager_and_fused(kind, landmark_path)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(fused, (FRAMES[:2],), dynamic_shapes=({0: batch},))
    with torch.no_grad():
        outputs = program.module()(FRAMES)
    padded = dict(zip(fused.output_names, outputs))
    assert padded["valid"].sum(1).tolist() == [6, 4, 1, 0]
    for i in range(len(FRAMES)):
        single = {k: v[i : i + 1] for k, v in padded.items()}
        # Landmark crops are rounded to uint8 like InsightFace's (see LandmarkHead), which turns
        # 1e-6 batch-size differences in the convolutions into ~0.01 px landmark differences.
        # The landmark model's own crops are the net's 192x192 inputs, which the fused module keeps inside.
        _check_same(single, eager(FRAMES[i]), atol=0.05 if kind in ("landmarks", "bbox") else 1e-3,
                    crops=kind != "landmarks")


def test_exported_crops_sample_only_the_slots_in_use(landmark_path):
    """Exported, 1, 2 or 4 crops a frame or all K slots are sampled (torch.cond on the faces found): same crops as eager."""
    _, fused = _eager_and_fused("align", landmark_path)
    program = torch.export.export(fused, (FRAMES[:2],), dynamic_shapes=({0: torch.export.Dim("batch", max=64)},))
    assert any(node.target is torch.ops.higher_order.cond for node in program.graph.nodes)
    with torch.no_grad():
        # Faces per frame 1+0, 4+1+0, 4+1, 6+4+1+0, 6+4 and 6 at batch 1: each branch, with valid
        # faces in slots that are not the first ones of the batch (the packing matters).
        for frames, faces, branch in ((FRAMES[2:4], 1, 1), (FRAMES[1:4], 5, 2), (FRAMES[1:3], 5, 4),
                                      (FRAMES, 11, 4), (FRAMES[:2], 10, 8), (FRAMES[:1], 6, 8)):
            out = dict(zip(fused.output_names, program.module()(frames)))
            want = fused.forward_dict(frames)
            assert int(out["valid"].sum()) == faces
            assert branch == next((m for m in (1, 2, 4) if faces <= m * len(frames)), 8)  # the case takes that branch
            assert torch.equal(out["imgs_crop"], want["imgs_crop"]) and torch.equal(out["valid"], want["valid"])


def test_pipeline_shapes_and_dtypes(landmark_path):
    _, fused = _eager_and_fused("bbox", landmark_path)
    with torch.no_grad():
        out = fused.forward_dict(FRAMES)
    k = 8
    assert out["valid"].shape == (4, k) and out["valid"].dtype == torch.bool
    assert out["bbox"].shape == (4, k, 4)
    assert out["lms"].shape == (4, k, 106, 2)
    assert out["crop_mat"].shape == (4, k, 3, 3)
    assert out["imgs_crop"].shape == (4, k, 3, 224, 224) and out["imgs_crop"].dtype == torch.uint8
    # The box crop's square box: equal sides.
    box = out["bbox"][out["valid"]]
    torch.testing.assert_close(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])


@pytest.mark.slow
def test_pipeline_compiles_fullgraph(landmark_path):
    _, fused = _eager_and_fused("align", landmark_path)
    torch._dynamo.reset()
    compiled = torch.compile(fused, fullgraph=True)
    with torch.no_grad():
        got, want = compiled(FRAMES[:2]), fused(FRAMES[:2])
    for name, a, b in zip(fused.output_names, got, want):
        if a.dtype == torch.uint8:
            assert (a.int() - b.int()).abs().max() <= 1, name
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-3, msg=name)


def test_build_pipeline_from_config(landmark_path):
    config = PipelineConfig(detector=str(real_model("det_500m")), landmarks=str(landmark_path), crop="bbox",
                            max_faces=4)
    fused = build_pipeline(config)
    assert fused.output_names == ("valid", "conf", "bbox", "lms", "overflow", "crop_mat", "imgs_crop")
    with torch.no_grad():
        assert fused.forward_dict(FRAMES[:1])["valid"].sum() == 4  # six faces, K = 4
    with pytest.raises(ValueError, match="needs landmarks"):
        build_pipeline(PipelineConfig(detector=str(real_model("det_500m")), crop="bbox"))


@pytest.mark.parametrize("shape, dtype, error, message", [
    ((1, 3, 15, 320), torch.uint8, ValueError, "frame size 320x15 is outside 16 to 4096"),
    ((1, 3, 1, 1), torch.uint8, ValueError, "frame size 1x1 is outside"),
    ((1, 3, 240, 4097), torch.float32, ValueError, "frame size 4097x240 is outside"),
    ((0, 3, 64, 64), torch.uint8, ValueError, r"shape \[B, 3, H, W\]"),
    ((1, 4, 64, 64), torch.uint8, ValueError, r"shape \[B, 3, H, W\]"),
    ((1, 3, 64, 64), torch.int32, TypeError, "uint8 or float"),
])
def test_module_refuses_bad_frames_naming_them(landmark_path, shape, dtype, error, message):
    _, fused = _eager_and_fused("align", landmark_path)
    with pytest.raises(error, match=message):
        fused(torch.zeros(shape, dtype=dtype))
