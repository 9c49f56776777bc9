"""Write versioned bundles: ``bundles/<name>/<version>/`` with the compiled module and its manifest.

A bundle is built in a temporary folder beside its final place, verified by loading it with
:func:`facecrop.runtime.load_bundle` (artifact SHA-256, golden self-check) plus a run at batch 1
and 3 against the eager module, and only then renamed into place, so no half-written bundle is
ever visible under its version. The format is documented in ``bundles/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from facecrop import __version__
from facecrop.convert import ConvertedNet
from facecrop.pipeline_config import PipelineConfig
from facecrop.runtime.bundle import (FORMAT_VERSION, MANIFEST, MAX_SIDE, MIN_SIDE, BundleError, compare_outputs,
                                     load_bundle, read_manifest, sha256_file)
from facecrop.runtime.errors import UsageError

BACKENDS = {"torchscript": "model.ts", "export": "model.pt2", "aoti": "model_aoti.pt2", "tensorrt": "model_trt.pt2"}
# The fastest backend on each device type, what `facecrop export` builds without --backend. On the CPU, measured
# on Medusa's real videos (decode included): aoti 1.34x the InsightFace loop, export 0.54x, torchscript 0.39x.
FASTEST_BACKEND = {"cpu": "aoti", "cuda": "aoti"}
# What compiling each backend costs, for the progress line (the module with det_500m, 2 CPU cores).
COMPILE_TIME = {"torchscript": "seconds", "export": "seconds", "aoti": "about 4 minutes on 2 CPU cores",
                "tensorrt": "minutes"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
# Load-time tolerances of the golden self-check against the eager fp32 reference (bundles/README.md).
TOLERANCES = {
    "fp32": {"coords_px": 1e-3, "conf": 1e-3, "crop_grey": 1, "crop_stat": "max"},
    "fp16": {"coords_px": 1.0, "conf": 2e-2, "crop_grey": 4, "crop_stat": "mean"},
}
MAX_BATCH = 4096


def golden_tolerance(config: PipelineConfig, dtype: str, max_side: int) -> dict:
    """The self-check tolerance for this pipeline on frames up to ``max_side`` px (see bundles/README.md).

    fp32 coordinates agree to 1e-3 px in the detector's input; a frame larger than the
    detector input multiplies that by the resize factor (1080p at 224: x8.6). Landmark
    crops are rounded to uint8 like InsightFace's, which turns 1e-6 float differences
    between kernels into ~0.01 px landmark moves, so landmark pipelines get 0.05 px and
    crops are judged by their mean grey level.
    """
    tolerance = dict(TOLERANCES[dtype])
    if dtype == "fp32":
        factor = max(max_side / min(config.det_size), 1.0)
        tolerance["coords_px"] = 1e-3 * factor
        if config.landmarks:
            tolerance.update(coords_px=max(tolerance["coords_px"], 0.05), crop_stat="mean")
    return tolerance


_SEMVER = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _step(text: str, start: Optional[float] = None) -> None:
    took = "" if start is None else f" ({time.perf_counter() - start:.1f} s)"
    print(f"[facecrop export] {text}{took}", file=sys.stderr, flush=True)


def default_name(config: PipelineConfig, backend: str, device: str, dtype: str) -> str:
    """e.g. ``det_500m-align112-det224-export-cpu-fp32`` (model names, crop, detector size, build)."""
    parts = [Path(config.detector).stem]
    if config.landmarks:
        parts.append(Path(config.landmarks).stem)
    if config.crop != "none":
        parts.append(f"{config.crop}{config.crop_size or (112 if config.crop == 'align' else 224)}")
    det_w, det_h = config.det_size
    parts += [f"det{det_w}" if det_w == det_h else f"det{det_w}x{det_h}", backend, torch.device(device).type, dtype]
    return "-".join(parts)


def default_golden_frames() -> list[torch.Tensor]:
    """Real photos with faces at two sizes: uint8 ``[1, 3, 886, 1280]`` and ``[2, 3, 512, 384]``.

    InsightFace's ``t1.jpg`` (six faces) at its own size, and a portrait cut of scikit-image's
    astronaut with its mirror image, when those packages are installed (the ``dev`` extra);
    otherwise deterministic gradients of the same sizes, so export works on a bare build install.
    Two sizes (landscape and portrait) show on every load that the bundle serves any frame size.
    """
    from PIL import Image

    try:
        import insightface

        with Image.open(Path(insightface.__file__).parent / "data" / "images" / "t1.jpg") as img:
            landscape = np.asarray(img.convert("RGB"))[None]
    except ImportError:
        landscape = np.linspace(0, 255, 886 * 1280 * 3).reshape(1, 886, 1280, 3).astype(np.uint8)
    try:
        from skimage.data import astronaut

        portrait = astronaut()[:, 64:448]
    except ImportError:
        portrait = np.linspace(0, 255, 512 * 384 * 3).reshape(512, 384, 3).astype(np.uint8)
    portrait = np.stack([portrait, portrait[:, ::-1]])
    return [torch.from_numpy(np.array(f)).permute(0, 3, 1, 2).contiguous() for f in (landscape, portrait)]


def _check_frames(frames: list[torch.Tensor]) -> None:
    if not frames or not all(isinstance(f, torch.Tensor) and f.dtype == torch.uint8 and f.ndim == 4
                             and f.shape[1] == 3 and f.shape[0] >= 1 for f in frames):
        got = [f"{f.dtype} {tuple(f.shape)}" if isinstance(f, torch.Tensor) else type(f).__name__ for f in frames]
        raise UsageError(f"golden_frames must be a non-empty list of uint8 [b, 3, H, W] batches, got {got}")
    for f in frames:
        if not (MIN_SIDE <= min(f.shape[2:]) and max(f.shape[2:]) <= MAX_SIDE):
            raise UsageError(f"golden frames of {f.shape[3]}x{f.shape[2]} are outside {MIN_SIDE}-{MAX_SIDE} px a side")


def _unseen_size(frames: torch.Tensor) -> torch.Tensor:
    """An odd-sized cut of ``frames`` (a size no golden case has) to verify that any size works."""
    height, width = frames.shape[2:]
    return frames[:, :, : max(MIN_SIDE, height * 3 // 4) | 1, : max(MIN_SIDE, width * 5 // 6) | 1].contiguous()


def _check_request(config: PipelineConfig, backend: str, device: str, dtype: str, name: str, version: str) -> None:
    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    if dtype not in DTYPES:
        raise UsageError(f"dtype must be 'fp32' or 'fp16', got {dtype!r}")
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda"):
        raise UsageError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} asked for, but this machine has no usable CUDA device")
    if dtype == "fp16" and kind != "cuda":
        raise UsageError("dtype 'fp16' needs a CUDA device (--device cuda); use fp32 on the CPU")
    if backend == "tensorrt":
        if kind != "cuda":
            raise UsageError("the tensorrt backend runs on NVIDIA GPUs only: use --device cuda")
        try:
            import torch_tensorrt  # noqa: F401
        except ImportError:
            raise UsageError("the tensorrt backend needs torch-tensorrt (pip install 'facecrop[gpu]')") from None
    if not _SEMVER.match(version):
        raise UsageError(f"version must be a semantic version like 1.0.0, got {version!r}")
    if not _NAME.match(name):
        raise UsageError(f"bundle name must be letters, digits, '.', '_' or '-', got {name!r}")


def cpu_kernel_configs() -> dict:
    """Inductor settings for the CPU kernels of an ``aoti`` bundle built on this machine.

    The module's own kernels (letterbox, crops) gather pixels at computed 64-bit offsets. AVX2 has
    no 64-bit integer multiply or conversion, so inductor's AVX2 code emulates them lane by lane
    and runs slower than its scalar code: the fused module at 480p, batch 8, one thread took 7.61
    ms/frame vectorised and 5.93 ms/frame scalar on an AMD EPYC without AVX-512. AVX-512 has those
    instructions (earlier machines measured the vectorised code there), and the convolutions are
    oneDNN's either way, so only AVX2-only machines get scalar kernels.
    """
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    return {"cpp.simdlen": 1} if str(pick_vec_isa()) == "avx2" else {}


def _save_artifact(module: torch.nn.Module, frames: torch.Tensor, backend: str, dtype: str, path: Path) -> dict:
    """Compile/serialise ``module`` for uint8 frames with dynamic batch, height and width.

    Returns the inductor settings an ``aoti`` artifact was compiled with (recorded in the manifest).
    """
    dims = {0: torch.export.Dim("batch", min=1, max=MAX_BATCH),
            2: torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE),
            3: torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE)}
    if backend == "torchscript":
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream but still the portable format; the tracer's warnings
            # about shape checks are moot because write_bundle verifies the trace at other batch and
            # frame sizes than the one it was traced at.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.jit.save(torch.jit.trace(module, (frames,), check_trace=False), str(path))
        return {}
    if backend == "tensorrt":
        import torch_tensorrt

        # One optimisation profile covers every frame size within the bounds (untested: no GPU yet).
        spec = torch_tensorrt.Input(min_shape=(1, 3, MIN_SIDE, MIN_SIDE), opt_shape=tuple(frames.shape),
                                    max_shape=(64, 3, MAX_SIDE, MAX_SIDE), dtype=torch.uint8)
        compiled = torch_tensorrt.compile(module, ir="dynamo", inputs=[spec], enabled_precisions={DTYPES[dtype]})
        torch_tensorrt.save(compiled, str(path), output_format="exported_program", inputs=[frames])
        return {}
    # torch.cond traces its branches with dynamo, whose cache outlives an export: an earlier export
    # in this process at a fixed frame size left entries whose guards, checked here, pinned the
    # height (`720 != height`, a constraint violation). Each export starts from an empty cache.
    torch._dynamo.reset()
    program = torch.export.export(module, (frames,), dynamic_shapes=(dims,), strict=False)
    if backend == "export":
        torch.export.save(program, path)
        return {}
    # Freezing folds the weights into the compiled code as constants (oneDNN convolutions with
    # prepacked weights and fused activations on the CPU). Inductor freezes only with autograd
    # off: without no_grad() every convolution stayed a plain aten call (measured in the wrapper).
    configs = {"freezing": True, **(cpu_kernel_configs() if frames.device.type == "cpu" else {})}
    with torch.no_grad():
        torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs=configs)
    return configs


def _spec(outputs: dict[str, np.ndarray]) -> list[dict]:
    return [{"name": k, "dtype": str(v.dtype), "shape": ["B", *v.shape[1:]]} for k, v in outputs.items()]


def _run(module, frames: torch.Tensor, names: list[str], device: str) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        return {k: v.cpu().numpy() for k, v in zip(names, module(frames.to(device)))}


def write_bundle(module: torch.nn.Module, config: PipelineConfig, *, backend: str, device: str = "cpu",
                 dtype: str = "fp32", out_root: str | Path = "bundles", name: Optional[str] = None,
                 version: str = "1.0.0", source_models: dict[str, Path],
                 golden_frames: Optional[list[torch.Tensor]] = None) -> Path:
    """Compile ``module`` and write the bundle ``<out_root>/<name>/<version>/``.

    Args:
        module: the end-to-end module: uint8 frames ``[B, 3, H, W]`` of any size within
            ``MIN_SIDE``-``MAX_SIDE`` px a side -> tuple of tensors ordered as its ``output_names``.
        config: the configuration it was built from (stored in the manifest).
        backend: ``'torchscript'``, ``'export'``, ``'aoti'`` or ``'tensorrt'`` (CUDA only).
        device: ``'cpu'`` or ``'cuda[:N]'``; dtype: ``'fp32'`` or ``'fp16'`` (CUDA only).
        out_root: folder holding all bundles.
        name: bundle name (default :func:`default_name`); version: semantic version.
        source_models: ``{role: path}`` of the ONNX files used, hashed into the manifest.
        golden_frames: batches uint8 ``[b, 3, H, W]``, at least two sizes, for the self-check
            (default :func:`default_golden_frames`: real photos with faces). The first batch of
            two or more frames is the example the artifact is compiled with.

    Returns:
        The bundle folder. Raises ValueError for a bad request or an existing version, and
        BundleError when the compiled module does not reproduce the eager one.

    Example:
        >>> write_bundle(build_pipeline(cfg), cfg, backend="export", source_models={"detector": p})  # doctest: +SKIP
        PosixPath('bundles/det_500m-align112-det224-export-cpu-fp32/1.0.0')
    """
    name = name or default_name(config, backend, device, dtype)
    _check_request(config, backend, device, dtype, name, version)
    target = Path(out_root) / name / version
    if target.exists():
        raise UsageError(f"bundle {target} already exists; pick another --version or --name (bundles are immutable)")
    cases = default_golden_frames() if golden_frames is None else list(golden_frames)
    _check_frames(cases)
    names = list(module.output_names)
    max_side = max(max(f.shape[2:]) for f in cases)
    tolerance = golden_tolerance(config, dtype, max_side)

    start = time.perf_counter()
    module = module.eval().to(device)
    # Beyond the golden cases, the compiled module must match eager on a batch of 1, a batch of 3
    # and an odd size that no golden case has: batch, height and width really are dynamic.
    checks = [cases[0][:1], torch.cat([cases[-1], cases[-1][:1]]), _unseen_size(cases[-1])]
    reference = [_run(module, f, names, device) for f in cases]
    eager_checks = [_run(module, f, names, device) for f in checks]
    sizes = ", ".join(f"{f.shape[3]}x{f.shape[2]}" for f in cases)
    faces = sum(int(r["valid"].sum()) for r in reference)
    _step(f"1/4 eager fp32 reference on the golden frames ({sizes}): {faces} faces", start)

    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=target.parent))
    try:
        start = time.perf_counter()
        artifact = build / BACKENDS[backend]
        compiled = module
        if dtype == "fp16" and backend != "tensorrt":
            for net in module.modules():  # the nets only: coordinates and crops stay float32
                if isinstance(net, ConvertedNet):
                    net.half()
        # An example batch of 1 would make torch.export specialise the batch to 1.
        example = next((f for f in cases if len(f) >= 2), torch.cat([cases[0], cases[0]]))
        # Channels-last, as the runtime decodes frames: the gathers read a pixel's three channels side by side.
        example = example.to(device).contiguous(memory_format=torch.channels_last)
        _step(f"2/4 compiling the {backend} artifact ({COMPILE_TIME[backend]}) ...")
        compile_configs = _save_artifact(compiled, example, backend, dtype, artifact)
        _step(f"2/4 {backend} artifact {artifact.name}: {artifact.stat().st_size / 1e6:.1f} MB", start)

        start = time.perf_counter()
        golden = build / "golden.npz"
        arrays = {}
        for i, (frames, outputs) in enumerate(zip(cases, reference)):
            arrays[f"case{i}.input.frames"] = frames.numpy()
            arrays.update({f"case{i}.output.{k}": v for k, v in outputs.items()})
        with open(golden, "wb") as f:
            np.savez(f, **arrays)
        manifest = _manifest(config, backend, device, dtype, name, version, source_models,
                             reference[0], artifact, golden, cases, tolerance, compile_configs)
        (build / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _step("3/4 manifest and golden pairs written", start)

        start = time.perf_counter()
        bundle = load_bundle(build, device=device)  # the runtime's own checks, golden pairs included
        for frames, want in zip(checks, eager_checks):
            compare_outputs(want, {k: v.cpu().numpy() for k, v in bundle(frames).items()}, tolerance)
        worst = ", ".join(f"{k} {v:.2g}" for k, v in bundle.golden_diffs.items())
        _step(f"4/4 verified: loads in the runtime, matches eager at {sizes} and at batch 1, batch 3 and "
              f"{checks[-1].shape[3]}x{checks[-1].shape[2]} (max diffs: {worst})", start)
        mask = os.umask(0)
        os.umask(mask)
        build.chmod(0o777 & ~mask)  # mkdtemp's 0700 would hide the bundle from the other users of a shared disk
        try:
            build.rename(target)
        except OSError:
            raise UsageError(f"bundle {target} appeared while this one was built; not overwriting it") from None
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return target


# The weights a bundle carries are InsightFace's: their terms travel with every bundle and crops folder.
MODELS_LICENCE = {
    "models": "InsightFace pretrained models (SCRFD detectors, 2d106det, 1k3d68)",
    "terms": "non-commercial research use only, as InsightFace releases them",
    "source": "https://github.com/deepinsight/insightface (release v0.7, buffalo packs)",
}


def _manifest(config, backend, device, dtype, name, version, source_models, reference, artifact, golden,
              cases, tolerance, compile_configs) -> dict:
    import torchvision

    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": version,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "facecrop_version": __version__,
        "config": config.to_dict(),
        "source_models": {role: {"file": Path(p).name, "sha256": sha256_file(p)} for role, p in source_models.items()},
        "licence": MODELS_LICENCE,
        "environment": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                        "python": platform.python_version(), "platform": platform.platform()},
        "backend": backend,
        "device": torch.device(device).type,
        "dtype": dtype,
        "input": {"name": "frames", "dtype": "uint8", "shape": ["B", 3, "H", "W"], "color": "RGB",
                  "memory_format": "channels_last",
                  "max_batch": MAX_BATCH, "min_side": MIN_SIDE, "max_side": MAX_SIDE},
        "outputs": _spec(reference),
        "artifact": {"file": artifact.name, "sha256": sha256_file(artifact),
                     **({"inductor_configs": compile_configs} if backend == "aoti" else {})},
        "golden": {"file": golden.name, "sha256": sha256_file(golden),
                   "cases": [{"frames": int(f.shape[0]), "size": [int(f.shape[3]), int(f.shape[2])]} for f in cases],
                   "reference": "eager module, fp32", "tolerance": tolerance},
    }


def export_from_args(args: argparse.Namespace) -> Path:
    """``facecrop export``: build the pipeline from the CLI options, write and verify its bundle."""
    from facecrop.pipeline import build_pipeline
    from facecrop.zoo import resolve_model

    config = PipelineConfig(detector=str(args.detector), landmarks=args.landmarks, crop=args.crop,
                            det_size=tuple(args.det_size),
                            crop_size=args.crop_size, max_faces=args.max_faces,
                            det_threshold=args.det_threshold, nms_threshold=args.nms_threshold)
    sources = {"detector": resolve_model(config.detector, args.model_dir)}
    if config.landmarks:
        sources["landmarks"] = resolve_model(config.landmarks, args.model_dir)
    start = time.perf_counter()
    module = build_pipeline(config, model_dir=args.model_dir)
    _step(f"0/4 built the pipeline from {', '.join(p.name for p in sources.values())}", start)
    backend = args.backend or FASTEST_BACKEND[torch.device(args.device).type]
    path = write_bundle(module, config, backend=backend, device=args.device, dtype=args.dtype,
                        out_root=args.out, name=args.name, version=args.version, source_models=sources)
    print(path)
    return path


def inspect_from_args(args: argparse.Namespace) -> None:
    """``facecrop inspect``: print the manifest, then load the bundle with every runtime check."""
    manifest = read_manifest(Path(args.bundle))
    print(json.dumps(manifest, indent=2))
    licence = manifest.get("licence")
    print("models' licence: " + (f"{licence['terms']} ({licence['models']}; {licence['source']})" if licence
                                 else "not recorded (a bundle from before licences were recorded): "
                                      f"{MODELS_LICENCE['terms']} ({MODELS_LICENCE['source']})"))
    start = time.perf_counter()
    try:
        bundle = load_bundle(args.bundle, device=args.device)
    except BundleError as err:
        raise BundleError(f"verification failed: {err}") from None
    worst = ", ".join(f"{k} {v:.2g}" for k, v in bundle.golden_diffs.items())
    print(f"verified {bundle!r}: SHA-256 and golden self-check pass, max diffs {worst} "
          f"({time.perf_counter() - start:.1f} s)")
