"""Medusa's API (SchynsLab/medusa v0.0.6 and its current main) as Medusa code sees it.

Signatures, defaults, ``str()`` names, outputs (with and without faces) and the video methods,
on the real det_500m detector (in place of Medusa's det_10g, through ``$FACECROP_DETECTOR``) and
stand-in landmark nets.
"""

from __future__ import annotations

import pytest
import torch

from conftest import real_model
from facecrop.containers import BatchResults
from facecrop.crop import AlignCropModel, BboxCropModel
from facecrop.crop.align_crop import TEMPLATE
from facecrop.data import get_example_image, get_example_video
from facecrop.detect import SCRFDetector
from facecrop.io import VideoLoader
from facecrop.landmark import RetinafaceLandmarkModel
from facecrop.testing import build_landmark_onnx
from facecrop.zoo import ModelNotFoundError


@pytest.fixture(autouse=True)
def medusa_detector(monkeypatch, example_cache):
    """Medusa code names no detector: facecrop takes $FACECROP_DETECTOR (det_500m here, det_10g by default)."""
    monkeypatch.setenv("FACECROP_DETECTOR", str(real_model("det_500m")))


@pytest.fixture(scope="module")
def landmark_path(tmp_path_factory):
    return build_landmark_onnx(tmp_path_factory.mktemp("lmk") / "2d106det.onnx", kind="2d106det")


def test_detector_signature_defaults_and_names():
    detector = SCRFDetector()
    assert detector.det_size == (640, 640) and detector.head.det_size == (640, 640)
    assert (detector.det_threshold, detector.nms_threshold) == (0.3, 0.3)
    assert detector.device == "cpu" and str(detector) == "scrfd"
    assert SCRFDetector((224, 224), 0.5).head.det_threshold == 0.5  # det_size, det_threshold positionally
    with pytest.raises(ValueError, match="square"):
        SCRFDetector(det_size=(320, 224))
    with pytest.raises(ValueError, match="det_size"):
        SCRFDetector(det_size=224)


