"""Write versioned bundles: ``bundles/<name>/<version>/`` with the compiled module and its manifest.

A bundle is built in a temporary folder beside its final place, verified by loading it with
:func:`facecrop.runtime.load_bundle` (artifact SHA-256, golden self-check) plus a run at batch 1
and 3 against the eager module, and only then renamed into place, so no half-written bundle is
ever visible under its version. The format is documented in ``bundles/README.md``.
"""

from __future__ import annotations

import argparse
import json
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
from facecrop.pipeline_config import PipelineConfig
from facecrop.runtime.bundle import (FORMAT_VERSION, MANIFEST, BundleError, compare_outputs, load_bundle,
                                     read_manifest, sha256_file)

BACKENDS = {"torchscript": "model.ts", "export": "model.pt2", "aoti": "model_aoti.pt2", "tensorrt": "model_trt.pt2"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
# Load-time tolerances of the golden self-check against the eager fp32 reference (bundles/README.md).
TOLERANCES = {
    "fp32": {"coords_px": 1e-3, "conf": 1e-3, "crop_grey": 1, "crop_stat": "max"},
    "fp16": {"coords_px": 1.0, "conf": 2e-2, "crop_grey": 4, "crop_stat": "mean"},
}
MAX_BATCH = 4096


def golden_tolerance(config: PipelineConfig, dtype: str) -> dict:
    """The self-check tolerance for this pipeline (see bundles/README.md for the reasons).

    fp32 coordinates agree to 1e-3 px in the detector's input; a frame larger than the
    detector input multiplies that by the resize factor (1080p at 224: x8.6). Landmark
    crops are rounded to uint8 like InsightFace's, which turns 1e-6 float differences
    between kernels into ~0.01 px landmark moves, so landmark pipelines get 0.05 px and
    crops are judged by their mean grey level.
    """
    tolerance = dict(TOLERANCES[dtype])
    if dtype == "fp32":
        factor = max(max(config.frame_size) / min(config.det_size), 1.0)
        tolerance["coords_px"] = 1e-3 * factor
        if config.landmarks:
            tolerance.update(coords_px=max(tolerance["coords_px"], 0.05), crop_stat="mean")
    return tolerance
_SEMVER = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _step(text: str, start: float) -> None:
    print(f"[facecrop export] {text} ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)


def default_name(config: PipelineConfig, backend: str, device: str, dtype: str) -> str:
    """e.g. ``det_500m-align112-320x240-export-cpu-fp32`` (model names, crop, frame size, build)."""
    parts = [Path(config.detector).stem]
    if config.landmarks:
        parts.append(Path(config.landmarks).stem)
    if config.crop != "none":
        parts.append(f"{config.crop}{config.crop_size or (112 if config.crop == 'align' else 224)}")
    parts += [f"{config.frame_size[0]}x{config.frame_size[1]}", backend, torch.device(device).type, dtype]
    return "-".join(parts)


def default_golden_frames(frame_size: tuple[int, int]) -> torch.Tensor:
    """Two real photos with faces, letterboxed to ``frame_size``: uint8 ``[2, 3, H, W]``.

    scikit-image's astronaut and InsightFace's ``t1.jpg`` when those packages are installed (the
    ``dev`` extra), else two deterministic gradient images, so export works on a bare build install.
    """
    import av

    from facecrop.runtime.video import letterbox

    photos = []
    try:
        from skimage.data import astronaut

        photos.append(astronaut())
    except ImportError:
        pass
    try:
        import insightface

        photos.append(av.open(str(Path(insightface.__file__).parent / "data" / "images" / "t1.jpg")))
    except ImportError:
        pass
    frames = []
    for photo in photos:
        if isinstance(photo, np.ndarray):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(photo), format="rgb24")
        else:
            with photo:
                frame = next(photo.decode(video=0))
        frames.append(letterbox(frame, frame_size)[0])
    width, height = frame_size
    ramp = np.linspace(0, 255, width * height * 3).reshape(height, width, 3).astype(np.uint8)
    while len(frames) < 2:
        frames.append(ramp if not frames else ramp[::-1, ::-1].copy())
    return torch.from_numpy(np.stack(frames[:2])).permute(0, 3, 1, 2).contiguous()


def _check_request(config: PipelineConfig, backend: str, device: str, dtype: str, name: str, version: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'fp32' or 'fp16', got {dtype!r}")
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but this machine has no usable CUDA device")
    if dtype == "fp16" and kind != "cuda":
        raise ValueError("dtype 'fp16' needs a CUDA device (--device cuda); use fp32 on the CPU")
    if backend == "tensorrt":
        if kind != "cuda":
            raise ValueError("the tensorrt backend runs on NVIDIA GPUs only: use --device cuda")
        try:
            import torch_tensorrt  # noqa: F401
        except ImportError:
            raise ValueError("the tensorrt backend needs torch-tensorrt (pip install 'facecrop[gpu]')") from None
    if not _SEMVER.match(version):
        raise ValueError(f"version must be a semantic version like 1.0.0, got {version!r}")
    if not _NAME.match(name):
        raise ValueError(f"bundle name must be letters, digits, '.', '_' or '-', got {name!r}")


def _save_artifact(module: torch.nn.Module, frames: torch.Tensor, backend: str, dtype: str, path: Path) -> None:
    """Compile/serialise ``module`` for ``frames``-like inputs with a dynamic batch dimension."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    if backend == "torchscript":
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream but still the portable format; the tracer's warnings
            # about shape checks are moot because write_bundle verifies the trace at batch 1, 2 and 3.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.jit.save(torch.jit.trace(module, (frames,), check_trace=False), str(path))
        return
    if backend == "tensorrt":
        import torch_tensorrt

        height, width = frames.shape[2:]
        spec = torch_tensorrt.Input(min_shape=(1, 3, height, width), opt_shape=tuple(frames.shape),
                                    max_shape=(64, 3, height, width), dtype=torch.uint8)
        compiled = torch_tensorrt.compile(module, ir="dynamo", inputs=[spec], enabled_precisions={DTYPES[dtype]})
        torch_tensorrt.save(compiled, str(path), output_format="exported_program", inputs=[frames])
        return
    program = torch.export.export(module, (frames,), dynamic_shapes=({0: batch},), strict=False)
    if backend == "export":
        torch.export.save(program, path)
    else:
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))


def _spec(outputs: dict[str, np.ndarray]) -> list[dict]:
    return [{"name": k, "dtype": str(v.dtype), "shape": ["B", *v.shape[1:]]} for k, v in outputs.items()]


def write_bundle(module: torch.nn.Module, config: PipelineConfig, *, backend: str, device: str = "cpu",
                 dtype: str = "fp32", out_root: str | Path = "bundles", name: Optional[str] = None,
                 version: str = "1.0.0", source_models: dict[str, Path],
                 golden_frames: Optional[torch.Tensor] = None) -> Path:
    """Compile ``module`` and write the bundle ``<out_root>/<name>/<version>/``.

    Args:
        module: the end-to-end module: uint8 frames ``[B, 3, H, W]`` (H x W = ``config.frame_size``
            reversed) -> tuple of tensors ordered as its ``output_names`` attribute.
        config: the configuration it was built from (stored in the manifest).
        backend: ``'torchscript'``, ``'export'``, ``'aoti'`` or ``'tensorrt'`` (CUDA only).
        device: ``'cpu'`` or ``'cuda[:N]'``; dtype: ``'fp32'`` or ``'fp16'`` (CUDA only).
        out_root: folder holding all bundles.
        name: bundle name (default :func:`default_name`); version: semantic version.
        source_models: ``{role: path}`` of the ONNX files used, hashed into the manifest.
        golden_frames: uint8 ``[2, 3, H, W]`` frames for the self-check (default
            :func:`default_golden_frames`: real photos with faces).

    Returns:
        The bundle folder. Raises ValueError for a bad request or an existing version, and
        BundleError when the compiled module does not reproduce the eager one.

    Example:
        >>> write_bundle(build_pipeline(cfg), cfg, backend="export", source_models={"detector": p})  # doctest: +SKIP
        PosixPath('bundles/det_500m-align112-320x240-export-cpu-fp32/1.0.0')
    """
    name = name or default_name(config, backend, device, dtype)
    _check_request(config, backend, device, dtype, name, version)
    target = Path(out_root) / name / version
    if target.exists():
        raise ValueError(f"bundle {target} already exists; pick another --version or --name (bundles are immutable)")
    width, height = config.frame_size
    frames = default_golden_frames(config.frame_size) if golden_frames is None else golden_frames
    if frames.dtype != torch.uint8 or tuple(frames.shape) != (2, 3, height, width):
        raise ValueError(f"golden_frames must be uint8 [2, 3, {height}, {width}], got {frames.dtype} {tuple(frames.shape)}")
    names = list(module.output_names)

    start = time.perf_counter()
    module = module.eval().to(device)
    batches = ([0, 1], [0], [1, 0, 1])  # the golden pair, then batch 1 and 3: the batch dim really is dynamic
    with torch.inference_mode():
        eager = [{k: v.cpu().numpy() for k, v in zip(names, module(frames[idx].to(device)))} for idx in batches]
    reference = eager[0]
    _step(f"1/4 eager fp32 reference on {len(frames)} golden frames: "
          f"{int(reference['valid'].sum()) if 'valid' in reference else '?'} faces", start)

    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=target.parent))
    try:
        start = time.perf_counter()
        artifact = build / BACKENDS[backend]
        compiled = module.half() if dtype == "fp16" and backend != "tensorrt" else module
        _save_artifact(compiled, frames.to(device), backend, dtype, artifact)
        _step(f"2/4 {backend} artifact {artifact.name}: {artifact.stat().st_size / 1e6:.1f} MB", start)

        start = time.perf_counter()
        golden = build / "golden.npz"
        with open(golden, "wb") as f:
            np.savez(f, **{"input.frames": frames.numpy()}, **{f"output.{k}": v for k, v in reference.items()})
        manifest = _manifest(config, backend, device, dtype, name, version, source_models,
                             reference, artifact, golden)
        (build / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _step("3/4 manifest and golden pair written", start)

        start = time.perf_counter()
        bundle = load_bundle(build, device=device)  # the runtime's own checks, golden pair included
        for idx, want in zip(batches[1:], eager[1:]):
            compare_outputs(want, {k: v.cpu().numpy() for k, v in bundle(frames[idx]).items()},
                            golden_tolerance(config, dtype))
        worst = ", ".join(f"{k} {v:.2g}" for k, v in bundle.golden_diffs.items())
        _step(f"4/4 verified: loads in the runtime, matches eager at batch 1, 2 and 3 (max diffs: {worst})", start)
        try:
            build.rename(target)
        except OSError:
            raise ValueError(f"bundle {target} appeared while this one was built; not overwriting it") from None
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return target


def _manifest(config, backend, device, dtype, name, version, source_models, reference, artifact, golden) -> dict:
    import torchvision

    width, height = config.frame_size
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": version,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "facecrop_version": __version__,
        "config": config.to_dict(),
        "source_models": {role: {"file": Path(p).name, "sha256": sha256_file(p)} for role, p in source_models.items()},
        "environment": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                        "python": platform.python_version(), "platform": platform.platform()},
        "backend": backend,
        "device": torch.device(device).type,
        "dtype": dtype,
        "input": {"name": "frames", "dtype": "uint8", "shape": ["B", 3, height, width],
                  "frame_size": [width, height], "color": "RGB", "max_batch": MAX_BATCH},
        "outputs": _spec(reference),
        "artifact": {"file": artifact.name, "sha256": sha256_file(artifact)},
        "golden": {"file": golden.name, "sha256": sha256_file(golden), "frames": len(reference[next(iter(reference))]),
                   "reference": "eager module, fp32", "tolerance": golden_tolerance(config, dtype)},
    }


def export_from_args(args: argparse.Namespace) -> Path:
    """``facecrop export``: build the pipeline from the CLI options, write and verify its bundle."""
    from facecrop.pipeline import build_pipeline
    from facecrop.zoo import resolve_model

    config = PipelineConfig(detector=str(args.detector), landmarks=args.landmarks, crop=args.crop,
                            frame_size=tuple(args.frame_size), det_size=tuple(args.det_size),
                            crop_size=args.crop_size, max_faces=args.max_faces,
                            det_threshold=args.det_threshold, nms_threshold=args.nms_threshold)
    sources = {"detector": resolve_model(config.detector, args.model_dir)}
    if config.landmarks:
        sources["landmarks"] = resolve_model(config.landmarks, args.model_dir)
    start = time.perf_counter()
    module = build_pipeline(config, model_dir=args.model_dir)
    _step(f"0/4 built the pipeline from {', '.join(p.name for p in sources.values())}", start)
    path = write_bundle(module, config, backend=args.backend, device=args.device, dtype=args.dtype,
                        out_root=args.out, name=args.name, version=args.version, source_models=sources)
    print(path)
    return path


def inspect_from_args(args: argparse.Namespace) -> None:
    """``facecrop inspect``: print the manifest, then load the bundle with every runtime check."""
    print(json.dumps(read_manifest(Path(args.bundle)), indent=2))
    start = time.perf_counter()
    try:
        bundle = load_bundle(args.bundle, device=args.device)
    except BundleError as err:
        raise BundleError(f"verification failed: {err}") from None
    worst = ", ".join(f"{k} {v:.2g}" for k, v in bundle.golden_diffs.items())
    print(f"verified {bundle!r}: SHA-256 and golden self-check pass, max diffs {worst} "
          f"({time.perf_counter() - start:.1f} s)")
