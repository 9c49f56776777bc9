"""Aligned crops of real faces under known similarity transforms (real det_500m).

A photo warped by a known similarity T must give (up to detector noise) the
same aligned crop; ``crop_mat`` of the warped photo composed with T must equal
the original's; uncropping puts the face back; and the detected points land on
the template in crop space.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from benchmarks.photos import astronaut_rgb
from conftest import real_model
from facecrop import TEMPLATE, AlignCropModel, SCRFDetector
from facecrop.crop.core import align_crop_matrix
from facecrop.geometry import invert_affine, transform_points
from facecrop.pipeline import cut_crops

CANVAS = 768
FACE_CENTRE = (215.0, 130.0)  # the astronaut's face, in the 512x512 photo
# (degrees, scale, dx, dy): rotations to +-40, scales 0.5-2, shifts of the face from the canvas centre.
TRANSFORMS = [(0, 1.0, 60, 40), (40, 1.0, -100, 80), (-40, 1.2, 90, -120), (15, 0.5, -200, 150),
              (-25, 2.0, 0, 30), (30, 1.6, -60, -40)]


def _similarity(degrees: float, scale: float, dx: float, dy: float) -> np.ndarray:
    """Photo -> canvas: rotate and scale about the face, put it at the canvas centre + (dx, dy)."""
    c, s = scale * math.cos(math.radians(degrees)), scale * math.sin(math.radians(degrees))
    fx, fy = FACE_CENTRE
    tx, ty = CANVAS / 2 + dx, CANVAS / 2 + dy
    return np.array([[c, -s, tx - (c * fx - s * fy)], [s, c, ty - (s * fx + c * fy)], [0, 0, 1]], np.float64)


def _place(img: np.ndarray, T: np.ndarray) -> np.ndarray:
    return cv2.warpAffine(img, T[:2], (CANVAS, CANVAS), flags=cv2.INTER_LINEAR, borderValue=0)


@pytest.fixture(scope="module")
def model():
    detector = SCRFDetector(model_path=str(real_model("det_500m")), det_size=(640, 640))
    return AlignCropModel(output_size=(112, 112), detector=detector)


@pytest.fixture(scope="module")
def original(model):
    """The photo on the canvas, face centred, unscaled: the reference the transforms are relative to."""
    T0 = _similarity(0, 1.0, 0, 0)
    img = _place(astronaut_rgb(), T0)
    out = model(img)
    assert len(out["conf"]) == 1
    return img, out, T0


def _face_region(size: int = 112) -> slice:
    # The template spans x 38-74, y 51-93 (of 112): the face proper, without hair and background.
    return slice(int(0.25 * size), int(0.9 * size))


def _metrics(ref_crop, ref_mat, crop, mat, T, warped):
    """Crop MAD on the face, composed-matrix error at the template, uncrop MAD."""
    region = _face_region()
    mad = (ref_crop.float()[:, region, region] - crop.float()[:, region, region]).abs().mean().item()
    template = TEMPLATE.double()
    on_image = transform_points(invert_affine(ref_mat.double()), template)
    composed = mat.double() @ torch.from_numpy(T)
    at_template = (transform_points(composed, on_image) - template).norm(dim=-1).max().item()
    # Uncrop: warp the crop back into the warped photo's frame with the inverse matrix.
    uncrop = invert_affine(mat.double())
    back = cv2.warpAffine(crop.permute(1, 2, 0).numpy(), uncrop.numpy()[:2], (CANVAS, CANVAS),
                          flags=cv2.INTER_LINEAR, borderValue=0)
    face = transform_points(uncrop, torch.tensor([[38.0, 51.0], [74.0, 93.0]], dtype=torch.float64))
    (x0, y0), (x1, y1) = face.min(0).values.int().tolist(), face.max(0).values.int().tolist()
    uncrop_mad = np.abs(back[y0:y1, x0:x1].astype(float) - warped[y0:y1, x0:x1].astype(float)).mean()
    return mad, at_template, uncrop_mad


@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda t: f"rot{t[0]}_s{t[1]}_d{t[2]},{t[3]}")
def test_crop_machinery_is_equivariant(model, original, transform):
    """The crop step alone: keypoints moved exactly by T give crops equal up to resampling."""
    _, ref, T0 = original
    warped = _place(astronaut_rgb(), _similarity(*transform))
    T = _similarity(*transform) @ np.linalg.inv(T0)
    kps = transform_points(torch.from_numpy(T).float(), ref["lms"][0])  # [5, 2], exact
    pipeline = model.pipeline
    mat, ok = align_crop_matrix(kps[None, None], pipeline.crop_size, pipeline.align_template)
    frames = torch.from_numpy(warped).permute(2, 0, 1)[None]
    crop = cut_crops(frames, mat, ok, pipeline.crop_size)[0, 0]
    mad, at_template, uncrop_mad = _metrics(ref["imgs_crop"][0], ref["crop_mat"][0], crop, mat[0, 0], T, warped)
    print(f"exact kps, T={transform}: crop MAD {mad:.2f}, composed {at_template:.4f}px, uncrop MAD {uncrop_mad:.2f}")
    assert ok.all()
    assert at_template <= 1e-3
    assert mad <= 6.0
    assert uncrop_mad <= 6.0


@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda t: f"rot{t[0]}_s{t[1]}_d{t[2]},{t[3]}")
def test_aligned_crop_with_detector_in_the_loop(model, original, transform):
    """End to end with the real det_500m: only the detector's own keypoint error remains.

    det_500m's keypoints are not equivariant: under 25-40 degree rotations or 2x
    scale they move by up to ~10 px against the exactly transformed ones (measured
    here and printed), so the 1 px / 6 grey-level bounds of the crop step
    (test above) are widened by exactly that measured error, transported to crop
    pixels.
    """
    _, ref, T0 = original
    warped = _place(astronaut_rgb(), _similarity(*transform))
    T = _similarity(*transform) @ np.linalg.inv(T0)
    out = model(warped)
    assert len(out["conf"]) == 1, "the warped face must be found once"
    mad, at_template, uncrop_mad = _metrics(ref["imgs_crop"][0], ref["crop_mat"][0], out["imgs_crop"][0],
                                            out["crop_mat"][0], T, warped)
    expected = transform_points(torch.from_numpy(T).float(), ref["lms"][0])
    kps_err = (out["lms"][0] - expected).norm(dim=-1)  # detector error, warped-image pixels
    crop_scale = out["crop_mat"][0, :2, :2].det().abs().sqrt().item()
    kps_err_crop = kps_err.max().item() * crop_scale
    residual = (transform_points(out["crop_mat"][0], out["lms"][0]) - TEMPLATE).norm(dim=-1)
    ref_residual = (transform_points(ref["crop_mat"][0], ref["lms"][0]) - TEMPLATE).norm(dim=-1)
    print(f"detector, T={transform}: keypoint error {kps_err.max():.2f}px ({kps_err_crop:.2f} crop px), "
          f"crop MAD {mad:.2f}, composed {at_template:.3f}px, uncrop MAD {uncrop_mad:.2f}, "
          f"residual to template {residual.mean():.2f}px (original {ref_residual.mean():.2f}px)")
    assert at_template <= 1.0 + kps_err_crop
    assert uncrop_mad <= 6.0
    # The points land on the template as well as the detector allows: the original's residual
    # plus the keypoint error.
    assert residual.mean() <= ref_residual.mean() + kps_err_crop
    if kps_err_crop <= 1.0:
        assert mad <= 6.0
