"""Face crops (Medusa's ``medusa.crop``): :class:`AlignCropModel`, :class:`BboxCropModel`,
:class:`InsightfaceBboxCropModel` and :class:`RandomSquareCropModel`.

``core`` holds the crop matrices shared with the fused module (and ``TEMPLATE``), ``align_crop``
and ``bbox_crop`` the eager classes, ``base`` what they share.
"""

from facecrop._lazy import lazy_names

__getattr__, __all__ = lazy_names(__name__, {
    "AlignCropModel": "facecrop.crop.align_crop",
    "BboxCropModel": "facecrop.crop.bbox_crop",
    "InsightfaceBboxCropModel": "facecrop.crop.bbox_crop",
    "RandomSquareCropModel": "facecrop.crop.square_crop",
    "TEMPLATE": "facecrop.crop.core",
})
