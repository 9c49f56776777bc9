"""The landmark-and-cropping tutorial runs end to end, and its pictures show what they claim.

The script (``examples/landmarks_and_cropping.py``) runs once, in a subprocess,
into a temporary folder, on the real det_500m detector. Its pictures are then
checked against independent oracles: kornia's ``warp_affine`` recomputes the
crop from the saved ``crop_mat``, the original photo is compared with the
uncropped picture, PyAV decodes the videos, and the example video's known
motion tells which face each tracked face really is. It takes about a minute
on a small CPU (it makes and processes a 96-frame video twice), hence ``slow``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, model_dir, real_model

pytestmark = pytest.mark.slow

SCRIPT = REPO / "examples" / "landmarks_and_cropping.py"
PICTURES = (
    "01_detector_points.png",
    "02_landmarks_106_vs_68.png",
    "03_video_landmarks_preview.png",
    "04_box_crop_vs_detector_box.png",
    "05_box_crop.png",
    "06_crop_by_hand.png",
    "07_uncrop.png",
    "08_landmarks_in_crop.png",
    "09_aligned_crop_template.png",
    "10_aligned_crop_video_preview.png",
)
# The pictures that depend on the landmark models (and so carry the stand-in label when they are stand-ins).
USES_LANDMARKS = {
    "02_landmarks_106_vs_68.png",
    "03_video_landmarks.mp4",
    "03_video_landmarks_preview.png",
    "04_box_crop_vs_detector_box.png",
    "05_box_crop.png",
    "06_crop_by_hand.png",
    "07_uncrop.png",
    "08_landmarks_in_crop.png",
}


def _load_script():
    spec = importlib.util.spec_from_file_location("landmarks_and_cropping", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tutorial_script = _load_script()
CROP = tutorial_script.CROP_SIZE


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Run the tutorial once; its example data goes to a fresh cache, not ~/.cache."""
    real_model("det_500m")
    out = tmp_path_factory.mktemp("tutorial")
    cache = tmp_path_factory.mktemp("facecrop-cache")
    env = {**os.environ, "FACECROP_MODEL_DIR": str(model_dir()), "FACECROP_CACHE_DIR": str(cache)}
    # One intra-op thread: on a shared 2-core machine torch's worker threads spin against the
    # other processes, and the run took 40-53 s with two threads against 14 s with one.
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACECROP_CACHE_DIR", str(cache))  # the test's example data is the script's
        yield {"out": out, "stdout": proc.stdout, "checks": json.loads((out / "checks.json").read_text())}


def _png(path) -> torch.Tensor:
    with Image.open(path) as img:
        assert img.mode == "RGB"
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)  # [3, H, W]


def _frames(path) -> torch.Tensor:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)  # [T, 3, H, W]


def _photo() -> torch.Tensor:
    from facecrop import get_example_image

    return get_example_image(1, dtype=torch.uint8)[0]  # [3, 512, 512]


def test_every_output_is_written_and_shows_something(run):
    out = run["out"]
    videos = ["03_video_landmarks.mp4", *run["checks"]["aligned_video"]["videos"].values()]
    assert sorted(p.name for p in out.iterdir()) == sorted([*PICTURES, *videos, "checks.json"])
    for name in PICTURES:
        img = _png(out / name)
        assert min(img.shape[1:]) >= 200, name
        assert img.float().std() > 20, f"{name} is (nearly) flat"
    for name in videos:
        assert (out / name).stat().st_size > 20_000, name
    assert not list(out.rglob("*.onnx")), "stand-in weights must not be left beside the pictures"
    for step in range(1, 11):
        assert f"[{step}]" in run["stdout"]


def test_crop_by_hand_with_kornia_equals_imgs_crop(run):
    """The saved crop_mat, through kornia's warp_affine here, gives the tutorial's imgs_crop (<= 1 grey level)."""
    from kornia.geometry.transform import warp_affine

    crop_mat = torch.tensor(run["checks"]["crop_by_hand"]["crop_mat"])  # [3, 3] image -> crop
    imgs_crop = _png(run["out"] / "05_box_crop.png")[:, :CROP, :CROP]  # the caption is below
    by_hand = warp_affine(_photo()[None].float(), crop_mat[None, :2], (CROP, CROP), align_corners=True)[0]
    assert (by_hand.round() - imgs_crop.float()).abs().max() <= 1
    assert run["checks"]["crop_by_hand"]["hand_crop_max_abs_diff"] <= 1

    panels = _png(run["out"] / "06_crop_by_hand.png")  # imgs_crop | by hand | difference, 4 px apart
    assert torch.equal(panels[:, :CROP, :CROP], imgs_crop)
    assert (panels[:, :CROP, CROP + 4:2 * CROP + 4].int() - imgs_crop.int()).abs().max() <= 1
    # The crop is the face's square: the photo's pixels around the face, magnified.
    scale = crop_mat[0, 0]
    assert torch.allclose(crop_mat[:2, :2], scale * torch.eye(2)) and 1.0 < scale < 3.0


