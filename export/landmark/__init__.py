"""Facial landmarks (Medusa's ``medusa.landmark``): :class:`RetinafaceLandmarkModel`.

``core`` holds the landmark head shared with the fused module, ``retinaface`` the eager class.
"""

from facecrop._lazy import lazy_names

__getattr__, __all__ = lazy_names(__name__, {"RetinafaceLandmarkModel": "facecrop.landmark.retinaface"})
