"""``pip install .`` (not only ``-e``) gives the design card's layout, with Medusa's module paths."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_regular_install_has_both_packages(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(REPO)], check=True)
    for path in ("detect/core.py", "detect/scrfd.py", "landmark/retinaface.py", "crop/align_crop.py",
                 "crop/bbox_crop.py", "containers/results.py", "data/__init__.py", "io.py", "tracking.py",
                 "defaults.py", "runtime/bundle.py"):
        assert (target / "facecrop" / path).is_file(), path
    code = ("import sys, facecrop.runtime, facecrop; print(facecrop.__file__); "
            "print(sorted(m for m in ('onnx', 'onnx2torch', 'onnxruntime', 'kornia', 'insightface') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith(str(target))
    assert out[1] == "[]"
    medusa_paths = ("from facecrop.detect import SCRFDetector; from facecrop.landmark import RetinafaceLandmarkModel; "
                    "from facecrop.crop import AlignCropModel, BboxCropModel; from facecrop.crop.align_crop import TEMPLATE; "
                    "from facecrop.containers.results import BatchResults; from facecrop.io import VideoLoader; "
                    "from facecrop.tracking import sort_faces, filter_faces; from facecrop.defaults import DEVICE; "
                    "from facecrop.data import get_example_image, get_example_video; print(SCRFDetector.__module__)")
    out = subprocess.run([sys.executable, "-c", medusa_paths], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "facecrop.detect.scrfd"
