"""ONNX -> batch-capable, compile-clean ``torch.fx.GraphModule``.

The official InsightFace ONNX files have two properties that stop a raw
onnx2torch conversion from being compiled or batched:

* shapes are computed at run time (``Shape -> Gather -> Concat -> Resize``),
  which ``torch.compile(fullgraph=True)`` and ``torch.export`` cannot trace
  through, because onnx2torch turns the shape tensors into Python lists;
* the batch of 1 is baked into the graph: ``Reshape`` targets (``[-1, 1]``
  after a transpose that moved the batch axis inwards, ``[1, -1, 4]``) and
  constant ``Resize`` sizes.

:func:`convert_onnx` fixes both in a general way, for any graph:

1. the input is given its static spatial size and every tensor that depends
   only on constants and shapes is evaluated once (by onnxruntime) and folded
   into an initializer, so no shape is computed at run time;
2. after onnx2torch, ``Resize`` gets its spatial output size as Python ints,
   and every ``Reshape`` becomes a :class:`BatchReshape` that first moves the
   batch axis to the front and then reshapes each sample to its batch-1
   target. Where the batch axis is at each reshape is *measured*, not assumed:
   the graph is run once at batch 1 and once at batch 3, node by node, and the
   batch axis is the one dim whose size differs. So a graph converted at batch
   1 runs any batch, and outputs that had merged the batch into their first
   axis gain a leading batch axis.
"""

from __future__ import annotations

import operator
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from facecrop.runtime.errors import UsageError


