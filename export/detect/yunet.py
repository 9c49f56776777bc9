"""Medusa's ``YunetDetector`` (OpenCV's YuNet face detector): not part of facecrop."""

from __future__ import annotations


class YunetDetector:
    """Not provided: facecrop detects faces with SCRFD (:class:`facecrop.detect.SCRFDetector`) only.

    The name exists so that Medusa code naming it still imports (and its SCRFD parts run);
    making one raises ``NotImplementedError`` saying what to use instead.
    """

    def __init__(self, *args, **kwargs):
        raise NotImplementedError("YunetDetector (OpenCV's YuNet) is not part of facecrop: use "
                                  "facecrop.detect.SCRFDetector (InsightFace's SCRFD, Medusa's default detector)")