def test_missing_default_detector_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv("FACECROP_DETECTOR")
    monkeypatch.setenv("FACECROP_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="det_10g"):
        SCRFDetector()


def test_detector_outputs_with_and_without_faces():
    detector = SCRFDetector(det_size=(224, 224))
    out = detector(get_example_image([1, 2]))
    assert set(out) == {"conf", "bbox", "lms", "img_idx", "n_img"}
    assert out["img_idx"].tolist() == [0, 1, 1] and out["n_img"] == 2
    assert detector(get_example_image(0)) == {"n_img": 1}


def test_landmark_model_returns_its_crops_and_model_path_names_it(landmark_path):
    model = RetinafaceLandmarkModel(model_path=landmark_path, detector=SCRFDetector(det_size=(224, 224)))
    assert model.model_name == "2d106det" and model.device == "cpu"
    out = model(get_example_image([2, 0]))
    assert set(out) == {"conf", "bbox", "lms", "img_idx", "n_img", "imgs_crop", "crop_mat"}
    assert out["lms"].shape == (2, 106, 2)
    assert out["imgs_crop"].shape == (2, 3, 192, 192) and out["imgs_crop"].dtype == torch.uint8
    # The crop matrix maps the box centre to the crop centre, at 192 / (1.5 * the box's longer side).
    centre = (out["bbox"][:, :2] + out["bbox"][:, 2:]) / 2
    mapped = (out["crop_mat"][:, :2, :2] @ centre[..., None])[..., 0] + out["crop_mat"][:, :2, 2]
    torch.testing.assert_close(mapped, torch.full_like(mapped, 96.0))
    none = model(get_example_image(0))
    assert none == {"n_img": 1, "lms": None, "imgs_crop": None, "crop_mat": None}


def test_align_crop_model_as_medusa():
    model = AlignCropModel(output_size=(224, 224), det_size=(224, 224))  # kwargs reach the detector
    assert model.detector.det_size == (224, 224) and str(model) == "aligncrop" and model.device == "cpu"
    torch.testing.assert_close(model.template, TEMPLATE * 2)
    out = model(get_example_image(1))
    assert out["imgs_crop"].shape == (1, 3, 224, 224) and out["imgs_crop"].dtype == torch.float32
    assert torch.equal(out["imgs_crop"], out["imgs_crop"].round())
    assert model(get_example_image(0)) == {"n_img": 1, "imgs_crop": None, "crop_mat": None}
    with pytest.raises(ValueError, match="square"):
        AlignCropModel(output_size=(112, 96))


def test_bbox_crop_model_scales(landmark_path):
    detector = SCRFDetector(det_size=(224, 224))
    default = BboxCropModel(landmark_path, detector=detector)
    wider = BboxCropModel(landmark_path, scale=1.5, scale_orig=1.1, detector=detector)
    assert str(default) == "bboxcrop" and (default.scale, default.scale_orig) == (1.25, 1.1)
    img = get_example_image(1)
    side = lambda out: (out["bbox"][:, 2] - out["bbox"][:, 0])  # noqa: E731
    torch.testing.assert_close(side(wider(img)), side(default(img)) * 1.5 / 1.25)
    assert default(img)["imgs_crop"].dtype == torch.uint8
    assert default(get_example_image(0)) == {"n_img": 1, "lms": None, "imgs_crop": None, "crop_mat": None}


def test_video_methods_return_batch_results():
    video = get_example_video(n_frames=12)
    detector = SCRFDetector(det_size=(224, 224))
    results = detector.detect_faces_video(video, batch_size=5)
    assert isinstance(results, BatchResults) and results.n_img == 12
    frames = torch.cat(list(VideoLoader(video, batch_size=12)))
    once = detector(frames)
    assert torch.equal(results.img_idx, once["img_idx"])
    torch.testing.assert_close(results.bbox, once["bbox"])

    crops = AlignCropModel(det_size=(224, 224)).crop_faces_video(VideoLoader(video, batch_size=4), save_imgs=True)
    assert crops.n_img == 12 and crops.imgs.shape == (12, 3, 384, 480)
    assert crops.imgs_crop.shape == (len(crops.img_idx), 3, 112, 112)
    crops.sort_faces()
    assert crops.face_idx.shape == crops.img_idx.shape


def test_insightface_bbox_crop_is_the_landmark_models_crop(landmark_path):
    from facecrop.crop import InsightfaceBboxCropModel

    detector = SCRFDetector(det_size=(224, 224))
    crop = InsightfaceBboxCropModel(detector=detector)
    imgs = get_example_image([3, 1])
    out = crop(imgs)
    assert str(crop) == "insightfacebboxcrop" and out["imgs_crop"].shape == (4, 3, 192, 192)
    lms = RetinafaceLandmarkModel(model_path=landmark_path, detector=detector)(imgs)
    assert torch.equal(out["imgs_crop"], lms["imgs_crop"])
    torch.testing.assert_close(out["crop_mat"], lms["crop_mat"])
    wide = InsightfaceBboxCropModel(output_size=(96, 96), scale_factor=3.0, detector=detector)(imgs)
    torch.testing.assert_close(wide["crop_mat"][:, 0, 0], out["crop_mat"][:, 0, 0] / 4)
    assert crop(get_example_image(0)) == {"n_img": 1, "imgs_crop": None, "crop_mat": None}


def test_random_square_crop():
    import numpy as np
    import torch.nn.functional as F

    from facecrop.crop import RandomSquareCropModel

    model = RandomSquareCropModel(output_size=(128, 128))
    square = get_example_image(1)  # 512 x 512: the whole picture, resized
    out = model(square)
    assert set(out) == {"imgs_crop"} and str(model) == "randomsquarecrop"
    torch.testing.assert_close(out["imgs_crop"], F.interpolate(square, size=(128, 128), mode="bilinear",
                                                              antialias=True))
    wide = torch.arange(3 * 40 * 100, dtype=torch.float32).view(1, 3, 40, 100)
    np.random.seed(0)
    first = model(wide)["imgs_crop"]
    np.random.seed(0)
    assert torch.equal(model(wide)["imgs_crop"], first) and first.shape == (1, 3, 128, 128)


def test_video_writer_writes_atomically(tmp_path):
    from facecrop.io import VideoWriter

    frames = get_example_image([0, 1, 2]).to(torch.float32)
    path = tmp_path / "out.mp4"
    writer = VideoWriter(path, fps=24.4)
    writer.write(frames[0])  # one (3, H, W) frame
    writer.write(frames[1:].permute(0, 2, 3, 1).numpy())  # a (B, H, W, 3) array
    assert not path.exists()  # in place only once closed
    with pytest.raises(ValueError, match="cannot join"):
        writer.write(torch.zeros(1, 3, 64, 64))
    writer.close()
    loader = VideoLoader(path)
    assert loader.get_metadata() == {"img_size": (512, 512), "n_img": 3, "fps": 24}
    assert (torch.cat(list(loader)) - frames).abs().mean() < 4  # lossy H.264 of the same pictures
    empty = VideoWriter(tmp_path / "empty.mp4", fps=24)
    with pytest.raises(ValueError, match="no frames"):
        empty.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
