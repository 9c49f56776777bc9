"""facecrop.geometry against scikit-image, InsightFace, kornia and OpenCV."""

import doctest

import cv2
import numpy as np
import pytest
import torch
from insightface.utils import face_align
from kornia.geometry.transform import warp_affine
from skimage import data
from skimage.transform import SimilarityTransform

from facecrop import geometry
from facecrop.geometry import estimate_similarity, transform_points, warp_crops


def _skimage_similarity(src, dst):
    return SimilarityTransform.from_estimate(np.asarray(src, np.float64), np.asarray(dst, np.float64)).params


def _similarity(scale, angle, tx, ty):
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]])


def _apply(mat, pts):
    return pts @ mat[:2, :2].T + mat[:2, 2]


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()  # (512, 512, 3) uint8 RGB


# --- estimate_similarity -----------------------------------------------------------------


def _float32_error(mat32, ref, src, dst):
    """float32 error as a fraction of the magnitudes involved (a few float32 ulps)."""
    mat32 = mat32.double().numpy()
    linear = np.abs(mat32[:2, :2] - ref[:2, :2]).max() / np.abs(ref[:2, :2]).max()
    # Mapped points come out as (linear @ src) + translation, so rounding scales with the larger.
    magnitude = max(1.0, np.abs(dst).max(), np.abs(ref[:2, 2]).max())
    mapped = np.abs(_apply(mat32, src) - _apply(ref, src)).max() / magnitude
    return max(linear, mapped)


@pytest.mark.parametrize("mirror", [False, True], ids=["plain", "reflection-favoured"])
def test_estimate_similarity_matches_skimage(mirror):
    rng = np.random.default_rng(0)
    worst64 = worst32 = 0.0
    for _ in range(100):
        n = int(rng.integers(2, 12))
        src = rng.uniform(0, 1280, size=(n, 2)).astype(np.float32).astype(np.float64)
        dst = _apply(_similarity(rng.uniform(0.05, 3), rng.uniform(-np.pi, np.pi), *rng.uniform(-300, 300, 2)), src)
        dst += rng.normal(scale=rng.uniform(0, 30), size=dst.shape)
        if mirror:
            # Mirrored targets: the unconstrained best fit is a reflection, which
            # Umeyama's det correction must turn down.
            dst[:, 0] = -dst[:, 0]
        dst = dst.astype(np.float32).astype(np.float64)  # so float32 inputs are the same points
        ref = _skimage_similarity(src, dst)
        mat, valid = estimate_similarity(torch.from_numpy(src), torch.from_numpy(dst))
        assert valid.item() and mat.dtype == torch.float64
        assert np.linalg.det(mat[:2, :2].numpy()) > 0
        worst64 = max(worst64, np.abs(mat.numpy() - ref).max())
        mat32, valid32 = estimate_similarity(torch.from_numpy(src).float(), torch.from_numpy(dst).float())
        assert valid32.item() and mat32.dtype == torch.float32
        worst32 = max(worst32, _float32_error(mat32, ref, src, dst))
    print(f"\nestimate_similarity vs skimage ({'mirrored' if mirror else 'plain'}): "
          f"float64 max |diff| {worst64:.2e}; float32 max relative error {worst32:.2e}")
    assert worst64 < 1e-8
    # In float32 an absolute 1e-4 is below one ulp of translations over 1024 px, so
    # the float32 check is relative: 1e-6 is about 8 ulps.
    assert worst32 < 1e-6


@pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")  # inside insightface
def test_estimate_similarity_matches_insightface_estimate_norm():
    rng = np.random.default_rng(1)
    worst64 = worst32 = 0.0
    template = face_align.arcface_dst.astype(np.float64)
    for _ in range(50):
        # Face-like keypoints: the template under a random similarity plus jitter.
        truth = _similarity(rng.uniform(0.3, 4), rng.uniform(-0.6, 0.6), *rng.uniform(0, 800, 2))
        kps = (_apply(truth, template) + rng.normal(scale=2, size=(5, 2))).astype(np.float32)
        # (2, 3); skimage keeps part of the arithmetic in the float32 of its inputs,
        # so this reference itself carries ~1e-5 of rounding.
        ref = face_align.estimate_norm(kps, 112)
        template64 = torch.from_numpy(face_align.arcface_dst).double()
        mat, valid = estimate_similarity(torch.from_numpy(kps).double(), template64)
        assert valid.item()
        worst64 = max(worst64, np.abs(mat[:2].numpy() - ref).max())
        mat32, _ = estimate_similarity(torch.from_numpy(kps), torch.from_numpy(face_align.arcface_dst))
        worst32 = max(worst32, _float32_error(mat32, np.vstack([ref, [0, 0, 1]]), kps.astype(np.float64), template))
    print(f"\nestimate_similarity vs insightface estimate_norm: float64 max |diff| {worst64:.2e}; "
          f"float32 max relative error {worst32:.2e}")
    assert worst64 < 1e-4
    assert worst32 < 1e-6


