"""facecrop: batched, compiled face detection, landmarks and crops.

The build side (ONNX conversion, the eager Medusa-compatible modules, bundle
export) lives here; the deploy side is :mod:`facecrop.runtime`. Public names are
imported lazily so that ``import facecrop.runtime`` pulls in only torch, numpy
and PyAV.
"""

from facecrop._lazy import lazy_names

__version__ = "0.1.0"

__getattr__, __all__ = lazy_names(__name__, {
    "SCRFDetector": "facecrop.detect.scrfd",
    "RetinafaceLandmarkModel": "facecrop.landmark.retinaface",
    "BboxCropModel": "facecrop.crop.bbox_crop",
    "AlignCropModel": "facecrop.crop.align_crop",
    "TEMPLATE": "facecrop.crop.core",
    "BatchResults": "facecrop.containers.results",
    "VideoLoader": "facecrop.io",
    "get_example_image": "facecrop.data",
    "get_example_video": "facecrop.data",
})
