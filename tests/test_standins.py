"""The stand-in landmark ONNX files honour the official contract and load in InsightFace."""

from pathlib import Path

import cv2
import insightface
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from insightface.app.common import Face
from insightface.model_zoo.landmark import Landmark
from insightface.model_zoo.scrfd import SCRFD
from insightface.utils import face_align
from numpy.testing import assert_allclose
from onnx import numpy_helper
from onnx2torch import convert
from skimage import data

from facecrop.testing import INPUT_SIZE, KINDS, build_landmark_onnx

DET_500M = Path("/work/shared/models/det_500m.onnx")
VARIANTS = [(kind, reshape) for kind in KINDS for reshape in ("reshape", "flatten")]
IDS = [f"{kind}-{reshape}" for kind, reshape in VARIANTS]


@pytest.fixture(scope="module")
def faces():
    """[(BGR image, insightface Face, RGB 192x192 landmark crop as [1, 3, 192, 192] float32)]."""
    if not DET_500M.exists():
        pytest.skip(f"SCRFD weights not found at {DET_500M}")
    detector = SCRFD(str(DET_500M))
    detector.prepare(-1, input_size=(640, 640))
    t1 = cv2.imread(str(Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"))
    out = []
    for bgr in (t1, cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)):
        boxes, kps = detector.detect(bgr)
        for box, k in zip(boxes, kps):
            face = Face(bbox=box[:4], kps=k, det_score=box[4])
            # The crop Landmark.get feeds its net (SPEC "Landmarks"): 1.5x the box, 192 px.
            w, h = box[2] - box[0], box[3] - box[1]
            centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
            crop, _ = face_align.transform(bgr, centre, INPUT_SIZE, INPUT_SIZE / (max(w, h) * 1.5), 0)
            out.append((bgr, face, crop[..., ::-1].transpose(2, 0, 1)[None].astype(np.float32)))
    assert len(out) == 7
    return out


@pytest.mark.parametrize("kind, reshape", VARIANTS, ids=IDS)
def test_graph_has_the_official_contract(tmp_path, kind, reshape):
    path = build_landmark_onnx(tmp_path / "lmk.onnx", kind, reshape=reshape)
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(path)
    graph = model.graph
    (inp,), (out,) = graph.input, graph.output
    dims = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert inp.name == "data" and dims(inp) == [1, 3, 192, 192]
    assert out.name == "fc1" and dims(out) == [1, KINDS[kind]]
    nodes = list(graph.node)
    assert [(n.op_type, n.name) for n in nodes[:2]] == [("Sub", "_minusscalar0"), ("Mul", "_mulscalar0")]
    assert nodes[-1].op_type == "Gemm" and nodes[-1].name == "fc1"
    ops = [n.op_type for n in nodes]
    assert {"Conv", "BatchNormalization", "PRelu"} <= set(ops)
    assert all(list(a.ints) == [2, 2] for n in nodes if n.op_type == "Conv" for a in n.attribute if a.name == "strides")
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    if reshape == "reshape":
        (node,) = [n for n in nodes if n.op_type == "Reshape"]
        assert inits[node.input[1]].tolist() == [1, -1]  # the batch of 1, baked in
        assert "Flatten" not in ops
    else:
        assert "Flatten" in ops and "Reshape" not in ops
    # Seeded: the same seed writes the same bytes.
    again = build_landmark_onnx(tmp_path / "again.onnx", kind, reshape=reshape)
    assert again.read_bytes() == path.read_bytes()


@pytest.mark.parametrize("kind, reshape", VARIANTS, ids=IDS)
def test_outputs_on_real_face_crops_are_realistic(tmp_path, faces, kind, reshape):
    session = ort.InferenceSession(str(build_landmark_onnx(tmp_path / "lmk.onnx", kind, reshape=reshape)))
    outs = np.stack([session.run(None, {"data": crop})[0] for _, _, crop in faces])  # [7, 1, n]
    assert outs.shape == (7, 1, KINDS[kind]) and outs.dtype == np.float32
    outs = outs[:, 0]
    spread, between = outs.std(), outs.std(axis=0).mean()
    print(f"\n{kind}/{reshape} on 7 real face crops: range [{outs.min():.3f}, {outs.max():.3f}], "
          f"std {spread:.3f}, mean std between faces {between:.3f}")
    assert np.abs(outs).max() < 1.0  # not saturated, points stay inside the crop
    assert spread > 0.15  # spread over the crop, not all ~0
    assert between > 0.02  # and the output depends on the image
    other = ort.InferenceSession(str(build_landmark_onnx(tmp_path / "seed1.onnx", kind, seed=1, reshape=reshape)))
    assert np.abs(other.run(None, {"data": faces[0][2]})[0][0] - outs[0]).max() > 0.1


@pytest.mark.parametrize("kind, reshape", VARIANTS, ids=IDS)
def test_insightface_landmark_loads_and_runs_it(tmp_path, faces, kind, reshape):
    model = Landmark(model_file=str(build_landmark_onnx(tmp_path / "lmk.onnx", kind, reshape=reshape)))
    model.prepare(-1)
    # It found the leading Sub/Mul nodes, so it feeds raw 0-255 pixels as the real nets expect.
    assert (model.input_mean, model.input_std) == (0.0, 1.0)
    assert model.input_size == (192, 192)
    n_points, dims = (106, 2) if kind == "2d106det" else (68, 3)
    assert (model.lmk_num, model.lmk_dim) == (n_points, dims)
    if kind == "1k3d68":
        # The 3309-output case needs meanshape_68.pkl, which insightface ships in its data dir.
        assert (Path(insightface.__file__).parent / "data" / "objects" / "meanshape_68.pkl").is_file()
        assert model.require_pose and model.mean_lmk.shape == (68, 3)
    for bgr, face, _ in faces:
        pred = model.get(bgr, face)
        assert pred.shape == (n_points, dims) and np.isfinite(pred).all()
        # Outputs in [-1, 1] land inside the 1.5x box the net saw.
        x1, y1, x2, y2 = face.bbox
        side = max(x2 - x1, y2 - y1) * 1.5
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        assert (np.abs(pred[:, 0] - cx) < side / 2).all() and (np.abs(pred[:, 1] - cy) < side / 2).all()
        if kind == "1k3d68":
            assert face.pose.shape == (3,) and np.isfinite(face.pose).all()


@pytest.mark.parametrize("kind, reshape", VARIANTS, ids=IDS)
def test_onnx2torch_converts_it(tmp_path, faces, kind, reshape):
    path = build_landmark_onnx(tmp_path / "lmk.onnx", kind, reshape=reshape)
    module = convert(str(path)).eval()
    crop = faces[0][2]
    with torch.no_grad():
        got = module(torch.from_numpy(crop)).numpy()
    want = ort.InferenceSession(str(path)).run(None, {"data": crop})[0]
    assert_allclose(got, want, atol=1e-4)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        build_landmark_onnx(tmp_path / "x.onnx", kind="2d68")
    with pytest.raises(ValueError, match="reshape must be 'reshape' or 'flatten'"):
        build_landmark_onnx(tmp_path / "x.onnx", reshape="view")