def test_estimate_similarity_batched_and_broadcast():
    rng = np.random.default_rng(2)
    src = torch.from_numpy(rng.uniform(0, 500, size=(2, 3, 7, 2)))
    dst = torch.from_numpy(rng.uniform(0, 100, size=(7, 2)))  # broadcast over (2, 3)
    mat, valid = estimate_similarity(src, dst)
    assert mat.shape == (2, 3, 3, 3) and valid.shape == (2, 3) and bool(valid.all())
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(mat[i, j].numpy(), _skimage_similarity(src[i, j], dst), atol=1e-9)


def test_estimate_similarity_integer_input_gives_float32():
    src = torch.tensor([[0, 0], [10, 0], [0, 10]])
    mat, valid = estimate_similarity(src, src * 2)
    assert mat.dtype == torch.float32 and valid.item()
    torch.testing.assert_close(mat, torch.diag(torch.tensor([2.0, 2.0, 1.0])))


def test_estimate_similarity_degenerate_inputs_are_invalid_identity():
    good_src = torch.tensor([[10.0, 20.0], [50.0, 22.0], [30.0, 60.0], [12.0, 70.0]])
    good_dst = good_src * 0.5 + 3
    same = torch.full((4, 2), 123.456)
    nan_src = good_src.clone()
    nan_src[2, 1] = float("nan")
    inf_dst = good_dst.clone()
    inf_dst[0, 0] = float("inf")
    # Both point sets spread out, yet sum(q p^T) = 0: the best scale is 0.
    cross_src = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    cross_dst = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])
    assert not SimilarityTransform.from_estimate(cross_src.numpy(), cross_dst.numpy())  # skimage fails too
    src = torch.stack([good_src, same, nan_src, good_src, good_src, cross_src, torch.zeros(4, 2)])
    dst = torch.stack([good_dst, good_dst, good_dst, inf_dst, same, cross_dst, good_dst])
    mat, valid = estimate_similarity(src, dst)
    assert valid.tolist() == [True, False, False, False, False, False, False]
    assert torch.isfinite(mat).all()
    torch.testing.assert_close(mat[1:], torch.eye(3).expand(6, 3, 3))
    # The degenerate rows did not disturb the good one.
    np.testing.assert_allclose(mat[0].double().numpy(), _skimage_similarity(good_src, good_dst), atol=1e-5)


def test_estimate_similarity_nearly_equal_points_are_invalid():
    # float32 rounding residue of equal points must not pass as a (huge-scale) fit.
    src = torch.full((5, 2), 1234.567, dtype=torch.float32) + torch.tensor([1e-4, 0, 0, 0, 0]).unsqueeze(-1)
    _, valid = estimate_similarity(src, torch.rand(5, 2) * 100)
    assert not valid.item()


def test_estimate_similarity_bad_arguments():
    with pytest.raises(ValueError, match=r"src must have shape \(\.\.\., N, 2\), got \(5, 3\)"):
        estimate_similarity(torch.zeros(5, 3), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="same number of points"):
        estimate_similarity(torch.zeros(5, 2), torch.zeros(4, 2))
    with pytest.raises(TypeError, match="dst must be a torch.Tensor, got ndarray"):
        estimate_similarity(torch.zeros(5, 2), np.zeros((5, 2)))


# --- transform_points --------------------------------------------------------------------


def test_transform_points_matches_numpy_and_inverts():
    rng = np.random.default_rng(3)
    mats = np.stack([_similarity(rng.uniform(0.2, 3), rng.uniform(-3, 3), *rng.uniform(-99, 99, 2)) for _ in range(6)])
    mats[:, 0, 1] += rng.normal(size=6)  # general affine, not only similarities
    pts = rng.uniform(0, 640, size=(6, 9, 2))
    out = transform_points(torch.from_numpy(mats), torch.from_numpy(pts))
    assert out.shape == (6, 9, 2)
    np.testing.assert_allclose(out.numpy(), np.stack([_apply(m, p) for m, p in zip(mats, pts)]), atol=1e-10)
    back = transform_points(torch.from_numpy(np.linalg.inv(mats)), out)
    np.testing.assert_allclose(back.numpy(), pts, atol=1e-8)
    # One matrix broadcast over a batch of point sets.
    out2 = transform_points(torch.from_numpy(mats[0]), torch.from_numpy(pts))
    np.testing.assert_allclose(out2.numpy(), np.stack([_apply(mats[0], p) for p in pts]), atol=1e-10)


