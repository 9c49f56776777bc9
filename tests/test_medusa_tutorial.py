"""Medusa's own tutorial (landmark detection and cropping, v0.0.6) runs on facecrop with only its imports changed.

The notebook's code cells (``tests/medusa/landmark_detection_and_cropping.py``, verbatim) are run
in order in one namespace, as Jupyter runs them, after ``medusa`` -> ``facecrop`` in the import
lines. The value of each cell's last expression is kept, as a notebook shows it, and checked;
``IPython.display.Image``/``Video`` (no notebook here) load the file they are given, so a picture
or video that cannot be read fails the test. Medusa's code names no detector and the landmark
models by name: the real det_500m comes in through ``$FACECROP_DETECTOR`` (for det_10g) and
stand-in landmark nets through ``$FACECROP_MODEL_OVERRIDES`` (for the absent real weights), so
shapes and behaviour are checked, and the crops against kornia's.
"""

from __future__ import annotations

import ast
import re
import sys
import types
import warnings

import av
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, model_dir, real_model
from facecrop.testing import build_landmark_onnx

pytestmark = pytest.mark.slow

TUTORIAL = REPO / "tests" / "medusa" / "landmark_detection_and_cropping.py"


def as_facecrop(source: str) -> str:
    """Medusa code as a Medusa user switching runs it: ``medusa`` -> ``facecrop`` in the imports, nothing else."""
    return re.sub(r"^(\s*(?:from|import)\s+)medusa\b", r"\1facecrop", source, flags=re.M)


def cells(source: str) -> list[str]:
    return [c.strip() for c in re.split(r"^# %% cell \d+$", source, flags=re.M)[1:]]


def run_cell(code: str, namespace: dict):
    """Run a cell as Jupyter does: everything, and the value of a last bare expression."""
    tree = ast.parse(code)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<cell>", "exec"), namespace)
    return eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace) if last else None


def fake_ipython_display() -> types.ModuleType:
    """``IPython.display`` whose Image and Video read the file they show (frames decoded by PyAV)."""
    display = types.ModuleType("IPython.display")

    def image(path):
        with Image.open(path) as img:
            return ("image", path, np.asarray(img.convert("RGB")))

    def video(path, embed=False):
        with av.open(path) as container:
            return ("video", path, [f.to_ndarray(format="rgb24") for f in container.decode(video=0)])

    display.Image, display.Video = image, video
    return display


@pytest.fixture(scope="module")
def shown(tmp_path_factory):
    """Run the tutorial once; ``{cell number: what the notebook shows}``, plus the working folder."""
    work = tmp_path_factory.mktemp("medusa-tutorial")
    stand_ins = {kind: build_landmark_onnx(work / f"standin_{kind}.onnx", kind=kind) for kind in ("2d106det", "1k3d68")}
    ipython = types.ModuleType("IPython")
    ipython.display = fake_ipython_display()
    namespace, results = {"__name__": "__tutorial__"}, {}
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the override's "used unverified" warning, among others
        mp.setenv("FACECROP_DETECTOR", str(real_model("det_500m").absolute()))
        mp.setenv("FACECROP_MODEL_DIR", str(model_dir().absolute()))
        mp.setenv("FACECROP_MODEL_OVERRIDES", ",".join(f"{k}={v}" for k, v in stand_ins.items()))
        mp.setenv("FACECROP_CACHE_DIR", str(work / "cache"))
        mp.setitem(sys.modules, "IPython", ipython)
        mp.setitem(sys.modules, "IPython.display", ipython.display)
        mp.chdir(work)
        for number, code in enumerate(cells(as_facecrop(TUTORIAL.read_text())), 1):
            results[number] = run_cell(code, namespace)
    results["namespace"], results["work"] = namespace, work
    return results


def test_only_the_imports_change():
    medusa = TUTORIAL.read_text()
    switched = as_facecrop(medusa)
    changed = [(a, b) for a, b in zip(medusa.splitlines(), switched.splitlines()) if a != b]
    assert changed and all(a.replace("medusa", "facecrop", 1) == b and re.match(r"\s*(from|import) ", a)
                           for a, b in changed)
    assert len(cells(medusa)) == 19


def test_detector_and_landmark_cells(shown):
    ns = shown["namespace"]
    kind, path, picture = shown[1]
    assert kind == "image" and path == "lms5.png" and picture.shape[:2] == tuple(ns["img"].shape[2:])
    assert ns["out"]["lms"].shape[1:] == (5, 2)
    assert set(ns["out_106"]) == {"conf", "bbox", "lms", "img_idx", "n_img", "imgs_crop", "crop_mat"}
    assert shown[3] == (len(ns["out_106"]["conf"]), 106, 2)
    assert shown[5][0] == "image" and ns["out_68"]["lms"].shape[1:] == (68, 2)


def test_video_cells(shown):
    ns = shown["namespace"]
    kind, path, frames = shown[6]
    assert kind == "video" and path == "./lms.mp4"
    assert len(frames) == len(ns["batch"]) and frames[0].shape[:2] == tuple(ns["batch"].shape[2:])
    kind, path, frames = shown[19]
    assert kind == "video" and path == "./align_crop.mp4" and len(frames) == len(ns["batch"])


def test_box_crop_cells(shown):
    assert tuple(shown[9]) == (1, 3, 224, 224)  # N (detections) x 3 (RGB) x H x W: one face
    assert shown[11] == (1, 3, 3)
    # The tutorial's crop by hand (kornia's warp_affine with the returned crop_mat) is the crop.
    crop = np.asarray(Image.open(shown["work"] / "crop.png"), dtype=np.float64)
    by_hand = np.asarray(Image.open(shown["work"] / "crop_manual.png"), dtype=np.float64)
    assert crop.shape == by_hand.shape and np.abs(crop - by_hand).mean() < 1.0
    assert shown[13][0] == "image" and shown[14][0] == "image"


def test_aligned_crop_cells(shown):
    ns = shown["namespace"]
    assert torch.equal(ns["TEMPLATE"], __import__("facecrop.crop.align_crop", fromlist=["TEMPLATE"]).TEMPLATE)
    assert {"imgs_crop", "crop_mat", "lms"} <= set(shown[17])
    # The crop matrix is the least-squares similarity from the detector's 5 points to the template
    # at 224 px (scikit-image's estimate as the oracle), and the cell's points in crop space follow it.
    from skimage.transform import SimilarityTransform

    out = ns["out_crop"]  # the aligned crop's output, cell 17
    for points, mat, in_crop in zip(out["lms"], out["crop_mat"], ns["lms"]):
        oracle = SimilarityTransform()
        assert oracle.estimate(points.double().numpy(), (ns["TEMPLATE"] * 2).double().numpy())
        np.testing.assert_allclose(mat.numpy(), oracle.params, atol=1e-3 * float(np.abs(oracle.params).max()))
        np.testing.assert_allclose(in_crop.numpy(), oracle(points.double().numpy()), atol=1e-2)
