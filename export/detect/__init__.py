"""Face detection (Medusa's ``medusa.detect``): :class:`SCRFDetector` (Medusa's ``YunetDetector`` is not provided).

``core`` holds the static-shape functional core shared with the fused module, ``letterbox``
InsightFace's resize inside the graph, ``scrfd`` the eager Medusa class, ``base`` what the
eager classes share.
"""

from facecrop._lazy import lazy_names

__getattr__, __all__ = lazy_names(__name__, {"SCRFDetector": "facecrop.detect.scrfd",
                                              "YunetDetector": "facecrop.detect.yunet"})