def test_transform_points_bad_arguments():
    with pytest.raises(ValueError, match=r"mat must have shape \(\.\.\., 3, 3\), got \(2, 3\)"):
        transform_points(torch.eye(2, 3), torch.zeros(4, 2))
    with pytest.raises(TypeError, match="mat must be a floating-point tensor, got torch.int64"):
        transform_points(torch.eye(3, dtype=torch.long), torch.zeros(4, 2))


# --- warp_crops --------------------------------------------------------------------------


def _random_crop_mats(rng, batch, k, size, frame_hw):
    """Image -> crop similarities centred somewhere on (or partly off) the frame."""
    h, w = frame_hw
    mats = np.empty((batch, k, 3, 3))
    for b in range(batch):
        for j in range(k):
            side = rng.uniform(20, 300)
            centre = rng.uniform(-30, [w + 30, h + 30])
            to_origin = _similarity(1.0, 0.0, *(-centre))
            rot_scale = _similarity(size / side, rng.uniform(-0.8, 0.8), size / 2, size / 2)
            mats[b, j] = rot_scale @ to_origin
    return mats


def test_warp_crops_matches_kornia_warp_affine(astronaut):
    rng = np.random.default_rng(4)
    frames = torch.from_numpy(np.stack([astronaut, astronaut[::-1, ::-1].copy()])).permute(0, 3, 1, 2).double()
    size = (72, 64)
    mats = torch.from_numpy(_random_crop_mats(rng, 2, 5, 64, (512, 512)))
    worst = {}
    for dtype in (torch.float64, torch.float32):
        crops = warp_crops(frames.to(dtype), mats.to(dtype), size)
        assert crops.shape == (2, 5, 3, 72, 64) and crops.dtype == dtype
        ref = torch.stack([
            torch.cat([
                warp_affine(frames[b : b + 1].to(dtype), mats[b, j, :2][None].to(dtype), size, align_corners=True)
                for j in range(5)
            ])
            for b in range(2)
        ])
        worst[dtype] = (crops - ref).abs().max().item()
    print(f"\nwarp_crops vs kornia warp_affine (0-255): max |diff| float64 {worst[torch.float64]:.2e}, "
          f"float32 {worst[torch.float32]:.2e}")
    assert worst[torch.float64] <= 1e-4
    # float32 sampling positions near x = 500 carry ~3e-5 px of rounding (in both
    # implementations, which round differently); on edges of 255 grey levels per pixel
    # that is ~1e-2 grey levels.
    assert worst[torch.float32] <= 0.05


