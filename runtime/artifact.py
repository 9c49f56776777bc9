"""Load a bundle's compiled module, refusing an archive that is not what its manifest says it is.

``.pt2`` archives are checked for pickled members before ``torch.export.load`` sees them (it would
unpickle arbitrary objects), and every archive's contents must match the declared backend.
"""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from pathlib import Path

from .aoti import AotiCpuModule, library_member
from .errors import BundleError

__all__ = ["ENGINES", "artifact_kind", "check_pt2_archive", "load_artifact"]


def check_pt2_archive(path: Path) -> None:
    """Refuse a ``.pt2`` archive that would make ``torch.export.load`` unpickle arbitrary objects.

    ``torch.export.load`` falls back to ``torch.load(weights_only=False)`` or ``pickle.loads`` for
    pickled weights/constants, opaque objects, unreadable sample inputs and the legacy zip format;
    facecrop never writes those, so their presence means the file was not written by facecrop.
    """
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise BundleError(f"artifact {path} is not a .pt2 (zip) archive") from None
    with archive:
        for name in archive.namelist():
            base = name.rsplit("/", 1)[-1]
            if name == "version" or base.startswith("serialized_"):
                raise BundleError(f"artifact {path} uses the legacy pickle-based export format ({name})")
            if name.endswith("_config.json") and "/data/" in name:
                for fqn, entry in json.loads(archive.read(name)).get("config", {}).items():
                    if entry.get("use_pickle") or entry.get("path_name", "").startswith("opaque_obj"):
                        raise BundleError(f"artifact {path} holds a pickled object {fqn!r}; refusing to load it")
            elif "/data/sample_inputs/" in name:
                import torch

                try:
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)
                except Exception as err:
                    raise BundleError(f"artifact {path}: {name} is not plain tensor data ({err})") from None


def artifact_kind(path: Path) -> str | None:
    """Which backend wrote ``path``, from the archive's contents: ``'torchscript'``, ``'aoti'``,
    ``'export'`` (torch.export, TensorRT's too), or None when it is not an archive any of them writes."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any("/data/aotinductor/" in n for n in names):
        return "aoti"
    if any(n.endswith("/data.pkl") for n in names) and any("/code/" in n for n in names):
        return "torchscript"
    if any("/models/" in n and n.endswith(".json") for n in names):
        return "export"
    return None


ENGINES = ("native", "torch")


def load_artifact(path: Path, backend: str, device: str, engine: str = "native"):
    """Load the compiled module for ``device`` (``'cpu'``, ``'cuda:1'``); returns a callable ``frames -> tuple
    of tensors``, or of numpy arrays for an AOTInductor CPU library run without torch imported
    (:class:`~facecrop.runtime.aoti.AotiCpuModule`). Its ``parallel`` attribute, where it has one, says how
    many calls may run at once from different threads.

    ``engine``: ``'native'`` runs an ``aoti`` CPU library through its C interface (fast, but it reaches
    into torch's binary internals); ``'torch'`` through torch's own documented loader
    (``torch._inductor.aoti_load_package``), the fallback for a torch release that breaks the native one.
    """
    if engine not in ENGINES:
        raise BundleError(f"unknown engine {engine!r}: one of {', '.join(ENGINES)}")
    kind, declared = artifact_kind(path), "export" if backend == "tensorrt" else backend
    if kind is not None and kind != declared:
        raise BundleError(f"artifact {path.name} was written by the {kind!r} backend, but the manifest declares "
                          f"{backend!r}: the bundle was put together wrong; export it again")
    if backend != "torchscript":
        check_pt2_archive(path)
    if backend == "aoti" and device.split(":")[0] == "cpu" and engine == "native":
        member = library_member(path)
        if member is not None:  # two batches at once where the CPU has the cores for it (see aoti.py)
            return AotiCpuModule(path, member, parallel=2 if (os.cpu_count() or 1) >= 2 else 1)
    import torch

    device = torch.device(device)
    if backend == "torchscript":
        with warnings.catch_warnings():  # TorchScript is deprecated upstream but still the portable format.
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location=device).eval()
    if backend == "export":
        return torch.export.load(path).module()
    if backend == "aoti" and engine == "torch":
        import torch._inductor

        return torch._inductor.aoti_load_package(str(path), device_index=device.index if device.index is not None else -1)
    if backend == "aoti":
        index = device.index if device.index is not None else -1
        # The C++ loader itself: torch._inductor.aoti_load_package would import the compiler's Python
        # (sympy and all), 150 MB of memory and 0.2 s that running the artifact never uses.
        loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, index)
        return lambda frames: tuple(loader.run([frames]))
    if backend == "tensorrt":
        try:
            import torch_tensorrt  # noqa: F401  (registers the TensorRT engine ops the program calls)
        except ImportError:
            raise BundleError("this is a TensorRT bundle: install torch-tensorrt to load it") from None
        return torch.export.load(path).module()
    raise BundleError(f"unknown backend {backend!r} in the manifest")
