"""Load and verify a facecrop bundle: manifest, artifact SHA-256, device, golden self-check.

A bundle is a folder ``<name>/<version>/`` holding ``manifest.json``, one artifact
(``model.ts``, ``model.pt2``, ``model_aoti.pt2`` or ``model_trt.pt2``) and
``golden.npz``; ``bundles/README.md`` documents every field. Loading never
unpickles arbitrary objects: TorchScript has its own restricted unpickler,
``.pt2`` archives are checked for pickled members before ``torch.export.load``
sees them, and the golden file is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from .aoti import AotiCpuModule
from .artifact import load_artifact
from .errors import BundleError, UsageError
from .native import torch_version

# 2.0: one bundle serves every frame size (format 1 bundles took one fixed size).
# 3.0: input.memory_format: channels-last frames (a compiled artifact reads others wrongly); 2.x still loads.
# 3.1: artifact.inductor_configs records how an aoti artifact was compiled (informative only).
# 3.2: output `overflow [B]`, frames with more faces than the bundle keeps (older bundles run without it).
FORMAT_VERSION = "3.2"
MANIFEST = "manifest.json"
MIN_SIDE, MAX_SIDE = 16, 4096  # frame sides every bundle accepts, in pixels: from a thumbnail to 4K/DCI


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict:
    """Read ``manifest.json`` and refuse a bundle format with a newer major version than this runtime's."""
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(f"{folder} is not a facecrop bundle: {MANIFEST} not found")
    try:
        manifest = json.loads(path.read_text())
        found = str(manifest["format_version"])
        major = int(found.split(".")[0])
    except (ValueError, KeyError, TypeError) as err:
        raise BundleError(f"{path} is not a valid bundle manifest: {err}") from None
    ours = int(FORMAT_VERSION.split(".")[0])
    if major > ours:
        raise BundleError(
            f"bundle {folder} has format version {found}, newer than this runtime's {FORMAT_VERSION}; "
            "upgrade facecrop to load it")
    if major < 2:
        raise BundleError(
            f"bundle {folder} has format version {found}, which took one fixed frame size; this runtime "
            f"({FORMAT_VERSION}) serves every size from one bundle: re-export it with `facecrop export` "
            "(no --frame-size needed)")
    return manifest


def resolve_device(manifest: dict, device=None) -> str:
    """The device to run on (``'cpu'``, ``'cuda'``, ``'cuda:1'``): the bundle's own unless ``device`` (a
    string or ``torch.device``) names another index of the same type. torch is imported for CUDA only."""
    built = str(manifest["device"])
    target = built if device is None else str(device)
    built_type, target_type = built.split(":")[0], target.split(":")[0]
    index = target.split(":", 1)[1] if ":" in target else "0"
    if target_type not in ("cpu", "cuda") or not index.isdigit():
        raise BundleError(f"unknown device {target!r}: facecrop runs on 'cpu', 'cuda' or 'cuda:N'")
    # Compiled artifacts bake the device type into their kernels or constants: only the index may differ.
    if target_type != built_type:
        raise BundleError(
            f"bundle was built for device {built_type!r} and cannot run on {target_type!r}; "
            f"export one with --device {target_type}")
    if target_type == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BundleError("bundle was built for CUDA, but this machine has no usable CUDA device")
    return target


def compare_outputs(expected: dict, actual: dict, tolerance: dict) -> dict[str, float]:
    """Largest differences between two output dicts (numpy arrays) on the faces valid in ``expected``.

    ``expected``, ``actual``: ``{name: array [B, K, ...]}``; ``tolerance``: ``coords_px`` (bbox, lms, other
    float outputs, and crop_mat as the crop-pixel displacement of the landmarks it maps), ``conf``,
    ``crop_grey`` and ``crop_stat`` (``'max'`` or ``'mean'`` over crop pixels). Returns ``{name:
    difference}``; raises BundleError naming every output beyond its tolerance.
    """
    if sorted(expected) != sorted(actual):
        raise BundleError(f"outputs differ: expected {sorted(expected)}, got {sorted(actual)}")
    valid = np.asarray(expected["valid"])  # [B, K]: every facecrop pipeline has it
    diffs, failures = {}, []
    for name, want in expected.items():
        got = np.asarray(actual[name])
        if got.shape != want.shape:
            failures.append(f"{name}: shape {tuple(got.shape)} instead of {tuple(want.shape)}")
            continue
        if name in ("valid", "overflow"):  # which faces exist, and whether a frame had more: exactly
            diffs[name] = float(np.sum(got != want))
            limit = 0.0
        else:
            # Padded slots hold no face, so only the faces the reference found are compared.
            want, got = want[valid], got[valid]
            delta = np.abs(got.astype(np.float64) - want.astype(np.float64))
            if name == "crop_mat":
                # A matrix error matters by how far it moves the face in the crop, so it is measured
                # in crop pixels at the face's own landmarks: |(M' - M) @ (x, y, 1)|.
                lms = expected["lms"][valid]  # [N, L, 2]
                points = np.concatenate([lms, np.ones_like(lms[..., :1])], axis=-1).astype(np.float64)
                delta = np.abs(np.einsum("nij,nlj->nli", got - want, points)[..., :2])
            if name == "imgs_crop":
                diffs[name] = float(delta.max() if tolerance["crop_stat"] == "max" else delta.mean()) if delta.size else 0.0
                limit = tolerance["crop_grey"]
            else:
                diffs[name] = float(delta.max()) if delta.size else 0.0
                limit = tolerance["conf"] if name == "conf" else tolerance["coords_px"]
        if not diffs[name] <= limit:
            failures.append(f"{name}: difference {diffs[name]:.6g} > tolerance {limit:g}")
    if failures:
        raise BundleError("outputs do not match the reference: " + "; ".join(failures))
    return diffs