def test_warp_crops_matches_cv2_warp_affine_uint8(astronaut):
    rng = np.random.default_rng(5)
    frames = torch.from_numpy(astronaut).permute(2, 0, 1)[None].float()
    mats = _random_crop_mats(rng, 1, 8, 112, (512, 512))
    crops = warp_crops(frames, torch.from_numpy(mats).float(), (112, 112))
    ours = crops.round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()[0]
    diffs = []
    for j in range(8):
        ref = cv2.warpAffine(astronaut, mats[0, j, :2], (112, 112), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        diffs.append(np.abs(ours[j].astype(int) - ref.astype(int)))
    mean, worst = float(np.mean([d.mean() for d in diffs])), int(max(d.max() for d in diffs))
    print(f"\nwarp_crops vs cv2.warpAffine uint8: mean |diff| {mean:.4f}, max {worst} grey levels")
    # Not exactly 0: cv2's INTER_LINEAR works in fixed point; it snaps the source
    # position to 1/32 pixel (INTER_TAB_SIZE) and uses 15-bit integer weights, while
    # grid_sample interpolates at the exact float position.
    assert mean <= 1.0


def test_warp_crops_singular_and_nonfinite_matrices_give_zero_crops(astronaut):
    frames = torch.from_numpy(astronaut).permute(2, 0, 1)[None].float()
    good = torch.tensor([[0.5, 0.0, -100.0], [0.0, 0.5, -50.0], [0.0, 0.0, 1.0]])
    singular = torch.zeros(3, 3)
    nonfinite = good.clone()
    nonfinite[0, 2] = float("nan")
    huge = torch.diag(torch.tensor([1e-30, 1e-30, 1.0]))  # maps everything to ~1e30 px
    crops = warp_crops(frames, torch.stack([good, singular, nonfinite, huge])[None], (40, 40))
    assert torch.isfinite(crops).all()
    assert crops[0, 1:].abs().max() == 0
    ref = warp_crops(frames, good[None, None], (40, 40))
    torch.testing.assert_close(crops[0, 0], ref[0, 0])


def test_warp_crops_gathers_from_uint8_without_converting_frames():
    """Channels-last frames (the runtime's): no whole-frame copy or float conversion, every intermediate is crop-sized."""

    class Warp(torch.nn.Module):
        def forward(self, frames, crop_mat):
            return warp_crops(frames, crop_mat, (16, 24))

    frames = torch.randint(0, 255, (2, 3, 100, 120), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    mats = torch.eye(3).expand(2, 7, 3, 3).clone()
    mats[..., :2, 2] = -5.0
    ep = torch.export.export(Warp(), (frames, mats))
    frame_numel = frames.numel()
    for node in ep.run_decompositions().graph.nodes:  # reshape becomes view where it copies nothing
        val = node.meta.get("val")
        if node.op == "call_function" and isinstance(val, torch.Tensor) and val.numel() >= frame_numel:
            target = str(node.target)
            in_place = any(op in target for op in ("view", "permute", "as_strided"))
            assert val.dtype == torch.uint8 and in_place, (target, val.shape, val.dtype)
    ours = ep.module()(frames, mats)
    torch.testing.assert_close(ours, warp_crops(frames.float(), mats, (16, 24)))
    torch.testing.assert_close(ours, warp_crops(frames.contiguous(), mats, (16, 24)))  # either layout, same crops
    assert ours.shape == (2, 7, 3, 16, 24)


def test_warp_crops_bad_arguments():
    with pytest.raises(TypeError, match="frames must be uint8 or floating point, got torch.int32"):
        warp_crops(torch.zeros(1, 3, 8, 8, dtype=torch.int32), torch.eye(3).view(1, 1, 3, 3), (4, 4))
    with pytest.raises(ValueError, match=r"crop_mat must have shape \(B, K, 3, 3\) with B = .* = 2, got \(1, 1, 3"):
        warp_crops(torch.zeros(2, 3, 8, 8), torch.eye(3).view(1, 1, 3, 3), (4, 4))
    with pytest.raises(ValueError, match=r"size must be two positive ints"):
        warp_crops(torch.zeros(1, 3, 8, 8), torch.eye(3).view(1, 1, 3, 3), (4, 0))


# --- export / compile --------------------------------------------------------------------


class _Similarity(torch.nn.Module):
    def forward(self, src, dst):
        return estimate_similarity(src, dst)


class _Points(torch.nn.Module):
    def forward(self, mat, points):
        return transform_points(mat, points)


class _Warp(torch.nn.Module):
    def forward(self, frames, crop_mat):
        return warp_crops(frames, crop_mat, (32, 32))


def _export_cases():
    torch.manual_seed(0)
    src = torch.rand(3, 4, 5, 2) * 500
    src[0, 1] = float("nan")  # an invalid row must flow through the same graph
    mats = torch.eye(3).repeat(2, 4, 1, 1)
    mats[..., :2, :] += torch.rand(2, 4, 2, 3) * 0.2
    return [
        (_Similarity(), (src, torch.rand(5, 2) * 112)),
        (_Points(), (torch.rand(3, 4, 3, 3), torch.rand(3, 4, 9, 2))),
        (_Warp(), (torch.rand(2, 3, 40, 50) * 255, mats)),
    ]


@pytest.mark.parametrize("case", range(3), ids=["estimate_similarity", "transform_points", "warp_crops"])
def test_functions_pass_torch_export(case):
    module, args = _export_cases()[case]
    ep = torch.export.export(module, args)
    torch.testing.assert_close(ep.module()(*args), module(*args))


@pytest.mark.parametrize("case", range(3), ids=["estimate_similarity", "transform_points", "warp_crops"])
def test_functions_compile_fullgraph(case):
    # aot_eager captures the whole graph (fullgraph=True fails on any graph break)
    # without spending tens of seconds in Inductor's C++ codegen.
    module, args = _export_cases()[case]
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(*args), module(*args))


def test_docstring_examples():
    result = doctest.testmod(geometry, extraglobs={"torch": torch})
    assert result.attempted >= 3 and result.failed == 0