def test_uncropped_crop_lands_back_on_the_photo(run):
    photo = _photo().float()
    panel = _png(run["out"] / "07_uncrop.png")[:, :512, 516:1028].float()  # original | uncropped | pasted
    crop_mat = torch.tensor(run["checks"]["crop_by_hand"]["crop_mat"])
    x1, y1 = (-crop_mat[:2, 2] / crop_mat[0, 0]).tolist()  # crop pixel (0, 0) in the photo
    side = (CROP - 1) / float(crop_mat[0, 0])
    ys, xs = torch.meshgrid(torch.arange(512.0), torch.arange(512.0), indexing="ij")
    inside = (xs > x1 + 2) & (xs < x1 + side - 2) & (ys > y1 + 2) & (ys < y1 + side - 2)
    outside = (xs < x1 - 2) | (xs > x1 + side + 2) | (ys < y1 - 2) | (ys > y1 + side + 2)
    # Resampled twice (crop, uncrop), so near the photo, not equal; a misplaced crop differs by tens.
    assert (panel - photo).abs()[:, inside].mean() < 4
    assert panel[:, outside].max() == 0
    assert run["checks"]["uncrop"]["uncrop_mean_abs_diff"] < 4


def test_points_land_in_the_crops(run):
    assert run["checks"]["landmarks_in_crop"]["crop_lms_inside"] == 1.0
    # The aligned crop maps the detector's 5 points onto the template (least squares, so not exactly).
    assert run["checks"]["aligned_crop"]["template_mean_dist_px"] < 0.05 * CROP


def test_videos_decode_with_one_frame_per_detection(run):
    checks = run["checks"]
    frames = _frames(run["out"] / "03_video_landmarks.mp4")
    assert frames.shape[0] == checks["video_landmarks"]["n_frames"] == tutorial_script.N_FRAMES
    assert frames.shape[3] == 480 and frames.shape[2] > 384  # the example frames, captions below
    videos = checks["aligned_video"]["videos"]
    assert sorted(videos) == ["1", "2"], "the example video has two faces"
    for face, name in videos.items():
        crops = _frames(run["out"] / name)
        assert crops.shape[1:] == (3, CROP, CROP)
        assert crops.shape[0] == len(checks["aligned_video"]["tracks"][face]["img_idx"])


@pytest.fixture(scope="module")
def ground_truth(run):
    """The example video's known motion (computed once: it renders visibility masks, seconds)."""
    from facecrop.data import example_video_ground_truth

    return example_video_ground_truth(run["checks"]["video_landmarks"]["n_frames"], second_face=True)


@pytest.mark.parametrize("step", ["video_landmarks", "aligned_video"])
def test_each_tracked_face_is_one_true_face(run, ground_truth, step):
    """Every detection of a tracked face is nearest the same face of the video's known motion.

    At 96 frames the crossing face moves about 16 px per frame, slow enough for
    Medusa's greedy tracker (at 48 frames it swaps the two identities).
    """
    assert run["checks"][step]["n_frames"] == ground_truth["bbox"].shape[0]
    gt = ground_truth
    true_faces = []
    for track in run["checks"][step]["tracks"].values():
        img_idx, bbox = torch.tensor(track["img_idx"]), torch.tensor(track["bbox"])
        centre = (bbox[:, :2] + bbox[:, 2:]) / 2  # [n, 2]
        gt_centre = (gt["bbox"][img_idx, :, :2] + gt["bbox"][img_idx, :, 2:]) / 2  # [n, 2 faces, 2]
        nearest = (centre[:, None] - gt_centre).norm(dim=-1).argmin(dim=1)
        assert (nearest == nearest[0]).all(), f"a tracked face mixes both faces: {nearest.tolist()}"
        true_faces.append(int(nearest[0]))
    assert sorted(true_faces) == [0, 1]


def _has_label(img: torch.Tensor, tolerance: float) -> bool:
    """Whether the bottom of ``img`` (3, H, W) is the red stand-in strip, text included."""
    strip = tutorial_script.text_strip(img.shape[2], tutorial_script.STANDIN_LABEL,
                                       tutorial_script.WARNING_BG, tutorial_script.WARNING_FG)
    return (img[:, -strip.shape[1]:].float() - strip.float()).abs().mean() <= tolerance


def test_standin_pictures_say_so(run):
    checks, out = run["checks"], run["out"]
    standin_names = set(checks["standins"])
    assert standin_names == {n for n in ("2d106det", "1k3d68") if not (model_dir() / f"{n}.onnx").is_file()}
    expected = set(USES_LANDMARKS)
    if standin_names == {"1k3d68"}:
        expected = {"02_landmarks_106_vs_68.png"}
    elif not standin_names:
        expected = set()
    assert set(checks["labelled"]) == expected
    assert (tutorial_script.STANDIN_LABEL in run["stdout"]) == bool(standin_names)
    for name in PICTURES:
        if name.endswith("_preview.png"):
            continue  # grids of video frames, scaled down
        # PNG is lossless: the strip is there pixel for pixel, or not at all.
        assert _has_label(_png(out / name), tolerance=0) == (name in expected), name
    first, last = _frames(out / "03_video_landmarks.mp4")[[0, -1]]
    for frame in (first, last):  # H.264 changes the strip's pixels a little
        assert _has_label(frame, tolerance=12) == ("03_video_landmarks.mp4" in expected)
