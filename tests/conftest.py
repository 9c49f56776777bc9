"""Shared fixtures: where the real model files are, and the real test photos.

Real-weight tests use ``FACECROP_MODEL_DIR`` (default ``../shared/models`` beside
the repo). Outside CI they skip when a file is missing; in CI (``CI=true``) a
missing detector file is a failure, so the real-weight tests cannot silently skip.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmarks/ holds the parity case generators the tests share

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DETECTORS = ("det_500m", "det_2.5g", "scrfd_500m_bnkps_640")


def model_dir() -> Path:
    return Path(os.environ.get("FACECROP_MODEL_DIR", REPO.parent / "shared" / "models"))


def real_model(name: str) -> Path:
    """Path of a real model file, failing in CI and skipping elsewhere when it is absent."""
    path = model_dir() / f"{name}.onnx"
    if not path.is_file():
        if IN_CI and name in DETECTORS:
            pytest.fail(f"CI needs the real detector {path} (set FACECROP_MODEL_DIR)")
        pytest.skip(f"real model {path} not present")
    return path


def real_media(name: str) -> Path:
    """Path of one of Medusa's example media (``benchmarks.photos.media_dir``), failing in CI and
    skipping elsewhere when it is absent."""
    from benchmarks.photos import media_dir

    path = media_dir() / name
    if not path.is_file():
        if IN_CI:
            pytest.fail(f"CI needs the real media {path} (set FACECROP_MEDIA_DIR)")
        pytest.skip(f"real media {path} not present")
    return path


@pytest.fixture(scope="session")
def t1_rgb() -> np.ndarray:
    """InsightFace's test photo with six faces, RGB uint8 [H, W, 3]."""
    from benchmarks.photos import t1_rgb

    return t1_rgb()


@pytest.fixture(scope="session")
def astronaut_rgb() -> np.ndarray:
    """scikit-image's public-domain astronaut photo, RGB uint8 [512, 512, 3]."""
    from benchmarks.photos import astronaut_rgb

    return astronaut_rgb()


@pytest.fixture(scope="session")
def bundle_path(tmp_path_factory):
    """The README's main job (det_500m at 224, aligned 112 crops) exported with torch.export: built once
    for the whole run (here, not in a test module: a fixture imported into several modules is built once per module)."""
    from facecrop import bundle as fb
    from facecrop.pipeline import build_pipeline
    from facecrop.pipeline_config import PipelineConfig

    model = real_model("det_500m")
    config = PipelineConfig(detector=str(model), crop="align")
    return fb.write_bundle(build_pipeline(config), config, backend="export", out_root=tmp_path_factory.mktemp("b"),
                           source_models={"detector": model})


@pytest.fixture(scope="session")
def bundle(bundle_path):
    """``bundle_path`` loaded by the runtime."""
    from facecrop.runtime import load_bundle

    return load_bundle(bundle_path)


@pytest.fixture(scope="session")
def photo_frames(t1_rgb, astronaut_rgb):
    """Frames [n, 360, 640, 3]: the two photos sliding across a dark canvas, frame 3 black (no face)."""
    import cv2

    frames = []
    for i in range(12):
        src = t1_rgb if i >= 6 else astronaut_rgb
        src = cv2.resize(src, (round(src.shape[1] * 300 / src.shape[0]), 300), interpolation=cv2.INTER_AREA)
        img = np.full((360, 640, 3), 20, np.uint8)
        x, y = 8 * (i % 6), 6 * (i % 6)
        w = min(src.shape[1], 640 - x)
        img[y:y + 300, x:x + w] = src[:, :w]
        frames.append(np.zeros_like(img) if i == 3 else img)
    return np.stack(frames)


@pytest.fixture(scope="module")
def example_cache(tmp_path_factory):
    """Generated pictures/videos go to a fresh temporary cache (one per test module), never into the repo or ~/.cache."""
    path = tmp_path_factory.mktemp("facecrop-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACECROP_CACHE_DIR", str(path))
        yield path


def as_in_a_terminal() -> None:
    """``preexec_fn`` giving a child Ctrl-C's default action, as a terminal does: a shell's background
    job (a test run may be one) starts with SIGINT ignored, and its children inherit that."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="session")
def people_clip(tmp_path_factory) -> Path:
    """Frames 100-195 of Medusa's 3.mp4 (720x720, people coming and going), re-encoded."""
    import av

    from test_runtime import make_video

    source = real_media("3.mp4")
    with av.open(str(source)) as container:
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if 100 <= i < 196]
    return make_video(tmp_path_factory.mktemp("clip") / "people.mp4", np.stack(frames))


@pytest.fixture(scope="session")
def crops_run(bundle, people_clip, tmp_path_factory):
    """One uninterrupted run of ``people_clip`` with the crops in the results file and its tubes as PNG files."""
    from facecrop.runtime import process_video

    out = tmp_path_factory.mktemp("crops") / "people.npz"
    process_video(bundle, people_clip, out, save_crops=True, crops="png", progress=False)
    return out
