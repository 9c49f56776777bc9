"""torch's C++ libraries without its Python package: loaded by path, and their intra-op thread count.

``import torch`` takes 1.3 s and 630 MB on this project's 2-core machine (its Python modules, and the
CUDA libraries of a CUDA build, loaded and relocated); an AOTInductor CPU artifact needs
``libtorch_cpu.so`` only: 0.15 s and 130 MB (``libtorch.so``, which compiled libraries also name, is a
stub that loads the CUDA libraries in a CUDA build: ``aoti.py`` points that name elsewhere). So the
runtime runs such bundles without importing torch, and imports it only for the other backends, a
GPU, and callers who hand it tensors. The libraries are the installed torch's own: with torch
imported or not, this process holds one copy of them, and one thread count.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import importlib.util
from pathlib import Path


def _library_folder() -> Path:
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("torch is not installed: the runtime needs its libraries")
    return Path(next(iter(spec.submodule_search_locations))) / "lib"


@functools.cache
def torch_library() -> ctypes.CDLL:
    """``libtorch_cpu.so`` of the installed torch, loaded (global symbols, as torch loads it) once."""
    return ctypes.CDLL(str(_library_folder() / "libtorch_cpu.so"), mode=ctypes.RTLD_GLOBAL)


@functools.cache
def load_libtorch() -> None:
    """``libtorch.so`` too: in a CUDA build of torch, a stub that loads the CUDA libraries (0.1 s, 400 MB)."""
    ctypes.CDLL(str(_library_folder() / "libtorch.so"), mode=ctypes.RTLD_GLOBAL)


def torch_version() -> str:
    """The installed torch's version, from its metadata (no import)."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def intra_op_threads() -> int:
    """``at::get_num_threads()``: what ``torch.get_num_threads()`` returns, in the calling thread."""
    return int(torch_library()._ZN2at15get_num_threadsEv())


def set_intra_op_threads(count: int) -> None:
    """``at::set_num_threads(count)``, as ``torch.set_num_threads`` does: for the calling thread's OpenMP
    team, and the default of threads that start their first parallel work after it."""
    torch_library()._ZN2at15set_num_threadsEi(ctypes.c_int(count))
