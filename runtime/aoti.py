"""Run an AOTInductor CPU artifact through its C interface: numpy in and out, no GIL held, no torch import.

torch's own loader (``torch._C._aoti.AOTIModelPackageLoader``) holds the GIL for the whole call, so two
threads cannot run two batches at once. The compiled library inside a ``.pt2`` archive exports a C
interface (``AOTInductorModelContainer*``, ``torch/csrc/inductor/aoti_runtime/interface.h``); calling it
through ``ctypes`` releases the GIL. A container made with ``parallel`` model instances runs that many
calls at once on one copy of the weights: on a 2-core CPU, two batches on one thread each keep both
cores busy where one call on two threads waits at every parallel loop's barrier (``docs/speed.md``).
Inputs and outputs cross as ``AtenTensorHandle`` pointers, made and read with torch's C shim
(``aoti_torch_*``, the functions compiled artifacts themselves call), so only torch's libraries are
loaded (``native.py``): numpy arrays go in as they lie in memory, and the outputs come back as numpy
views of the tensors the module allocated, each freed with the last view of it.
"""

from __future__ import annotations

import ctypes
import functools
import struct
import tempfile
import weakref
import zipfile
from pathlib import Path

import numpy as np

from .native import load_libtorch, torch_library

_c_handles = ctypes.POINTER(ctypes.c_void_p)
_c_int64s = ctypes.POINTER(ctypes.c_int64)

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


