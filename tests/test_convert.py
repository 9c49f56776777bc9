"""ONNX -> torch conversion of the real SCRFD detectors: parity, batching, compile, export."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import DETECTORS, real_model
from facecrop.convert import convert_onnx
from facecrop.detect.core import SCRFDHead

# The fixed-640 zoo export only runs at its own size; the others run at any size.
SIZES = {"det_500m": (224, 224), "det_2.5g": (256, 320), "scrfd_500m_bnkps_640": (640, 640)}


def _ort_outputs(path, x: np.ndarray) -> list[list[np.ndarray]]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [session.run(None, {name: x[i : i + 1]}) for i in range(len(x))]


@pytest.mark.parametrize("name", DETECTORS)
def test_batched_conversion_matches_onnxruntime_per_frame(name):
    path = real_model(name)
    height, width = SIZES[name]
    net = convert_onnx(path, height, width)
    # Real-valued input in the normalised range the detector sees.
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, height, width)).astype(np.float32)
    reference = _ort_outputs(path, x)
    with torch.no_grad():
        batched = net(torch.from_numpy(x))
        single = [net(torch.from_numpy(x[i : i + 1])) for i in range(len(x))]
    worst = 0.0
    for i in range(len(x)):
        for j, out in enumerate(batched):
            ref = reference[i][j]
            worst = max(worst, float(np.abs(out[i].numpy().reshape(ref.shape) - ref).max()))
            # Batched outputs equal the batch-1 outputs frame by frame.
            torch.testing.assert_close(out[i], single[i][j][0], rtol=0, atol=1e-5)
    print(f"{name}: max |torch - onnxruntime| = {worst:.2e}")
    assert worst <= 1e-4


@pytest.mark.parametrize("name", DETECTORS)
def test_convolutions_on_one_tensor_run_as_one(name):
    """SCRFD's score, box and keypoint heads read the same tensor: converted, each stride's are one convolution."""
    path = real_model(name)
    convs = [node for node in onnx.load(str(path)).graph.node if node.op_type == "Conv"]
    readers: dict[tuple, int] = {}  # (input, kernel, strides, pads, ...) -> convolutions; ungrouped ones only
    for node in convs:
        attributes = {a.name: tuple(onnx.helper.get_attribute_value(a)) if a.ints else a.i for a in node.attribute}
        if attributes.get("group", 1) == 1:
            key = (node.input[0], len(node.input), *sorted(attributes.items()))
            readers[key] = readers.get(key, 0) + 1
    merged_away = sum(n - 1 for n in readers.values() if n > 1)
    assert merged_away >= 6  # three strides, three heads each
    net = convert_onnx(path, *SIZES[name])
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == len(convs) - merged_away


@pytest.mark.parametrize("name", DETECTORS)
def test_export_with_dynamic_batch_saves_and_loads(name, tmp_path):
    path = real_model(name)
    height, width = SIZES[name]
    net = convert_onnx(path, height, width)
    x = torch.rand(2, 3, height, width)
    batch = torch.export.Dim("batch", min=1, max=256)
    program = torch.export.export(net, (x,), dynamic_shapes=({0: batch},))
    # det_2.5g's weights came out of onnx2torch sharing storage, which torch.export.save could not write.
    torch.export.save(program, tmp_path / "net.pt2")
    program = torch.export.load(tmp_path / "net.pt2")
    y = torch.rand(5, 3, height, width)
    for a, b in zip(program.module()(y), net(y)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", DETECTORS)
def test_detector_compiles_fullgraph(name):
    """The whole detection head (preprocess, net, decode, static NMS) compiles with no graph break."""
    path = real_model(name)
    height, width = SIZES[name]
    head = SCRFDHead(path, det_size=(width, height), max_faces=4)
    frames = torch.randint(0, 256, (2, 3, 300, 400), dtype=torch.uint8)
    torch._dynamo.reset()
    compiled = torch.compile(head, fullgraph=True)
    with torch.no_grad():
        got, want = compiled(frames), head(frames)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-3)


def _truncated(path, tmp_path):
    data = path.read_bytes()
    out = tmp_path / "truncated.onnx"
    out.write_bytes(data[: len(data) // 2])
    return out


def _without_keypoints(path, tmp_path):
    model = onnx.load(str(path))
    keep = [o for o in model.graph.output if o.type.tensor_type.shape.dim[-1].dim_value != 10]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    out = tmp_path / "no_kps.onnx"
    onnx.save(model, str(out))
    return out


def _recognition_like(_, tmp_path):
    """An ArcFace-shaped model: image in, one 512-d embedding out."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(np.random.default_rng(1).normal(size=(512, 8)).astype(np.float32), "fc")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["data", "w"], ["c"], strides=[2, 2]),
            helper.make_node("GlobalAveragePool", ["c"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("Gemm", ["f", "fc"], ["fc1"], transB=1),
        ],
        "recognition",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 512])],
        [weight, fc],
    )
    out = tmp_path / "w600k_like.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(out))
    return out


@pytest.mark.parametrize(
    "make, message",
    [
        (_truncated, "not a valid ONNX model"),
        (_without_keypoints, "SCRFD detector with keypoints"),
        (_recognition_like, "fixed input size of 112x112"),
    ],
)
def test_wrong_model_gets_a_clear_error(make, message, tmp_path):
    bad = make(real_model("det_500m"), tmp_path)
    with pytest.raises(ValueError, match=message):
        SCRFDHead(bad, det_size=(224, 224))


def test_recognition_model_at_its_size_names_what_was_expected(tmp_path):
    bad = _recognition_like(None, tmp_path)
    with pytest.raises(ValueError, match=r"SCRFD detector with keypoints.*\(1, 512\)|shape \(512,\)"):
        SCRFDHead(bad, det_size=(112, 112))


def test_fixed_size_export_refuses_other_det_size():
    with pytest.raises(ValueError, match=r"det_size=\(640, 640\)"):
        SCRFDHead(real_model("scrfd_500m_bnkps_640"), det_size=(224, 224))