def check_frames(frames, min_side: int = MIN_SIDE, max_side: int = MAX_SIDE) -> None:
    """Raise ValueError unless ``frames`` (a tensor or a numpy array) is uint8 ``[B, 3, H, W]`` with B >= 1
    and sides within bounds."""
    dtype = str(getattr(frames, "dtype", "")).removeprefix("torch.")
    shape = tuple(getattr(frames, "shape", ()))
    if dtype != "uint8" or len(shape) != 4 or shape[1] != 3 or shape[0] < 1:
        got = f"{dtype} {shape}" if dtype else type(frames).__name__
        raise UsageError(f"frames must be uint8 [B, 3, H, W] (RGB, B >= 1), got {got}")
    height, width = shape[2:]
    if not (min_side <= height <= max_side and min_side <= width <= max_side):
        raise UsageError(f"frame size {width}x{height} is outside the bundle's bounds: "
                         f"{min_side} to {max_side} px a side")


class Bundle:
    """A loaded, verified bundle: call it on ``uint8 [B, 3, H, W]`` RGB frames of any size within its bounds.

    Attributes: ``path`` (the folder), ``manifest`` (parsed), ``device`` (a ``torch.device``; ``device_name``
    the same as a string), ``side_bounds`` (``(min, max)`` px for H and W), ``output_names`` (the module's
    order), ``golden_diffs`` (``{output: largest difference}`` of the golden self-check, None if
    skipped), ``parallel`` (how many calls may run at once from different threads: 2 for an AOTInductor
    CPU module, see ``aoti.py``) and ``module``, the artifact itself: it takes frames in
    ``memory_format`` only (AOTInductor reads other layouts wrongly, silently), which calling the bundle
    ensures. An AOTInductor CPU module runs on numpy arrays without torch imported (``native.py``):
    :meth:`run_frames` is the numpy door, the one the runtime uses; calling the bundle, the tensor one.
    """

    def __init__(self, path: Path, manifest: dict, module, device: str):
        self.path, self.manifest, self.module, self.device_name = path, manifest, module, device
        self.device_type = device.split(":")[0]
        self.side_bounds = (int(manifest["input"]["min_side"]), int(manifest["input"]["max_side"]))
        self.output_names = [spec["name"] for spec in manifest["outputs"]]
        # Compiled artifacts assume the memory layout they were traced with (format 2.0: contiguous).
        self.channels_last = manifest["input"].get("memory_format") == "channels_last"
        self.parallel = getattr(module, "parallel", 1)
        self._numpy_module = isinstance(module, AotiCpuModule)
        self._warm_batches: set[int] = set()

    @property
    def device(self):
        import torch

        return torch.device(self.device_name)

    @property
    def memory_format(self):
        import torch

        return torch.channels_last if self.channels_last else torch.contiguous_format

    def __call__(self, frames):
        """uint8 ``[B, 3, H, W]`` frames (a tensor) -> ``{name: [B, K, ...]}`` tensors on ``self.device``, in
        the frames' pixels."""
        import torch

        check_frames(frames, *self.side_bounds)
        if self._numpy_module:  # torch's layout change is the fast one (numpy's: 3x slower at 720p)
            frames = frames.cpu().contiguous(memory_format=self.memory_format)
            return {k: torch.from_numpy(v) for k, v in self._run_numpy(frames.numpy()).items()}
        with torch.inference_mode():
            frames = frames.to(self.device).contiguous(memory_format=self.memory_format)
            # A copy only where the frames are not in that layout yet (decoded frames are), or start inside
            # a 64-bit word (the module reads pixels as words: facecrop.runtime.pixels).
            outputs = self.module(frames.clone(memory_format=self.memory_format) if frames.storage_offset() % 8 else frames)
        return dict(zip(self.output_names, outputs))

    def run_frames(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 ``[B, 3, H, W]`` frames (a numpy array, any strides) -> ``{name: [B, K, ...]}`` numpy arrays."""
        check_frames(frames, *self.side_bounds)
        if self._numpy_module:
            return self._run_numpy(frames)
        import torch

        return {k: v.cpu().numpy() for k, v in self(torch.from_numpy(frames)).items()}

    def _run_numpy(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        # A copy only where the frames are not in the module's layout yet (decoded frames are).
        if self.channels_last:
            frames = np.ascontiguousarray(frames.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        else:
            frames = np.ascontiguousarray(frames)
        return dict(zip(self.output_names, self.module(frames)))

    def warm_up(self, batch: int) -> None:
        """Run the module once on ``batch`` blank frames, unless it has run at that batch: the first call at
        a batch size is the slow one (oneDNN compiles the convolutions for their shapes; det_500m, batch 8:
        74 instead of 41 ms). ``process_video`` calls this on a GPU while the decoding process starts."""
        if batch not in self._warm_batches:
            low = self.side_bounds[0]
            self.run_frames(np.zeros((batch, 3, low, low), np.uint8))
            self._warm_batches.add(batch)

    def __repr__(self) -> str:
        m = self.manifest
        return (f"Bundle({m['name']} {m['version']}, backend={m['backend']}, device={self.device_name}, "
                f"dtype={m['dtype']}, sides={self.side_bounds[0]}-{self.side_bounds[1]} px, outputs={self.output_names})")


def verify_golden(bundle: Bundle) -> dict[str, float]:
    """Run every golden case (one frame size each) against its reference; the largest differences."""
    golden = bundle.manifest["golden"]
    worst: dict[str, float] = {}
    try:
        with np.load(bundle.path / golden["file"], allow_pickle=False) as data:  # plain arrays only
            for i in range(len(golden["cases"])):
                frames = data[f"case{i}.input.frames"]
                prefix = f"case{i}.output."
                expected = {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}
                actual = bundle.run_frames(frames)
                diffs = compare_outputs(expected, actual, golden["tolerance"])
                worst = {k: max(v, worst.get(k, 0.0)) for k, v in diffs.items()}
        return worst
    except (BundleError, ValueError, KeyError, OSError, zipfile.BadZipFile) as err:
        raise BundleError(f"bundle {bundle.path} failed its golden self-check on {bundle.device_name}: {err}") from None


def load_bundle(path: str | Path, device=None, verify: bool = True, engine: str | None = None) -> Bundle:
    """Load a bundle folder after checking its format version, SHA-256s and device.

    ``path``: the folder ``bundles/<name>/<version>``; ``device``: ``None`` for the one it was built for, or
    another index of that device type (a string or ``torch.device``); ``verify``: run the golden self-check (3 frames, two sizes) first.
    ``engine``: how an ``aoti`` CPU bundle runs, ``'native'`` (the default, fast) or ``'torch'`` (torch's
    own loader, the fallback); None reads ``$FACECROP_ENGINE`` (see :func:`~facecrop.runtime.artifact.load_artifact`).
    Returns a :class:`Bundle`; raises :class:`BundleError` for anything that makes it unusable here.

    Example:
        >>> bundle = load_bundle("bundles/det_500m-align112-det224-export-cpu-fp32/1.0.0")  # doctest: +SKIP
        >>> bundle(torch.zeros(4, 3, 240, 320, dtype=torch.uint8))["bbox"].shape  # doctest: +SKIP
        torch.Size([4, 32, 4])
    """
    folder = Path(path)
    manifest = read_manifest(folder)
    target = resolve_device(manifest, device)
    if manifest["backend"] == "tensorrt" and not target.startswith("cuda"):
        raise BundleError("TensorRT bundles run on CUDA only")
    for entry in (manifest["artifact"], manifest["golden"]):
        file = folder / entry["file"]
        if Path(entry["file"]).name != entry["file"] or not file.is_file():
            raise BundleError(f"bundle {folder} is incomplete: {entry['file']!r} not found")
        if sha256_file(file) != entry["sha256"]:
            raise BundleError(f"{file} does not match the SHA-256 in the manifest: the bundle is corrupt or tampered")
    try:
        module = load_artifact(folder / manifest["artifact"]["file"], manifest["backend"], target,
                               engine or os.environ.get("FACECROP_ENGINE") or "native")
    except BundleError:
        raise
    except Exception as err:  # any loader failure: wrong torch version, not an archive, bad pickle
        raise BundleError(f"cannot load {manifest['artifact']['file']} with torch {torch_version()} "
                          f"(built with {manifest['environment']['torch']}): {err}") from None
    bundle = Bundle(folder, manifest, module, target)
    bundle.golden_diffs = verify_golden(bundle) if verify else None
    return bundle
