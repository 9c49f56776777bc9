"""Stand-in landmark ONNX files with the official 2d106det / 1k3d68 contract.

The real InsightFace landmark weights cannot be shipped with the tests, so these
builders write small seeded networks with the same input/output contract and the
same kinds of MXNet-export graph:

- input ``data`` float [1, 3, 192, 192], raw 0-255 RGB;
- leading ``Sub`` (127.5) and ``Mul`` (1/128) nodes named like MXNet's
  (``_minusscalar0``, ``_mulscalar0``): InsightFace's ``Landmark`` looks for such
  names among the first nodes to decide that the net normalises its own input;
- Conv / BatchNormalization / PRelu blocks, each downsampling by 2 (192 -> 3);
- the batch of 1 baked in, by a ``Reshape`` to the constant shape [1, -1] or a
  ``Flatten``;
- a final ``Gemm`` named ``fc1`` with the single output ``fc1``: [1, 212]
  (106 x 2) for 2d106det, [1, 3309] (1103 x 3, the last 68 rows the landmarks)
  for 1k3d68.

The ``Gemm`` bias holds a fixed, face-like layout of points in the crop's
normalised coordinates (x, y in about [-0.6, 0.6], depth in about [-0.15, 0.15]) and
its weights add an image-dependent offset of about +-0.1, so on real face crops
the outputs spread over [-1, 1] like the real nets' do, neither ~0 nor saturated,
and differ from image to image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

KINDS = {"2d106det": 212, "1k3d68": 3309}
INPUT_SIZE = 192
_CHANNELS = (8, 16, 16, 32, 32, 32)  # one stride-2 block each: 192 -> 96 -> ... -> 3
_OPSET = 13
_IR_VERSION = 8  # what onnxruntime releases of the last years all read


def _face_layout(rng: np.random.Generator, kind: str) -> np.ndarray:
    """Face-like bias, flattened like the real outputs: (x, y) pairs or (x, y, z) triples."""
    if kind == "2d106det":
        n, dims = 106, 2
    else:
        n, dims = 1103, 3
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = 0.55 * np.sqrt(rng.uniform(0, 1, n))  # uniform over a disc of radius 0.55
    points = np.stack([radius * np.cos(angle), 1.1 * radius * np.sin(angle)], axis=-1)
    if dims == 3:
        depth = 0.3 * (1 - (radius / 0.55) ** 2) - 0.15  # a dome: nose forward, edges back
        points = np.concatenate([points, depth[:, None]], axis=-1)
    return points.reshape(-1).astype(np.float32)


def build_landmark_onnx(
    path: str | Path, kind: str = "2d106det", seed: int = 0, reshape: str = "reshape"
) -> Path:
    """Write a stand-in landmark ONNX file and return its path.

    Args:
        path: where to write the ``.onnx`` file (tests pass a ``tmp_path`` file).
        kind: ``'2d106det'`` (output [1, 212]) or ``'1k3d68'`` (output [1, 3309]).
        seed: seed of the weights; equal seeds give byte-identical files.
        reshape: how the batch of 1 is baked in before ``fc1``: ``'reshape'``
            (``Reshape`` to the constant [1, -1]) or ``'flatten'`` (``Flatten``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`, checked by ``onnx.checker``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if reshape not in ("reshape", "flatten"):
        raise ValueError(f"reshape must be 'reshape' or 'flatten', got {reshape!r}")
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    # MXNet's scalar ops: (x - 127.5) * (1 / 128).
    nodes.append(helper.make_node("Sub", ["data", const("_minusscalar0_scalar", np.float32(127.5))],
                                  ["_minusscalar0"], name="_minusscalar0"))
    nodes.append(helper.make_node("Mul", ["_minusscalar0", const("_mulscalar0_scalar", np.float32(0.0078125))],
                                  ["_mulscalar0"], name="_mulscalar0"))
    x, c_in = "_mulscalar0", 3
    for i, c_out in enumerate(_CHANNELS):
        # He-scaled 3x3 stride-2 convolutions keep activations of order 1 through the stack.
        w = rng.normal(0, np.sqrt(2.0 / (9 * c_in)), size=(c_out, c_in, 3, 3)).astype(np.float32)
        nodes.append(helper.make_node("Conv", [x, const(f"conv{i}_weight", w)], [f"conv{i}"], name=f"conv{i}",
                                      kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
        bn = [
            const(f"bn{i}_gamma", rng.uniform(0.8, 1.2, c_out).astype(np.float32)),
            const(f"bn{i}_beta", rng.normal(0, 0.1, c_out).astype(np.float32)),
            const(f"bn{i}_moving_mean", rng.normal(0, 0.1, c_out).astype(np.float32)),
            const(f"bn{i}_moving_var", rng.uniform(0.8, 1.2, c_out).astype(np.float32)),
        ]
        nodes.append(helper.make_node("BatchNormalization", [f"conv{i}", *bn], [f"bn{i}"], name=f"bn{i}",
                                      epsilon=2e-5, momentum=0.9))
        slope = np.full((c_out, 1, 1), 0.25, np.float32)  # MXNet's PReLU init, broadcast over H, W
        nodes.append(helper.make_node("PRelu", [f"bn{i}", const(f"relu{i}_gamma", slope)], [f"relu{i}"],
                                      name=f"relu{i}"))
        x, c_in = f"relu{i}", c_out
    if reshape == "reshape":
        nodes.append(helper.make_node("Reshape", [x, const("flatten_shape", np.array([1, -1], np.int64))],
                                      ["flatten0"], name="flatten0"))
    else:
        nodes.append(helper.make_node("Flatten", [x], ["flatten0"], name="flatten0", axis=1))

    features = c_in * (INPUT_SIZE // 2 ** len(_CHANNELS)) ** 2
    outputs = KINDS[kind]
    # On real face crops the features have an rms of about 0.4, so these weights add
    # image-dependent offsets of about +-0.1 (about +-0.05 from one face to another).
    weight = rng.normal(0, 0.25 / np.sqrt(features), size=(outputs, features)).astype(np.float32)
    nodes.append(helper.make_node("Gemm", ["flatten0", const("fc1_weight", weight), const("fc1_bias",
                                  _face_layout(rng, kind))], ["fc1"], name="fc1", alpha=1.0, beta=1.0, transB=1))

    graph = helper.make_graph(
        nodes,
        f"standin_{kind}",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, outputs])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)],
                              producer_name="facecrop-tests-standin")
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    onnx.save(model, path)
    return path
