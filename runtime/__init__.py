"""facecrop.runtime: load a facecrop bundle and run it on video (torch, numpy, PyAV only).

>>> from facecrop.runtime import load_bundle, process_video  # doctest: +SKIP
>>> bundle = load_bundle("bundles/det_500m-align112-det224-aoti-cpu-fp32/1.0.0")  # doctest: +SKIP
>>> process_video(bundle, "talk.mp4", "talk.npz")  # doctest: +SKIP
"""

from .bundle import FORMAT_VERSION, Bundle, BundleError, load_bundle
from .crops import CROP_FORMATS
from .errors import VideoError
from .quality import summarize_results
from .track import OnlineTracker
from .video import process_video

__all__ = ["CROP_FORMATS", "FORMAT_VERSION", "Bundle", "BundleError", "OnlineTracker", "VideoError", "load_bundle",
           "process_video", "summarize_results"]
