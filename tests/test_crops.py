"""Aligned and box crop matrices against InsightFace and an independent DECA implementation.

Keypoints come from InsightFace's own SCRFD (det_500m) on real photographs.
"""

import doctest
from pathlib import Path

import cv2
import insightface
import numpy as np
import pytest
import torch
from insightface.model_zoo.scrfd import SCRFD
from insightface.utils import face_align
from skimage import data
from skimage.transform import SimilarityTransform, estimate_transform, warp

from facecrop.crop import core as crops
from facecrop.crop.core import TEMPLATE, align_crop_matrix, bbox_crop_matrix
from facecrop.geometry import warp_crops

DET_500M = Path("/work/shared/models/det_500m.onnx")

pytestmark = pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")  # inside insightface


@pytest.fixture(scope="module")
def photos():
    """name -> (RGB uint8 image, SCRFD keypoints [N, 5, 2] float32) for real photos."""
    if not DET_500M.exists():
        pytest.skip(f"SCRFD weights not found at {DET_500M}")
    detector = SCRFD(str(DET_500M))
    detector.prepare(-1, input_size=(640, 640))
    t1 = cv2.imread(str(Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"))  # BGR
    images = {"t1": cv2.cvtColor(t1, cv2.COLOR_BGR2RGB), "astronaut": data.astronaut()}
    out = {}
    for name, rgb in images.items():
        _, kps = detector.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))  # insightface wants BGR
        assert kps is not None and len(kps) >= 1
        out[name] = (rgb, kps.astype(np.float32))
    assert len(out["t1"][1]) == 6  # the group photo
    return out


def _frames(rgb):
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float()  # [1, 3, H, W]


def _to_uint8_hwc(crops):
    return crops.round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()  # [B, K, h, w, 3]


def test_template_is_insightface_arcface_dst():
    assert TEMPLATE.shape == (5, 2) and TEMPLATE.dtype == torch.float32
    np.testing.assert_array_equal(TEMPLATE.numpy(), face_align.arcface_dst)


@pytest.mark.parametrize("size", [112, 224])
def test_align_crop_matrix_matches_estimate_norm(photos, size):
    worst = worst64 = 0.0
    for rgb, kps in photos.values():
        mats, valid = align_crop_matrix(torch.from_numpy(kps).double(), size)
        assert mats.shape == (len(kps), 3, 3) and bool(valid.all())
        for mat, k in zip(mats, kps):
            # estimate_norm computes in float32 and translations reach hundreds of pixels, where
            # float32 resolves ~3e-5: the bound is relative to the matrix's largest entry.
            reference = face_align.estimate_norm(k, size)
            worst = max(worst, np.abs(mat[:2].numpy() - reference).max() / np.abs(reference).max())
            # skimage keeps part of its arithmetic in the float32 of insightface's
            # inputs; in float64 throughout the two agree to rounding.
            template = face_align.arcface_dst.astype(np.float64) * (size / 112.0)
            exact = SimilarityTransform.from_estimate(k.astype(np.float64), template)
            worst64 = max(worst64, np.abs(mat.numpy() - exact.params).max())
    print(f"\nalign_crop_matrix({size}) on SCRFD keypoints: max relative |diff| vs estimate_norm {worst:.2e}, "
          f"vs skimage in float64 {worst64:.2e}")
    assert worst < 1e-6
    assert worst64 < 1e-9


def test_align_crop_matrix_follows_spec_where_insightface_differs(photos):
    # For 256 (divisible by 128, not 112) insightface scales by 256/128 and shifts x
    # by 16 px; the SPEC scales the template by 256/112.
    kps = photos["astronaut"][1][0].astype(np.float64)
    mat, valid = align_crop_matrix(torch.from_numpy(kps), 256)
    spec = SimilarityTransform.from_estimate(kps, face_align.arcface_dst.astype(np.float64) * (256 / 112)).params
    np.testing.assert_allclose(mat.numpy(), spec, atol=1e-8)
    assert np.abs(mat[:2].numpy() - face_align.estimate_norm(kps, 256)).max() > 1.0


