"""Run an AOTInductor CPU artifact through its C interface, so that calls release the GIL and overlap.

torch's own loader (``torch._C._aoti.AOTIModelPackageLoader``) holds the GIL for the whole call, so two
threads cannot run two batches at once. The compiled library inside a ``.pt2`` archive exports a C
interface (``AOTInductorModelContainer*``, ``torch/csrc/inductor/aoti_runtime/interface.h``); calling it
through ``ctypes`` releases the GIL. A container made with ``parallel`` model instances runs that many
calls at once on one copy of the weights: on a 2-core CPU, two batches on one thread each keep both
cores busy where one call on two threads waits at every parallel loop's barrier (``docs/speed.md``).
Inputs and outputs cross as ``AtenTensorHandle`` pointers, made and taken over by torch's own helpers.
"""

from __future__ import annotations

import ctypes
import tempfile
import weakref
import zipfile
from pathlib import Path

import torch

_c_handles = ctypes.POINTER(ctypes.c_void_p)
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype, _capsule_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
_capsule = ctypes.pythonapi.PyCapsule_New
_capsule.restype, _capsule.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]

# Files of an archive this runner knows how to run: the library (weights inside), its sources, metadata.
_KNOWN_SUFFIXES = (".so", ".cpp", "_metadata.json")


def library_member(path: Path) -> str | None:
    """The compiled library's name inside the ``.pt2`` archive ``path``, or None where the archive holds
    anything this runner cannot serve (weights outside the library, ops run by a proxy executor)."""
    with zipfile.ZipFile(path) as archive:
        members = [n for n in archive.namelist() if "/data/aotinductor/" in n and not n.endswith("/")]
    libraries = [n for n in members if n.endswith(".so")]
    if len(libraries) != 1 or not all(n.endswith(_KNOWN_SUFFIXES) for n in members):
        return None
    return libraries[0]


class AotiCpuModule:
    """``frames -> tuple of output tensors`` for an AOTInductor CPU archive; ``parallel`` calls may run at once.

    Each call uses the calling thread's intra-op thread count (``torch.set_num_threads`` in that thread).
    """

    def __init__(self, path: Path, member: str, parallel: int = 2):
        with tempfile.TemporaryDirectory(prefix="facecrop-aoti-") as folder, zipfile.ZipFile(path) as archive:
            # Loaded, the library stays mapped after its file is gone with the folder.
            self._library = ctypes.CDLL(archive.extract(member, folder))
        library = self._library
        library.AOTInductorModelContainerRun.argtypes = [ctypes.c_void_p, _c_handles, ctypes.c_size_t, _c_handles,
                                                         ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p]
        self._handle = ctypes.c_void_p()
        self._check(library.AOTInductorModelContainerCreateWithDevice(
            ctypes.byref(self._handle), ctypes.c_size_t(parallel), b"cpu", None), "loading")
        count = ctypes.c_size_t()
        self._check(library.AOTInductorModelContainerGetNumOutputs(self._handle, ctypes.byref(count)), "loading")
        self.num_outputs, self.parallel = count.value, parallel
        weakref.finalize(self, library.AOTInductorModelContainerDelete, self._handle)

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # The container takes over the input handle and hands over new output handles (interface.h).
        inputs = (ctypes.c_void_p * 1)(*[_capsule_pointer(c, None)
                                         for c in torch._C._aoti.unsafe_alloc_void_ptrs_from_tensors([frames])])
        outputs = (ctypes.c_void_p * self.num_outputs)()
        self._check(self._library.AOTInductorModelContainerRun(self._handle, inputs, 1, outputs, self.num_outputs,
                                                               None, None), "running")
        return tuple(torch._C._aoti.alloc_tensors_by_stealing_from_void_ptrs([_capsule(p, None, None) for p in outputs]))

    @staticmethod
    def _check(code: int, doing: str) -> None:
        if code != 0:  # the library has printed the C++ exception's message on stderr
            raise RuntimeError(f"the compiled module failed {doing} (AOTInductor error {code}; its message is above)")