def _without_libtorch_stub(library: bytes) -> bytes | None:
    """``library`` (an ELF shared object) with its ``DT_NEEDED`` entry for ``libtorch.so`` pointed at the
    ``libtorch_cpu.so`` it also needs, or None where it has not both. A CPU artifact calls nothing of
    the stub's CUDA libraries; where it would, loading it fails and the unchanged library is used."""
    data = bytearray(library)
    if data[:4] != b"\x7fELF" or data[4:6] != b"\x02\x01":  # 64-bit little-endian only
        return None
    (table,), (entry_size, count) = struct.unpack_from("<Q", data, 0x20), struct.unpack_from("<HH", data, 0x36)
    # Program headers: (type, flags, offset, vaddr, paddr, filesz, memsz, align); 2 = PT_DYNAMIC, 1 = PT_LOAD.
    segments = [struct.unpack_from("<IIQQQQQQ", data, table + i * entry_size) for i in range(count)]
    dynamic = next((s for s in segments if s[0] == 2), None)
    if dynamic is None:
        return None
    entries = [(dynamic[2] + 16 * i, *struct.unpack_from("<qQ", data, dynamic[2] + 16 * i))
               for i in range(dynamic[5] // 16)]  # (file offset, tag, value); 1 = DT_NEEDED, 5 = DT_STRTAB
    strings = next((value for _, tag, value in entries if tag == 5), None)
    load = next((s for s in segments if s[0] == 1 and strings is not None and s[3] <= strings < s[3] + s[5]), None)
    if load is None:
        return None
    start = strings - load[3] + load[2]
    needed = {bytes(data[start + value:data.index(0, start + value)]): (offset, value)
              for offset, tag, value in entries if tag == 1}
    if b"libtorch.so" not in needed or b"libtorch_cpu.so" not in needed:
        return None
    struct.pack_into("<Q", data, needed[b"libtorch.so"][0] + 8, needed[b"libtorch_cpu.so"][1])
    return bytes(data)


def _load_library(archive: zipfile.ZipFile, member: str) -> ctypes.CDLL:
    """The compiled library, loaded from a temporary copy (it stays mapped once its file is gone)."""
    library = archive.read(member)
    lean = _without_libtorch_stub(library)
    with tempfile.TemporaryDirectory(prefix="facecrop-aoti-") as folder:
        path = Path(folder) / Path(member).name
        if lean is not None:
            path.write_bytes(lean)
            try:
                return ctypes.CDLL(str(path))
            except OSError:
                pass  # it needs a symbol of libtorch.so after all
        load_libtorch()
        path.write_bytes(library)
        return ctypes.CDLL(str(path))


class _Shim:
    """The ``aoti_torch_*`` functions of torch's C shim that make, read and free tensor handles."""

    def __init__(self):
        lib = self.lib = torch_library()
        lib.aoti_torch_create_tensor_from_blob.argtypes = [
            ctypes.c_void_p, ctypes.c_int64, _c_int64s, _c_int64s, ctypes.c_int64, ctypes.c_int32, ctypes.c_int32,
            ctypes.c_int32, _c_handles]
        for name, kind in (("dim", ctypes.c_int64), ("dtype", ctypes.c_int32), ("data_ptr", ctypes.c_void_p)):
            getattr(lib, f"aoti_torch_get_{name}").argtypes = [ctypes.c_void_p, ctypes.POINTER(kind)]
        for name in ("sizes", "strides"):
            getattr(lib, f"aoti_torch_get_{name}").argtypes = [ctypes.c_void_p, ctypes.POINTER(_c_int64s)]
        lib.aoti_torch_delete_tensor_object.argtypes = [ctypes.c_void_p]
        codes = {}
        for name in ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"):
            code = getattr(lib, f"aoti_torch_dtype_{name}")
            code.restype = ctypes.c_int32
            codes[code()] = np.dtype(name)
        self.dtypes, self.codes = codes, {dtype: code for code, dtype in codes.items()}
        lib.aoti_torch_device_type_cpu.restype = ctypes.c_int32
        self.cpu = lib.aoti_torch_device_type_cpu()

    def handle_of(self, array: np.ndarray) -> ctypes.c_void_p:
        """A tensor handle on ``array``'s memory (not owning it: keep ``array`` alive while it is used)."""
        if array.dtype not in self.codes or any(s < 0 or s % array.itemsize for s in array.strides):
            raise TypeError(f"cannot hand a {array.dtype} array with strides {array.strides} to the module")
        sizes = (ctypes.c_int64 * array.ndim)(*array.shape)
        strides = (ctypes.c_int64 * array.ndim)(*(s // array.itemsize for s in array.strides))
        handle = ctypes.c_void_p()
        self._check(self.lib.aoti_torch_create_tensor_from_blob(
            array.ctypes.data, array.ndim, sizes, strides, 0, self.codes[array.dtype], self.cpu, 0, ctypes.byref(handle)))
        return handle

    def array_of(self, handle: int) -> np.ndarray:
        """A numpy view of the tensor ``handle`` owns; the handle is deleted when the last view of it is gone."""
        lib, dim, code, data = self.lib, ctypes.c_int64(), ctypes.c_int32(), ctypes.c_void_p()
        sizes, strides = _c_int64s(), _c_int64s()
        for name, out in (("dim", dim), ("dtype", code), ("data_ptr", data), ("sizes", sizes), ("strides", strides)):
            self._check(getattr(lib, f"aoti_torch_get_{name}")(handle, ctypes.byref(out)))
        dtype = self.dtypes[code.value]
        shape = [sizes[i] for i in range(dim.value)]
        steps = [strides[i] for i in range(dim.value)]
        if 0 in shape:
            lib.aoti_torch_delete_tensor_object(handle)
            return np.zeros(shape, dtype)
        span = 1 + sum((size - 1) * step for size, step in zip(shape, steps))  # elements from the first to the last
        memory = (ctypes.c_uint8 * (span * dtype.itemsize)).from_address(data.value)
        memory.owner = weakref.finalize(memory, lib.aoti_torch_delete_tensor_object, handle)
        flat = np.frombuffer(memory, dtype, span)  # keeps ``memory`` (and so the tensor) alive
        return np.lib.stride_tricks.as_strided(flat, shape, [step * dtype.itemsize for step in steps])

    @staticmethod
    def _check(code: int) -> None:
        if code != 0:
            raise RuntimeError(f"torch's C shim failed (error {code}; its message is above)")


@functools.cache
def _shim() -> _Shim:
    return _Shim()


class AotiCpuModule:
    """``frames -> tuple of output arrays`` for an AOTInductor CPU archive; ``parallel`` calls may run at once.

    ``frames``: a uint8 numpy array ``[B, 3, H, W]`` in the layout the artifact was compiled for (the
    bundle's ``memory_format``; :meth:`facecrop.runtime.Bundle.run_frames` makes sure of it). Each call
    uses the calling thread's intra-op thread count (``native.set_intra_op_threads`` in that thread).
    """

    def __init__(self, path: Path, member: str, parallel: int = 2):
        self._shim = _shim()  # torch's library first: the compiled library links it
        with zipfile.ZipFile(path) as archive:
            library = self._library = _load_library(archive, member)
        library.AOTInductorModelContainerRun.argtypes = [ctypes.c_void_p, _c_handles, ctypes.c_size_t, _c_handles,
                                                         ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p]
        self._handle = ctypes.c_void_p()
        self._check(library.AOTInductorModelContainerCreateWithDevice(
            ctypes.byref(self._handle), ctypes.c_size_t(parallel), b"cpu", None), "loading")
        count = ctypes.c_size_t()
        self._check(library.AOTInductorModelContainerGetNumOutputs(self._handle, ctypes.byref(count)), "loading")
        self.num_outputs, self.parallel = count.value, parallel
        weakref.finalize(self, library.AOTInductorModelContainerDelete, self._handle)

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, ...]:
        # The container takes over the input handle (not the frames' memory: ``frames`` outlives the call)
        # and hands over new output handles (interface.h).
        inputs = (ctypes.c_void_p * 1)(self._shim.handle_of(frames).value)
        outputs = (ctypes.c_void_p * self.num_outputs)()
        self._check(self._library.AOTInductorModelContainerRun(self._handle, inputs, 1, outputs, self.num_outputs,
                                                               None, None), "running")
        return tuple(self._shim.array_of(handle) for handle in outputs)

    @staticmethod
    def _check(code: int, doing: str) -> None:
        if code != 0:  # the library has printed the C++ exception's message on stderr
            raise RuntimeError(f"the compiled module failed {doing} (AOTInductor error {code}; its message is above)")
