"""facecrop: batched, compiled face detection, landmarks and crops.

The build side (ONNX conversion, the eager Medusa-compatible modules, bundle
export) lives here; the deploy side is :mod:`facecrop.runtime`. Public names are
imported lazily so that ``import facecrop.runtime`` pulls in only torch, numpy
and PyAV.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "SCRFDetector": "facecrop.detector",
    "RetinafaceLandmarkModel": "facecrop.landmarker",
    "BboxCropModel": "facecrop.crop_models",
    "AlignCropModel": "facecrop.crop_models",
    "TEMPLATE": "facecrop.crops",
    "BatchResults": "facecrop.results",
    "VideoLoader": "facecrop.data",
    "get_example_image": "facecrop.data",
    "get_example_video": "facecrop.data",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'facecrop' has no attribute {name!r}")