@pytest.mark.parametrize("size", [112, 224])
def test_aligned_crops_match_norm_crop(photos, size):
    for name, (rgb, kps) in photos.items():
        mats, _ = align_crop_matrix(torch.from_numpy(kps)[None], size)  # [1, N, 3, 3]
        ours = _to_uint8_hwc(warp_crops(_frames(rgb), mats, (size, size)))[0]
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        diffs = [
            np.abs(ours[j].astype(int) - face_align.norm_crop(bgr, k, image_size=size)[..., ::-1].astype(int))
            for j, k in enumerate(kps)
        ]
        mean, worst = float(np.mean([d.mean() for d in diffs])), int(max(d.max() for d in diffs))
        print(f"\naligned crop {size} vs norm_crop, {name} ({len(kps)} faces): "
              f"mean |diff| {mean:.4f}, max {worst} grey levels")
        assert mean <= 1.0


def test_align_crop_matrix_invalid_keypoints():
    kps = torch.stack([TEMPLATE * 3, torch.full((5, 2), 7.0), torch.full((5, 2), float("nan"))])
    mats, valid = align_crop_matrix(kps, 112)
    assert valid.tolist() == [True, False, False]
    assert torch.isfinite(mats).all()


def test_align_crop_matrix_bad_arguments():
    with pytest.raises(ValueError, match=r"output_size must be square .* got \(112, 96\)"):
        align_crop_matrix(TEMPLATE, (112, 96))
    with pytest.raises(ValueError, match=r"kps must have shape \(\.\.\., 5, 2\), got \(68, 2\)"):
        align_crop_matrix(torch.zeros(68, 2), 112)
    with pytest.raises(ValueError, match="output_size must be a positive int"):
        align_crop_matrix(TEMPLATE, 0)


def _deca_reference(lms, image, size):
    """DECA's box crop (decalib/datasets), straight from the SPEC, in NumPy/scikit-image."""
    left, right = np.min(lms[:, 0]), np.max(lms[:, 0])
    top, bottom = np.min(lms[:, 1]), np.max(lms[:, 1])
    old_size = (right - left + bottom - top) / 2 * 1.1
    center = np.array([right - (right - left) / 2.0, bottom - (bottom - top) / 2.0])
    side = old_size * 1.25
    src_pts = np.array([
        [center[0] - side / 2, center[1] - side / 2],
        [center[0] - side / 2, center[1] + side / 2],
        [center[0] + side / 2, center[1] - side / 2],
    ])
    dst_pts = np.array([[0, 0], [0, size - 1], [size - 1, 0]])
    tform = estimate_transform("similarity", src_pts, dst_pts)
    box = np.array([*src_pts[0], *(center + side / 2)])
    crop = warp(image.astype(np.float64), tform.inverse, output_shape=(size, size), order=1,
                mode="constant", cval=0.0, preserve_range=True)
    return box, tform.params, crop


def test_bbox_crop_matches_deca_reference(photos):
    rng = np.random.default_rng(0)
    for name, (rgb, kps) in photos.items():
        # 5 detector points and a dense, face-sized 106-point cloud per face.
        clouds = [k for k in kps] + [
            k.mean(0) + rng.normal(scale=np.ptp(k, axis=0).mean(), size=(106, 2)) for k in kps
        ]
        worst_box = worst_mat = worst_px = 0.0
        for lms in clouds:
            lms = lms.astype(np.float64)
            ref_box, ref_mat, ref_crop = _deca_reference(lms, rgb, 224)
            box, mat = bbox_crop_matrix(torch.from_numpy(lms), 224)
            worst_box = max(worst_box, np.abs(box.numpy() - ref_box).max())
            worst_mat = max(worst_mat, np.abs(mat.numpy() - ref_mat).max())
            ours = warp_crops(_frames(rgb).double(), mat[None, None], (224, 224))[0, 0].permute(1, 2, 0)
            worst_px = max(worst_px, np.abs(ours.numpy() - ref_crop).max())
        print(f"\nbox crop vs NumPy DECA, {name} ({len(clouds)} landmark sets): max |diff| box {worst_box:.2e} px, "
              f"matrix {worst_mat:.2e}, crop {worst_px:.2e} grey levels (float)")
        assert worst_box < 1e-9 and worst_mat < 1e-9
        assert worst_px < 1e-3


