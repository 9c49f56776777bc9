"""Landmark models: conversion vs onnxruntime, parity with InsightFace's Landmark.get, export.

The real 2d106det / 1k3d68 weights are not on these machines: stand-ins with
the official contract and graph style (facecrop.testing) are built per test.
Real-weight tests run when the real files are in the model dir (SHA-256
checked) and skip otherwise — the only skip allowed in CI.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from benchmarks.photos import astronaut_rgb, t1_rgb
from conftest import model_dir, real_model
from facecrop import RetinafaceLandmarkModel, SCRFDetector
from facecrop.landmark.core import LandmarkHead
from facecrop.testing import build_landmark_onnx

KINDS = ("2d106det", "1k3d68")


@pytest.fixture(scope="module")
def detector():
    return SCRFDetector(model_path=str(real_model("det_500m")), det_size=(224, 224))


@pytest.fixture(scope="module", params=[(k, r) for k in KINDS for r in ("reshape", "flatten")], ids=str)
def standin(request, tmp_path_factory):
    kind, reshape = request.param
    return kind, build_landmark_onnx(tmp_path_factory.mktemp("lmk") / f"{kind}.onnx", kind=kind, reshape=reshape)


def _real_landmarks(kind: str):
    from facecrop.zoo import ModelNotFoundError, resolve_model

    try:
        return resolve_model(kind, model_dir=model_dir())
    except ModelNotFoundError:
        pytest.skip(f"real {kind}.onnx is not in {model_dir()} (its weights are not available here)")


def test_conversion_matches_onnxruntime_batched(standin):
    _, path = standin
    head = LandmarkHead(path)
    x = np.random.default_rng(0).uniform(0, 255, (5, 3, 192, 192)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = np.concatenate([session.run(None, {"data": x[i : i + 1]})[0] for i in range(5)])
    with torch.no_grad():
        got = head.net(torch.from_numpy(x))[0].reshape(5, -1).numpy()
    print(f"{path.stem}: max |torch - onnxruntime| = {np.abs(got - reference).max():.2e}")
    assert np.abs(got - reference).max() <= 1e-4


def _insightface_landmarks(path, rgb, boxes):
    from insightface.model_zoo.landmark import Landmark

    class Face(dict):
        __getattr__ = dict.get

    ref = Landmark(model_file=str(path))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    return np.stack([ref.get(bgr, Face(bbox=b.astype(np.float32)))[:, :2] for b in boxes])


def _check_against_insightface(path, detector, expected_points):
    model = RetinafaceLandmarkModel(str(path), detector=detector)
    for name, rgb in (("t1", t1_rgb()), ("astronaut", astronaut_rgb())):
        out = model(rgb)
        assert out["lms"].shape[1:] == (expected_points, 2)
        reference = _insightface_landmarks(path, rgb, out["bbox"].numpy())
        err = np.abs(out["lms"].numpy() - reference).max()
        print(f"{path.stem} {name}: {len(reference)} faces, max landmark error vs Landmark.get {err:.4f} px")
        # cv2.warpAffine samples at 1/32-px positions with 15-bit weights; kornia-style
        # grid_sample is exact. Rounding our crops to uint8 like cv2 leaves ~0.01 px.
        assert err <= 0.05


def test_landmarks_match_insightface_on_real_faces(standin, detector):
    kind, path = standin
    _check_against_insightface(path, detector, 106 if kind == "2d106det" else 68)


@pytest.mark.parametrize("kind", KINDS)
def test_real_landmarks_match_insightface(kind, detector):
    _check_against_insightface(_real_landmarks(kind), detector, 106 if kind == "2d106det" else 68)


def test_landmark_head_exports_and_matches_eager(standin):
    _, path = standin
    head = LandmarkHead(path)
    frames = torch.from_numpy(t1_rgb()).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)
    bbox = torch.tensor([[[100.0, 80, 220, 230], [400, 100, 520, 260]]]).repeat(2, 1, 1)
    valid = torch.tensor([[True, False], [True, True]])
    program = torch.export.export(head, (frames, bbox, valid))
    torch.testing.assert_close(program.module()(frames, bbox, valid), head(frames, bbox, valid))
    assert head(frames, bbox, valid)[0, 1].abs().max() == 0  # invalid rows are zero


def test_wrong_landmark_model_is_refused(tmp_path):
    from test_convert import _recognition_like

    with pytest.raises(ValueError, match="212 values .* 3309 values .* outputs 512"):
        LandmarkHead(_recognition_like(None, tmp_path))
