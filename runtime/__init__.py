"""facecrop.runtime: run a facecrop bundle on video (torch, numpy and PyAV only).

>>> from facecrop.runtime import load_bundle, process_video  # doctest: +SKIP
>>> bundle = load_bundle("bundles/det_500m-align112-det224-aoti-cpu-fp32/1.0.0")  # doctest: +SKIP
>>> process_video(bundle, "talk.mp4", "talk.npz", crops="png")  # doctest: +SKIP

The public API:

- ``load_bundle(path, device=None, engine=None) -> Bundle``: load and self-check a bundle (``engine='torch'``
  or ``$FACECROP_ENGINE=torch``: an aoti CPU bundle through torch's own loader, the fallback); ``bundle(frames)``
  maps uint8 ``[B, 3, H, W]`` RGB frames of any size to the per-frame outputs, ``bundle.run_frames``
  the same in numpy (``bundle.py``; ``aoti.py`` and ``native.py`` run an aoti CPU module without torch).
- ``process_video(bundle, video, output, ...)``: every frame of a video, upright, with face ids,
  checkpointed, into one ``.npz`` (and crop files); resumable, one run per output (``video.py``).
- ``stream(bundle, source, ...)``: results per frame as they come, from a file, a URL (RTSP,
  HTTP, TCP, ...), a capture device or the app's frames, within a latency bound (``stream.py``).
- ``OnlineTracker``: the face ids, one frame at a time (``track.py``).
- ``summarize_results(path)``: a results file's quality summary (``quality.py``).
- Errors, all ``FacecropError`` (``errors.py``): ``BundleError`` (a wrong or damaged bundle), ``VideoError`` (a video or output that cannot
  be processed), ``RunInterrupted`` (Ctrl-C, what was kept); warnings ``CheckpointDamaged``,
  ``StaleCropsRemoved``. No run writes over its inputs or its other outputs (``outputs.py``).
- ``FORMAT_VERSION``: the bundle format it reads; ``CROP_FORMATS``: the crop files it writes.

Inside, one loop (``loop.py``): a source's batches (a file's from its decoding process, ``decoder.py``;
a live source's from ``stream.py``'s batcher over ``sources.py``) go through the module, two at once on a
CPU (``calls.py``; ``aoti.py`` runs AOTInductor's library without the GIL), and come out in order to
``process_video``'s sink (``sink.py``: ids, ``checkpoint.py``, ``crops.py``) or ``stream()``'s results.
``outputs.py`` refuses an output over an input; ``tuning.py`` holds the opt-in process-wide settings.
"""

from .bundle import FORMAT_VERSION, Bundle, BundleError, load_bundle
from .crops import CROP_FORMATS
from .errors import CheckpointDamaged, RunInterrupted, StaleCropsRemoved, VideoError
from .quality import summarize_results
from .stream import stream
from .track import OnlineTracker
from .video import process_video

__all__ = ["CROP_FORMATS", "FORMAT_VERSION", "Bundle", "BundleError", "CheckpointDamaged", "OnlineTracker",
           "RunInterrupted", "StaleCropsRemoved", "VideoError", "load_bundle", "process_video", "stream", "summarize_results"]
