"""Every pipeline the benchmark runs, behind one small interface.

A runner is built once (its ``setup_s`` is the build/compile/load time), then
``prepare(frames)`` turns RGB uint8 ``[B, H, W, 3]`` NumPy frames into what it eats
(timed only when decoding is included), ``runner(x)`` runs one batch and
``count(result)`` says how many faces it found. ``sync()`` waits for the device.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

REFERENCE_LOOPS = ("insightface", "medusa")
BUNDLE_BACKENDS = ("torchscript", "export", "aoti", "tensorrt")
ALL_BACKENDS = REFERENCE_LOOPS + ("eager", "compile") + BUNDLE_BACKENDS


@dataclass(frozen=True)
class Case:
    """What is measured: models, sizes and device (paths are real files)."""

    detector: str
    landmarks: Optional[str]
    det_size: tuple[int, int]
    crop_size: int
    max_faces: int = 32  # facecrop export's default
    device: str = "cpu"

    def pipeline_config(self):
        from facecrop.pipeline_config import PipelineConfig

        return PipelineConfig(detector=self.detector, landmarks=self.landmarks, crop="align",
                              det_size=tuple(self.det_size),
                              crop_size=self.crop_size, max_faces=self.max_faces)


class Runner:
    """Base: a reference loop eats NumPy frames and returns its face count."""

    one_frame_at_a_time = True

    def __init__(self, fn, setup_s: float, note: str = ""):
        self.fn, self.setup_s, self.note = fn, setup_s, note

    def prepare(self, frames: np.ndarray):
        return frames

    def __call__(self, x):
        return self.fn(x)

    def count(self, result) -> int:
        return int(result)

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


class TorchRunner(Runner):
    """A facecrop module: uint8 ``[B, 3, H, W]`` tensors on the device -> dict with ``valid [B, K]``."""

    one_frame_at_a_time = False

    def __init__(self, fn, setup_s: float, device: str, note: str = "", cleanup: Optional[Path] = None):
        super().__init__(fn, setup_s, note)
        self.device, self.cleanup = torch.device(device), cleanup

    def prepare(self, frames: np.ndarray) -> torch.Tensor:
        # The layout a decoder delivers (channels-last memory viewed as [B, 3, H, W]): a pipeline that
        # wants another layout pays for the change inside its timed call, as it would on decoded video.
        return torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2)

    def __call__(self, x):
        with torch.inference_mode():
            return self.fn(x)

    def count(self, result) -> int:
        valid = result["valid"] if isinstance(result, dict) else result[0]
        return int(valid.sum())

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        if self.cleanup is not None:
            shutil.rmtree(self.cleanup, ignore_errors=True)


def bundle_cache_key(backend: str, case: Case) -> str:
    """What a cached bundle depends on: the case (models by content), backend, torch and facecrop's own code.

    facecrop's sources are hashed rather than its version number, so that a bundle cached before a
    change to the module is rebuilt after it.
    """
    import hashlib
    import json
    from dataclasses import asdict

    import facecrop
    from facecrop.runtime.bundle import sha256_file

    fields = asdict(case)
    for role in ("detector", "landmarks"):
        if fields[role]:
            fields[role] = sha256_file(fields[role])
    code = hashlib.sha256()
    for root in (Path(facecrop.__file__).parent, Path(facecrop.runtime.__file__).parent):
        for source in sorted(root.rglob("*.py")):
            code.update(source.read_bytes())
    text = json.dumps({"case": fields, "backend": backend, "torch": torch.__version__, "code": code.hexdigest()},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_as_the_cli(path: Path, device: str):
    """``load_bundle`` in a process tuned as ``facecrop run`` tunes its own (``facecrop.runtime.tuning``)."""
    from facecrop.runtime import load_bundle
    from facecrop.runtime.tuning import tune_process

    tune_process()
    return load_bundle(path, device=device)


def cached_bundle(backend: str, case: Case, cache: Path):
    """``backend``'s bundle for ``case`` from ``cache``, built there first if absent or invalid.

    Returns ``(path, bundle, built)``: its folder, the bundle loaded by the runtime (SHA-256 and
    golden self-check) and whether it was built now.
    """
    from facecrop.bundle import write_bundle
    from facecrop.pipeline import build_pipeline
    from facecrop.runtime import BundleError

    folder = cache / f"{backend}-{bundle_cache_key(backend, case)}"
    path = folder / "bench" / "1.0.0"
    if path.is_dir():
        try:
            return path, load_as_the_cli(path, case.device), False
        except BundleError:
            shutil.rmtree(folder, ignore_errors=True)  # damaged or from another machine: build it again
    sources = {"detector": Path(case.detector)}
    if case.landmarks:
        sources["landmarks"] = Path(case.landmarks)
    write_bundle(build_pipeline(case.pipeline_config()).to(case.device), case.pipeline_config(), backend=backend,
                 device=case.device, out_root=folder, name="bench", source_models=sources)
    return path, load_as_the_cli(path, case.device), True


def make_runner(backend: str, case: Case, workdir: Path, cache: Optional[Path] = None) -> Runner:
    """Build ``backend`` for ``case``; bundles are written under ``workdir`` and removed on ``close``.

    With ``cache``, bundles are kept there instead, keyed by :func:`bundle_cache_key`, and reused.
    """
    start = time.perf_counter()
    if backend in REFERENCE_LOOPS:
        from benchmarks.loops import InsightFaceLoop, MedusaLoop

        loop = (InsightFaceLoop if backend == "insightface" else MedusaLoop)(
            case.detector, case.landmarks, case.det_size, case.crop_size, case.device)
        return Runner(loop, time.perf_counter() - start)
    if backend == "eager":
        return _eager(case, start)
    if backend in BUNDLE_BACKENDS and cache is not None:
        _, bundle, built = cached_bundle(backend, case, cache)
        note = f"bundle {'built into' if built else 'from'} the cache, loaded with facecrop.runtime.load_bundle"
        return TorchRunner(bundle, time.perf_counter() - start, case.device, note)
    from facecrop.pipeline import build_pipeline

    module = build_pipeline(case.pipeline_config()).to(case.device)
    if backend == "compile":
        # On CUDA "reduce-overhead" replays CUDA graphs; each new batch size compiles once more.
        mode = "reduce-overhead" if case.device.startswith("cuda") else None
        compiled = torch.compile(module, fullgraph=True, mode=mode)
        names = module.output_names
        note = "torch.compile(fullgraph)" + (" + CUDA graphs" if mode else "") + ", not a bundle"
        return TorchRunner(lambda x: dict(zip(names, compiled(x))), time.perf_counter() - start, case.device, note)
    if backend not in BUNDLE_BACKENDS:
        raise ValueError(f"backend must be one of {ALL_BACKENDS}, got {backend!r}")
    from facecrop.bundle import write_bundle

    folder = Path(tempfile.mkdtemp(prefix=f"bundle-{backend}-", dir=workdir))
    try:
        sources = {"detector": Path(case.detector)}
        if case.landmarks:
            sources["landmarks"] = Path(case.landmarks)
        path = write_bundle(module, case.pipeline_config(), backend=backend, device=case.device,
                            out_root=folder, name="bench", source_models=sources)
        bundle = load_as_the_cli(path, case.device)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return TorchRunner(bundle, time.perf_counter() - start, case.device,
                       "bundle via facecrop.runtime.load_bundle", cleanup=folder)


def _eager(case: Case, start: float) -> TorchRunner:
    """The eager Medusa-compatible modules: ``AlignCropModel``, or its pipeline with landmarks."""
    from facecrop import AlignCropModel, SCRFDetector
    from facecrop.detect.base import run_eager
    from facecrop.pipeline import build_pipeline

    detector = SCRFDetector(model_path=case.detector, det_size=tuple(case.det_size), max_faces=case.max_faces, device=case.device)
    if case.landmarks is None:
        model = AlignCropModel(output_size=(case.crop_size, case.crop_size), detector=detector)
        note = "AlignCropModel"
    else:
        # No public eager class pairs landmarks with the aligned crop; run_eager on the pipeline is
        # exactly what the Medusa-compatible classes call.
        pipeline = build_pipeline(case.pipeline_config()).to(case.device)

        def model(frames):
            return run_eager(pipeline, detector, frames, ("conf", "bbox", "lms", "imgs_crop", "crop_mat"))

        note = "run_eager(FacePipeline)"

    def run(frames):
        out = model(frames)
        return {"valid": torch.ones(len(out["conf"]), dtype=torch.bool)}  # ragged rows: one per face

    return TorchRunner(run, time.perf_counter() - start, case.device, note)