class BatchReshape(nn.Module):
    """Reshape each sample of a batch: ``x`` with its batch at ``batch_axis`` -> ``[B, *sample_shape]``."""

    def __init__(self, batch_axis: int, sample_shape: tuple[int, ...]):
        super().__init__()
        self.batch_axis = int(batch_axis)
        self.sample_shape = tuple(int(s) for s in sample_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.movedim(self.batch_axis, 0).reshape((x.shape[self.batch_axis],) + self.sample_shape)

    def extra_repr(self) -> str:
        return f"batch_axis={self.batch_axis}, sample_shape={self.sample_shape}"


class StaticResize(nn.Module):
    """Resize the spatial dims of ``[B, C, H, W]`` to a fixed ``size`` (nearest or bilinear)."""

    def __init__(self, size: tuple[int, int], mode: str, align_corners: bool | None):
        super().__init__()
        self.size = tuple(int(s) for s in size)
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=self.size, mode=self.mode, align_corners=self.align_corners)

    def extra_repr(self) -> str:
        return f"size={self.size}, mode={self.mode!r}"


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load and check an ONNX file, turning parser failures into one clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as err:  # onnx raises several unrelated types for bad files
        raise UsageError(f"{path} is not a valid ONNX model (truncated or corrupt?): {err}") from None
    if not _graph_inputs(model):
        raise UsageError(f"{path} has no graph input")
    return model


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def input_shape(model: onnx.ModelProto) -> list[int | None]:
    """Static dims of the single image input; ``None`` where the file leaves a dim free."""
    inputs = _graph_inputs(model)
    if len(inputs) != 1:
        raise UsageError(f"expected one image input, the model has {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]


def fix_input_size(model: onnx.ModelProto, height: int, width: int) -> onnx.ModelProto:
    """Copy of ``model`` whose image input is ``[1, C, height, width]``.

    Raises:
        ValueError: the file fixes a different spatial size (e.g. a 640x640 zoo export).
    """
    dims = input_shape(model)
    if len(dims) != 4:
        raise UsageError(f"expected a 4-D image input [1, C, H, W], the model's input has {len(dims)} dims")
    fixed_h, fixed_w = dims[2], dims[3]
    if (fixed_h is not None and fixed_h != height) or (fixed_w is not None and fixed_w != width):
        raise UsageError(
            f"the model has a fixed input size of {fixed_w}x{fixed_h} (width x height); "
            f"it cannot run at {width}x{height}: use det_size=({fixed_w}, {fixed_h})"
        )
    model = onnx.ModelProto.FromString(model.SerializeToString())
    shape = _graph_inputs(model)[0].type.tensor_type.shape
    for dim, value in zip(shape.dim, (1, dims[1] or 3, height, width)):
        dim.Clear()
        dim.dim_value = value
    return model


def _run_all_values(model: onnx.ModelProto, example: np.ndarray) -> dict[str, np.ndarray]:
    """Every intermediate tensor of ``model`` on ``example``, computed by onnxruntime."""
    import onnxruntime as ort

    probe = onnx.ModelProto.FromString(model.SerializeToString())
    for output in probe.graph.output:
        # The file declares its outputs for its own input size; at another size that only makes warnings.
        output.type.tensor_type.ClearField("shape")
    known = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name and name not in known:
                probe.graph.output.append(onnx.ValueInfoProto(name=name))
                known.add(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {_graph_inputs(model)[0].name: example})
    return dict(zip(names, values))


def fold_shape_computations(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold every tensor computed only from constants and static shapes.

    ``model`` must have a fully static input (see :func:`fix_input_size`).
    """
    graph = model.graph
    image = _graph_inputs(model)[0]
    example = np.zeros([d.dim_value for d in image.type.tensor_type.shape.dim], np.float32)
    values = _run_all_values(model, example)

    static = {i.name for i in graph.initializer}
    folded_nodes = []
    for node in graph.node:
        # Shape only reads the (static) shape of its input; other ops fold when all inputs are static.
        if node.op_type == "Shape" or all(not name or name in static for name in node.input):
            static.update(o for o in node.output if o)
            folded_nodes.append(node)
    folded = {id(n) for n in folded_nodes}
    kept = [n for n in graph.node if id(n) not in folded]

    needed = {name for n in kept for name in n.input} | {o.name for o in graph.output}
    existing = {i.name for i in graph.initializer}
    new_initializers = [
        numpy_helper.from_array(values[name], name)
        for name in sorted(needed & static - existing)
    ]
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(new_initializers)
    return model


def _static_onnx_to_torch(model: onnx.ModelProto) -> nn.Module:
    from onnx2torch import convert

    # onnx2torch warns about Resize modes it maps approximately; nearest/asymmetric/floor is exact.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # eval() before anything runs it: BatchNorm in training mode would overwrite its statistics.
        return convert(model).eval()


def _batch_axis(batched: torch.Size, single: torch.Size, batch: int, where: str) -> int:
    differing = [i for i, (a, b) in enumerate(zip(batched, single)) if a != b]
    if len(batched) != len(single) or len(differing) != 1 or batched[differing[0]] != batch * single[differing[0]]:
        raise UsageError(f"{where}: cannot locate the batch axis (batch-1 shape {tuple(single)}, "
                         f"batch-{batch} shape {tuple(batched)}); this graph mixes samples")
    return differing[0]


class _BatchRewriter(torch.fx.Interpreter):
    """Runs the graph at batch ``batch`` and swaps each Reshape for a :class:`BatchReshape`."""

    def __init__(self, gm: torch.fx.GraphModule, batch: int):
        super().__init__(gm)
        self.batch = batch
        self.replacements: dict[str, BatchReshape] = {}

    def run_node(self, node: torch.fx.Node):
        from onnx2torch.node_converters.reshape import OnnxReshape

        if node.op == "call_module" and isinstance(self.module.get_submodule(node.target), OnnxReshape):
            args, _ = self.fetch_args_kwargs_from_env(node)
            target = node.target
            single_in = node.args[0].meta["tensor_meta"].shape
            single_out = tuple(node.meta["tensor_meta"].shape)
            axis = _batch_axis(args[0].shape, single_in, self.batch, f"Reshape {target}")
            # A batch-1 target [1, ...] kept the batch axis; any other target merged it into dim 0.
            sample = single_out[1:] if single_out[0] == 1 else single_out
            self.replacements[node.name] = BatchReshape(axis, sample)
            return self.replacements[node.name](args[0])
        return super().run_node(node)


def _make_batch_generic(gm: torch.fx.GraphModule, example: torch.Tensor) -> torch.fx.GraphModule:
    """Rewrite the batch-1 ``gm`` so that it runs any batch (see the module doc)."""
    from onnx2torch.node_converters.resize import OnnxResize

    ShapeProp(gm).propagate(example)
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), OnnxResize):
            module = gm.get_submodule(node.target)
            if module.onnx_mode not in ("nearest", "linear"):
                raise UsageError(f"Resize {node.target}: mode {module.onnx_mode!r} is not supported")
            mode = "nearest" if module.onnx_mode == "nearest" else "bilinear"
            size = tuple(node.meta["tensor_meta"].shape)[2:]
            _replace_node(gm, node, StaticResize(size, mode, module.align_corners))

    batch = 3
    rewriter = _BatchRewriter(gm, batch)
    rewriter.run(example.expand(batch, *example.shape[1:]).clone())
    for node in list(gm.graph.nodes):
        if node.name in rewriter.replacements:
            _replace_node(gm, node, rewriter.replacements[node.name])
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _conv_geometry(conv: nn.Conv2d) -> tuple:
    return (conv.in_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.padding_mode,
            conv.bias is not None, conv.weight.dtype)


def _merge_sibling_convs(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Fuse ungrouped ``Conv2d`` calls on the same input with the same geometry into one, split after."""
    for node in list(gm.graph.nodes):
        siblings: dict[tuple, list[torch.fx.Node]] = {}
        for user in node.users:
            module = gm.get_submodule(user.target) if user.op == "call_module" else None
            if isinstance(module, nn.Conv2d) and module.groups == 1 and user.args == (node,) and not user.kwargs:
                siblings.setdefault(_conv_geometry(module), []).append(user)
        for convs in (group for group in siblings.values() if len(group) > 1):
            modules = [gm.get_submodule(conv.target) for conv in convs]
            first = modules[0]
            widths = [m.out_channels for m in modules]
            merged = nn.Conv2d(first.in_channels, sum(widths), first.kernel_size, first.stride, first.padding,
                               first.dilation, bias=first.bias is not None, padding_mode=first.padding_mode)
            merged.weight.data = torch.cat([m.weight.data for m in modules])
            if first.bias is not None:
                merged.bias.data = torch.cat([m.bias.data for m in modules])
            name = f"merged_{convs[0].name}"
            gm.add_submodule(name, merged)
            with gm.graph.inserting_before(min(convs, key=lambda c: list(gm.graph.nodes).index(c))):
                parts = gm.graph.call_function(torch.split, (gm.graph.call_module(name, (node,)), widths, 1))
                for i, conv in enumerate(convs):
                    conv.replace_all_uses_with(gm.graph.call_function(operator.getitem, (parts, i)))
            for conv in convs:
                gm.graph.erase_node(conv)
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _own_storage(module: nn.Module) -> None:
    """Give every parameter and buffer its own storage.

    onnx2torch can leave several weights as views of one storage (seen with det_2.5g);
    ``torch.export.save`` then fails to group them ("numel: integer multiplication overflow").
    """
    for sub in module.modules():
        for name, param in sub.named_parameters(recurse=False):
            param.data = param.data.clone()
        for name, buffer in sub.named_buffers(recurse=False):
            if buffer is not None:
                sub._buffers[name] = buffer.clone()


def _replace_node(gm: torch.fx.GraphModule, node: torch.fx.Node, module: nn.Module) -> None:
    """Replace a call of ``node`` (data input first) by a call of ``module`` on its data input."""
    name = f"batched_{node.name}"
    gm.add_submodule(name, module)
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(name, (node.args[0],))
    new.meta = dict(node.meta)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)


class ConvertedNet(nn.Module):
    """A converted ONNX network: ``float [B, C, H, W]`` -> tuple of outputs, each ``[B, ...]``.

    Attributes:
        output_names: the ONNX output names, in the order of the returned tuple.
    """

    def __init__(self, net: torch.fx.GraphModule, output_names: tuple[str, ...]):
        super().__init__()
        self.net = net
        self.output_names = output_names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # An fp16 bundle halves the nets only (see facecrop.bundle): the input follows the weights and
        # the outputs return to float32, so that anchor decoding, NMS and the crop geometry stay float32.
        dtype = next(self.net.parameters()).dtype
        out = self.net(x.to(dtype))
        out = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        return tuple(o.float() for o in out)

    def extra_repr(self) -> str:
        return f"output_names={self.output_names}"


def convert_onnx(model: onnx.ModelProto | str | Path, height: int, width: int) -> ConvertedNet:
    """Convert an image ONNX model to a batch-capable, compile-clean module.

    Args:
        model: an ONNX model or a path to one; its batch may be fixed at 1.
        height, width: the spatial input size the module is specialised for.

    Returns:
        A :class:`ConvertedNet` taking ``float [B, C, height, width]`` for any ``B``;
        output ``i`` for sample ``b`` equals the ONNX output ``i`` for that sample
        alone, with the file's batch axis of 1 (if it had one) replaced by ``B``.
    """
    if not isinstance(model, onnx.ModelProto):
        model = load_onnx(model)
    fixed = fix_input_size(model, height, width)
    folded = fold_shape_computations(fixed)
    gm = _static_onnx_to_torch(folded)
    channels = input_shape(fixed)[1]
    example = torch.rand(1, channels, height, width, generator=torch.Generator().manual_seed(0))
    gm = _merge_sibling_convs(_make_batch_generic(gm, example))
    _own_storage(gm)
    names = tuple(o.name for o in folded.graph.output)
    return ConvertedNet(gm, names).eval().requires_grad_(False)
