"""facecrop.runtime: load a facecrop bundle and run it on video (torch, numpy, PyAV only).

>>> from facecrop.runtime import load_bundle, process_video  # doctest: +SKIP
>>> bundle = load_bundle("bundles/det_500m-align112-320x240-export-cpu-fp32/1.0.0")  # doctest: +SKIP
>>> process_video(bundle, "talk.mp4", "talk.npz")  # doctest: +SKIP
"""

from .bundle import FORMAT_VERSION, Bundle, BundleError, load_bundle
from .video import VideoError, process_video

__all__ = ["FORMAT_VERSION", "Bundle", "BundleError", "VideoError", "load_bundle", "process_video"]
