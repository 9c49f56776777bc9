"""Medusa code runs on facecrop with only its imports changed: the behaviours Medusa's users rely on.

Each test drives facecrop's eager API the way Medusa's documentation and tutorial use it (models
made by name, example data, ``BatchResults``) and checks counts, keys, shapes, dtypes and the
geometry they promise. Medusa's default detector is det_10g; here the real det_500m stands in
(``$FACECROP_DETECTOR``), and the landmark nets, whose weights are not available, are stand-ins
with the official contract, reached by name through ``$FACECROP_MODEL_OVERRIDES``.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import real_media, real_model
from facecrop.containers import BatchResults
from facecrop.crop import AlignCropModel, BboxCropModel
from facecrop.crop.align_crop import TEMPLATE
from facecrop.data import get_example_image, get_example_video
from facecrop.detect import SCRFDetector, YunetDetector
from facecrop.io import VideoLoader, load_image
from facecrop.landmark import RetinafaceLandmarkModel
from facecrop.testing import build_landmark_onnx
from facecrop.tracking import _ensure_consecutive_face_idx, filter_faces, sort_faces

# Image sets of example data: an int is one image with that many faces, a list is a batch.
IMAGE_SETS = [0, 1, 2, 3, 4, [0, 1], [1, 2], [0, 1, 2, 3, 4]]
N_POINTS = {"2d106det": 106, "1k3d68": 68}


def n_expected(n_faces) -> int:
    return n_faces if isinstance(n_faces, int) else sum(n_faces)


def n_images(n_faces) -> int:
    return 1 if isinstance(n_faces, int) else len(n_faces)


@pytest.fixture(scope="module", autouse=True)
def medusa_models(tmp_path_factory, example_cache):
    """Models by Medusa's names: det_500m for the default detector, stand-ins for the landmark nets."""
    folder = tmp_path_factory.mktemp("standins")
    overrides = ",".join(f"{kind}={build_landmark_onnx(folder / f'{kind}.onnx', kind=kind)}" for kind in N_POINTS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACECROP_DETECTOR", str(real_model("det_500m")))
        mp.setenv("FACECROP_MODEL_OVERRIDES", overrides)
        yield


@pytest.fixture(scope="module")
def detector() -> SCRFDetector:
    return SCRFDetector()


# --- detector -------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_faces", IMAGE_SETS, ids=str)
def test_detector_finds_every_face_of_the_example_images(detector, n_faces, tmp_path):
    imgs = get_example_image(n_faces)
    out = detector(imgs)
    n = n_expected(n_faces)
    assert out["n_img"] == n_images(n_faces)
    if n == 0:
        assert set(out) == {"n_img"}  # Medusa leaves the keys out when nothing is found
        return
    assert out["conf"].shape == (n,) and out["bbox"].shape == (n, 4) and out["lms"].shape == (n, 5, 2)
    assert out["img_idx"].tolist() == sorted(out["img_idx"].tolist())
    counts = torch.bincount(out["img_idx"], minlength=out["n_img"]).tolist()
    assert counts == ([n_faces] if isinstance(n_faces, int) else list(n_faces))
    # Every five-point set lies inside its own box.
    lo, hi = out["bbox"][:, None, :2], out["bbox"][:, None, 2:]
    assert ((out["lms"] >= lo) & (out["lms"] <= hi)).all()
    pictures = BatchResults(**out).visualize(tmp_path / "detections.jpg", imgs)
    assert len(pictures) == 1 and np.asarray(Image.open(pictures[0])).std() > 10  # one grid of the batch


@pytest.mark.parametrize("det_size", [(224, 224), (640, 640)])
def test_detector_det_size(det_size):
    detector = SCRFDetector(det_size=det_size)
    assert detector.det_size == det_size
    out = detector(get_example_image(1))
    assert out["conf"].shape == (1,) and out["conf"].item() > 0.5


def test_detector_device_and_to(detector):
    img = get_example_image(1, device="cpu")
    moved = detector.to("cpu")
    assert moved is detector and detector(img)["lms"].device.type == "cpu"
    with pytest.raises(NotImplementedError, match="SCRFDetector"):
        YunetDetector()


# --- landmarks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(N_POINTS))
@pytest.mark.parametrize("n_faces", [0, 1, 3, [0, 1, 2]], ids=str)
def test_landmark_model_by_name(name, n_faces):
    model = RetinafaceLandmarkModel(name, detector=SCRFDetector(det_size=(640, 640)))
    out = model(get_example_image(n_faces))
    n = n_expected(n_faces)
    if n == 0:
        assert out["lms"] is None and out["imgs_crop"] is None and out["crop_mat"] is None
        return
    assert out["lms"].shape == (n, N_POINTS[name], 2) and out["lms"].dtype == torch.float32
    assert out["imgs_crop"].shape == (n, 3, 192, 192) and out["crop_mat"].shape == (n, 3, 3)
    assert torch.equal(out["crop_mat"][:, 2], torch.tensor([0.0, 0.0, 1.0]).expand(n, 3))


# --- crops ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_faces", [0, 2, [0, 1, 2]], ids=str)
@pytest.mark.parametrize("name", sorted(N_POINTS))
def test_bbox_crop_model(name, n_faces, tmp_path):
    model = BboxCropModel(name, output_size=(224, 224))
    imgs = get_example_image(n_faces)
    out = model(imgs)
    n = n_expected(n_faces)
    if n == 0:
        assert out["imgs_crop"] is None and out["crop_mat"] is None
        return
    assert out["imgs_crop"].shape == (n, 3, 224, 224) and out["crop_mat"].shape == (n, 3, 3)
    # The crop box (bbox, scaled around the landmarks' box) maps onto the whole crop, corner pixel centres
    # on corner pixel centres (Medusa's DECA-style convention: S - 1 pixels across).
    corners = torch.cat([out["bbox"].view(n, 2, 2), torch.ones(n, 2, 1)], dim=2)
    mapped = (out["crop_mat"] @ corners.transpose(1, 2)).transpose(1, 2)[..., :2]
    torch.testing.assert_close(mapped, torch.tensor([[0.0, 0.0], [223.0, 223.0]]).expand(n, 2, 2),
                               atol=0.01, rtol=0)
    results = BatchResults(**out)
    pictures = results.visualize(tmp_path / "uncropped.jpg", imgs)
    assert len(pictures) == 1 and np.asarray(Image.open(pictures[0])).std() > 10  # one grid of the batch


@pytest.mark.parametrize("n_faces", [0, 1, 4, [0, 1, 2, 3, 4]], ids=str)
def test_align_crop_model_lies_on_the_template(n_faces):
    model = AlignCropModel(output_size=(112, 112))
    torch.testing.assert_close(model.template, TEMPLATE)  # 112: the ArcFace template as it is
    imgs = get_example_image(n_faces)
    out = model(imgs)
    n = n_expected(n_faces)
    if n == 0:
        assert out["imgs_crop"] is None and out["crop_mat"] is None
        return
    assert out["imgs_crop"].shape == (n, 3, 112, 112) and out["crop_mat"].shape == (n, 3, 3)
    points = torch.cat([out["lms"], torch.ones(n, 5, 1)], dim=2)
    in_crop = (out["crop_mat"] @ points.transpose(1, 2)).transpose(1, 2)[..., :2]
    # A similarity transform fitted to five points: each lands within a few pixels of its template point.
    assert (in_crop - TEMPLATE).norm(dim=-1).max() < 12


# --- VideoLoader ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def example_video():
    return get_example_video(return_videoloader=False)


def test_videoloader_reads_every_frame_once(example_video):
    loader = VideoLoader(example_video, batch_size=32)
    with av.open(str(example_video)) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    frames = torch.cat(list(loader))
    assert len(loader.dataset) == len(decoded) == frames.shape[0]
    assert torch.equal(frames, torch.from_numpy(decoded).permute(0, 3, 1, 2).float())
    loader.close()


@pytest.mark.parametrize("batch_size", [1, 32])
def test_videoloader_batches_follow_the_metadata(example_video, batch_size):
    loader = VideoLoader(example_video, device="cpu", batch_size=batch_size)
    meta = loader.get_metadata()
    batch = next(iter(loader))
    assert batch.shape[0] == batch_size and batch.shape[1] == 3
    assert tuple(batch.shape[2:]) == tuple(meta["img_size"][::-1])  # img_size is (width, height)
    assert len(loader) == -(-meta["n_img"] // batch_size) and meta["fps"] == 24


@pytest.mark.parametrize("frames", [[0, 10], [0, 1, 2, 3], [10, 20, 30, 40, 50]])
def test_videoloader_subset(example_video, frames):
    loader = VideoLoader(example_video, dataset_type="subset", frames=frames, batch_size=2)
    every = torch.cat(list(VideoLoader(example_video, batch_size=64)))
    got = torch.cat(list(loader))
    assert [len(b) for b in VideoLoader(example_video, dataset_type="subset", frames=frames, batch_size=2)] == \
        [min(2, len(frames) - i) for i in range(0, len(frames), 2)]
    assert torch.equal(got, every[frames])


# --- tracking -------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_faces", [1, 2, 3, 4])
def test_tracks_on_example_videos(detector, n_faces):
    video = get_example_video(n_faces, n_frames=48)
    results = BatchResults()
    for batch in VideoLoader(video, batch_size=8):
        results.add(imgs=batch, **detector(batch))
    results.concat()
    assert results.n_img == 48 and (torch.diff(results.img_idx) >= 0).all()
    face_idx = sort_faces(results.lms, results.img_idx, dist_threshold=250)
    keep = filter_faces(face_idx, results.n_img, present_threshold=0.1)
    ids = _ensure_consecutive_face_idx(face_idx[keep])
    assert torch.equal(ids.unique(), torch.arange(n_faces))
    # Every face is in every frame: one detection per id per frame.
    per_frame = torch.stack([torch.bincount(ids[results.img_idx[keep] == f], minlength=n_faces) for f in range(48)])
    assert (per_frame == 1).all()
    results.sort_faces("lms")
    assert torch.equal(results.face_idx, face_idx)


@pytest.mark.parametrize("n_faces", range(5))
def test_detector_on_medusas_example_photos(n_faces):
    """Medusa's own example photographs (``<n>_face.jpg``, real people) hold exactly ``n`` faces.

    det_500m also gives one weak (0.32) extra detection on ``3_face.jpg`` (det_10g, Medusa's
    default, does not): faces are counted at threshold 0.5, as ``../shared/media``'s README does.
    """
    img = load_image(real_media(f"{n_faces}_face.jpg"))
    out = SCRFDetector(det_threshold=0.5)(img)
    assert out["n_img"] == 1 and len(out.get("conf", [])) == n_faces
    if n_faces:
        assert out["lms"].shape == (n_faces, 5, 2) and (out["conf"] > 0.5).all()


def test_images_scaled_0_1_are_not_rescaled_but_warned_about(detector):
    from facecrop.io import ImageScaleWarning

    img = get_example_image(1)
    with pytest.warns(ImageScaleWarning, match="0-255; multiply by 255"):
        scaled = detector(img / 255)
    assert "conf" not in scaled  # as Medusa: no face in a nearly black picture, nothing rescaled silently
    assert detector(img)["conf"].shape == (1,)
    with pytest.warns(ImageScaleWarning):
        AlignCropModel(output_size=(112, 112))(img / 255)
