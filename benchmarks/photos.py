"""Real test photos that installed packages carry, and frames derived from them.

Shared by the parity tests and the benchmarks, so both judge the same pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def media_dir() -> Path:
    """Where Medusa's real example media are: ``$FACECROP_MEDIA_DIR``, else ``../shared/media/medusa`` beside
    the repository, else ``media/medusa`` beside ``$FACECROP_MODEL_DIR`` (both live in the shared folder)."""
    if os.environ.get("FACECROP_MEDIA_DIR"):
        return Path(os.environ["FACECROP_MEDIA_DIR"])
    beside = Path(__file__).resolve().parents[2] / "shared" / "media" / "medusa"
    if beside.is_dir() or not os.environ.get("FACECROP_MODEL_DIR"):
        return beside
    return Path(os.environ["FACECROP_MODEL_DIR"]).resolve().parent / "media" / "medusa"


def t1_rgb() -> np.ndarray:
    """InsightFace's ``t1.jpg`` (six faces), RGB uint8 ``[H, W, 3]``."""
    import cv2
    import insightface

    path = os.path.join(os.path.dirname(insightface.__file__), "data", "images", "t1.jpg")
    return np.ascontiguousarray(cv2.imread(path)[:, :, ::-1])


def astronaut_rgb() -> np.ndarray:
    """scikit-image's astronaut (one face), RGB uint8 ``[512, 512, 3]``."""
    from skimage.data import astronaut

    return np.ascontiguousarray(astronaut())


def rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate about the centre, keeping the size (corners cut, zero border)."""
    import cv2

    h, w = img.shape[:2]
    mat = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(img, mat, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)


def small_faces(img: np.ndarray, factor: float = 0.35, canvas: int = 640) -> np.ndarray:
    """Shrink the photo into the top-left of a larger grey canvas, so faces are small."""
    import cv2

    h, w = img.shape[:2]
    small = cv2.resize(img, (int(w * factor), int(h * factor)), interpolation=cv2.INTER_AREA)
    out = np.full((max(canvas, small.shape[0]), max(canvas, small.shape[1]), 3), 96, np.uint8)
    out[: small.shape[0], : small.shape[1]] = small
    return out


def border_cut(img: np.ndarray, left: float = 0.12, top: float = 0.18) -> np.ndarray:
    """Crop off the left and top so faces near those edges are cut by the border."""
    h, w = img.shape[:2]
    return np.ascontiguousarray(img[int(h * top):, int(w * left):])


def parity_images() -> dict[str, np.ndarray]:
    """The real photos and derived frames the detector parity is judged on."""
    t1, astro = t1_rgb(), astronaut_rgb()
    return {
        "t1": t1,
        "astronaut": astro,
        "t1_small": small_faces(t1),
        "astronaut_small": small_faces(astro, 0.3, 512),
        "t1_rot+30": rotate(t1, 30),
        "t1_rot-30": rotate(t1, -30),
        "astronaut_rot+30": rotate(astro, 30),
        "astronaut_rot-30": rotate(astro, -30),
        "t1_border": border_cut(t1),
        "astronaut_border": border_cut(astro, 0.0, 0.22),
    }