def test_bbox_crop_float32_uint8_matches_deca_reference(photos):
    rgb, kps = photos["t1"]
    box, mats = bbox_crop_matrix(torch.from_numpy(kps)[None], (224, 224))  # [1, 6, 4], [1, 6, 3, 3]
    assert box.shape == (1, 6, 4) and mats.shape == (1, 6, 3, 3)
    ours = _to_uint8_hwc(warp_crops(_frames(rgb), mats, (224, 224)))[0]
    diffs = [
        np.abs(ours[j].astype(int) - np.round(_deca_reference(k.astype(np.float64), rgb, 224)[2]).astype(int))
        for j, k in enumerate(kps)
    ]
    mean, worst = float(np.mean([d.mean() for d in diffs])), int(max(d.max() for d in diffs))
    print(f"\nbox crop float32 -> uint8 vs NumPy DECA, t1: mean |diff| {mean:.4f}, max {worst} grey levels")
    assert mean <= 1.0


def test_bbox_crop_degenerate_landmarks_give_invertible_matrix():
    box, mat = bbox_crop_matrix(torch.zeros(3, 68, 2), 224)  # all-zero padding rows
    assert torch.isfinite(mat).all() and torch.isfinite(box).all()
    assert (torch.linalg.det(mat) > 0).all()
    assert (box[:, 2:] > box[:, :2]).all()


def test_bbox_crop_matrix_bad_arguments():
    with pytest.raises(ValueError, match=r"output_size must be square"):
        bbox_crop_matrix(torch.rand(68, 2), (224, 200))
    with pytest.raises(ValueError, match=r"lms must have shape \(\.\.\., L, 2\), got \(68, 3\)"):
        bbox_crop_matrix(torch.rand(68, 3), 224)
    with pytest.raises(TypeError, match="lms must be a torch.Tensor"):
        bbox_crop_matrix(np.zeros((68, 2)), 224)


class _Align(torch.nn.Module):
    def forward(self, kps):
        return align_crop_matrix(kps, 112)


class _Box(torch.nn.Module):
    def forward(self, lms):
        return bbox_crop_matrix(lms, 224)


@pytest.mark.parametrize("module, shape", [(_Align(), (2, 4, 5, 2)), (_Box(), (2, 4, 106, 2))], ids=["align", "bbox"])
def test_crop_matrices_pass_torch_export(module, shape):
    torch.manual_seed(0)
    args = (torch.rand(shape) * 400,)
    ep = torch.export.export(module, args)
    for got, want in zip(ep.module()(*args), module(*args)):
        torch.testing.assert_close(got, want)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(*args), module(*args)):
        torch.testing.assert_close(got, want)


class _AlignAndWarp(torch.nn.Module):
    def forward(self, frames, kps):
        crop_mat, valid = align_crop_matrix(kps, 112)
        return warp_crops(frames, crop_mat, (112, 112)), crop_mat, valid


@pytest.mark.slow
def test_align_and_warp_compile_with_inductor(photos):
    rgb, kps = photos["t1"]
    frames = _frames(rgb).repeat(2, 1, 1, 1)  # [2, 3, H, W]
    kps = torch.from_numpy(kps).expand(2, -1, -1, -1).clone()
    kps[1] = kps[1].flip(0)  # a second frame with the faces in another order
    compiled = torch.compile(_AlignAndWarp(), fullgraph=True)
    crops32, mat32, valid = compiled(frames, kps)
    crops64, mat64, _ = _AlignAndWarp()(frames.double(), kps.double())
    crop_err = (crops32.double() - crops64).abs().max().item()
    print(f"\ninductor float32 align+warp vs eager float64: max |diff| crops {crop_err:.2e} grey levels, "
          f"matrix {(mat32.double() - mat64).abs().max().item():.2e}")
    assert bool(valid.all())
    assert crop_err < 0.05  # float32 sampling positions, as in eager float32


def test_docstring_examples():
    result = doctest.testmod(crops, extraglobs={"torch": torch})
    assert result.attempted >= 3 and result.failed == 0
