"""Offline example data and a batched video reader.

Everything here is built from scikit-image's public-domain ``astronaut`` photo
(NASA portrait of Eileen Collins, shipped inside scikit-image) and its
``coffee`` photo; nothing is downloaded. The pictures and the video are made
once and cached under ``$FACECROP_CACHE_DIR`` (default ``~/.cache/facecrop``).

The example video (:func:`get_example_video`) has a known motion path, given by
:func:`example_video_ground_truth`:

- the main face (the whole photo, like a moving camera) pans right, zooms in
  and out and rotates in-plane; it is the only face, as in Medusa's example video;
- with ``second_face=True`` (the tracking demo), a second face (the astronaut's
  face, mirrored and smaller, pasted in front) enters from the right, crosses in
  front of the main face, leaves on the left, and later comes back in from the
  left, where it left.

Conventions: images RGB 0-255, tensors (B, 3, H, W); points ``(x, y)`` pixels,
x right, y down; boxes ``(x1, y1, x2, y2)``. A ``mat`` maps source-photo pixels
to frame pixels (3x3, pixel centres at integer coordinates).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facecrop.draw import save_image, write_video
from facecrop.geometry import transform_points, warp_crops
from facecrop.io import VideoLoader

__all__ = [
    "example_image_ground_truth",
    "example_video_ground_truth",
    "get_external_data_config",
    "get_example_image",
    "get_example_video",
]

# Bumped whenever the generated pictures or video change, so stale caches are not reused.
# 2: the default example video shows the main face only (the second face is opt-in).
_VERSION = 2

# The astronaut's face in the 512x512 source photo, measured once with SCRFD-500m
# (det_500m.onnx at 640x640): box (x1, y1, x2, y2) and 5 points (left eye, right eye,
# nose, left mouth corner, right mouth corner).
_SRC_BOX = (180.1, 60.2, 271.6, 179.7)
_SRC_LMS = ((204.1, 100.6), (246.8, 103.6), (223.8, 129.2), (202.0, 139.7), (245.7, 142.3))
# Centre of the face; all motion is defined as where this point goes.
_SRC_CENTRE = (226.0, 120.0)
# The pasted face is this ellipse (face and some hair) with a feathered edge.
_SPRITE_AXES = (60.0, 80.0)
_SPRITE_FEATHER = 6.0
# A mirrored face's points swap left/right: (right eye, left eye, nose, right mouth, left mouth).
_MIRROR_ORDER = (1, 0, 2, 4, 3)
_BACKGROUND = 128.0
_PHOTO_SIZE = (512, 512)  # the astronaut photo's (H, W)

_VIDEO_SIZE = (384, 480)  # (H, W)
_VIDEO_FPS = 24
DEFAULT_N_FRAMES = 120

# Extra faces pasted into the astronaut photo for get_example_image(n_faces >= 2):
# (centre x, centre y, scale, angle in degrees, mirrored), in the 512x512 photo.
_EXTRA_FACES = (
    (425.0, 115.0, 0.75, 8.0, True),
    (75.0, 105.0, 0.7, -6.0, True),
    (100.0, 405.0, 0.75, 5.0, False),
    (400.0, 420.0, 0.7, -8.0, True),
)
MAX_EXAMPLE_FACES = 1 + len(_EXTRA_FACES)


def _cache_dir() -> Path:
    root = os.environ.get("FACECROP_CACHE_DIR") or Path.home() / ".cache" / "facecrop"
    path = Path(root) / "example_data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _astronaut() -> torch.Tensor:
    from skimage import data  # optional dependency: only the example data needs it

    return torch.from_numpy(np.ascontiguousarray(data.astronaut())).permute(2, 0, 1)  # [3, 512, 512]


def _coffee_512() -> torch.Tensor:
    """scikit-image's coffee photo (400x600, no faces) cut and padded to 512x512."""
    from skimage import data

    img = torch.from_numpy(np.ascontiguousarray(data.coffee())).permute(2, 0, 1)  # [3, 400, 600]
    img = img[:, :, 44:556]
    return torch.nn.functional.pad(img, (0, 0, 56, 56), value=int(_BACKGROUND))


def _similarity(scale: float, angle_deg: float, centre: tuple[float, float], mirror: bool) -> torch.Tensor:
    """Matrix (3, 3) taking the source face centre to ``centre``, rotated, scaled, optionally mirrored."""
    a = math.radians(angle_deg)
    cos, sin = scale * math.cos(a), scale * math.sin(a)
    flip = -1.0 if mirror else 1.0
    cx, cy = _SRC_CENTRE
    # frame = centre + R(a) S(scale) F (p - src_centre), F = diag(flip, 1)
    linear = torch.tensor([[cos * flip, -sin], [sin * flip, cos]], dtype=torch.float64)
    shift = torch.tensor(centre, dtype=torch.float64) - linear @ torch.tensor([cx, cy], dtype=torch.float64)
    mat = torch.eye(3, dtype=torch.float64)
    mat[:2, :2] = linear
    mat[:2, 2] = shift
    return mat


def _source_layers(img: torch.Tensor | None) -> torch.Tensor:
    """The photo's channels for compositing, shape (1, C, H, W) float.

    Channels: the pasted-face alpha (feathered ellipse), coverage (ones, to know
    where the warped photo lands), the face-box mask (to measure how much of each
    face is visible), then RGB unless ``img`` is None (masks only, 512x512).
    """
    h, w = _PHOTO_SIZE if img is None else img.shape[1:]
    ys = torch.arange(h, dtype=torch.float32).view(h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, w)
    cx, cy = _SRC_CENTRE
    ax, ay = _SPRITE_AXES
    # Approximate distance (px along the short axis) inside the ellipse's edge.
    r = torch.sqrt(((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2)
    alpha = ((1.0 - r) * min(ax, ay) / _SPRITE_FEATHER).clamp(0.0, 1.0)
    x1, y1, x2, y2 = _SRC_BOX
    box = ((xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)).float()
    layers = [alpha[None], torch.ones(1, h, w), box[None]]
    if img is not None:
        layers.append(img.float())
    return torch.cat(layers).unsqueeze(0)


def _composite(layers: torch.Tensor, mats: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Render faces onto one frame: face 0 is the whole photo, faces 1.. are pasted on top.

    Args:
        layers: source layers of shape (1, C, h, w) from :func:`_source_layers`.
        mats: source -> frame matrices of shape (K, 3, 3), K >= 1.
        size: frame (H, W).

    Returns:
        the frame (3, H, W) uint8 (None when ``layers`` has no RGB) and the
        visible fraction of each face's box, shape (K,).
    """
    warped = warp_crops(layers, mats.unsqueeze(0).float(), size)[0]  # [K, C, H, W]
    alpha, cover, box = warped[:, 0:1], warped[:, 1:2], warped[:, 2:3]
    visible = box.clone()  # [K, 1, H, W]
    for k in range(1, mats.shape[0]):
        visible[:k] *= 1.0 - alpha[k]
    scale2 = torch.linalg.det(mats[:, :2, :2]).abs().float()  # area scale of each face
    x1, y1, x2, y2 = _SRC_BOX
    visible = visible.sum(dim=(1, 2, 3)) / ((x2 - x1) * (y2 - y1) * scale2)
    if layers.shape[1] == 3:
        return None, visible
    rgb = warped[:, 3:]
    frame = rgb[0] + _BACKGROUND * (1.0 - cover[0])
    for k in range(1, mats.shape[0]):
        frame = frame * (1.0 - alpha[k]) + rgb[k] * alpha[k]
    return frame.round().clamp(0, 255).to(torch.uint8), visible


def _atomic_write_png(path: Path, img: torch.Tensor) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".png")
    os.close(fd)
    try:
        save_image(tmp, img)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_png(path: Path) -> torch.Tensor:
    with Image.open(path) as img:
        return torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1)  # [3, H, W]


def _image_mats(n_faces: int) -> torch.Tensor:
    """Source -> image matrices (n_faces, 3, 3) of the faces in example image ``n_faces``."""
    mats = [torch.eye(3, dtype=torch.float64)]
    for cx, cy, scale, angle, mirror in _EXTRA_FACES[: n_faces - 1]:
        mats.append(_similarity(scale, angle, (cx, cy), mirror))
    return torch.stack(mats)


def _check_n_faces(n_faces) -> None:
    if isinstance(n_faces, bool) or not isinstance(n_faces, int) or not 0 <= n_faces <= MAX_EXAMPLE_FACES:
        raise ValueError(f"n_faces must be None, an int in [0, {MAX_EXAMPLE_FACES}] or a list of them, got {n_faces!r}")


def _example_image_path(n_faces: int | None) -> Path:
    """The cached PNG of example image ``n_faces``; None is the example video's first frame."""
    if n_faces is None:
        path = _cache_dir() / f"example_frame_v{_VERSION}.png"
        if not path.is_file():
            frame, _ = _composite(_source_layers(_astronaut()), _video_path_mats(2)[0, :1], _VIDEO_SIZE)
            _atomic_write_png(path, frame)
        return path
    path = _cache_dir() / f"example_image_v{_VERSION}_{n_faces}-face.png"
    if not path.is_file():
        if n_faces == 0:
            img = _coffee_512()
        else:
            photo = _astronaut()
            img, _ = _composite(_source_layers(photo), _image_mats(n_faces), tuple(photo.shape[1:]))
        _atomic_write_png(path, img)
    return path


def get_example_image(
    n_faces: int | list[int] | None = None,
    load: bool = True,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor | list[Path]:
    """An example photograph with a known number of faces (offline, cached).

    ``None`` is, as in Medusa, the first frame of the example video (480x384, one face,
    the picture that frame encodes); 1 is scikit-image's astronaut photo (one face); 0 is its
    coffee photo (no face); 2 to 5 are the astronaut photo with 1 to 4 more copies of
    her face pasted in (mirrored, smaller, rotated). These are 512x512.

    Args:
        n_faces: None, an int in [0, 5], or a list of them.
        load: return the image(s) as a tensor (True) or, as Medusa, a list of the cached PNG
            paths (False; a list even for one image).
        device: device of the returned tensor.
        channels_last: return (B, H, W, 3) instead of (B, 3, H, W).
        dtype: dtype of the returned tensor (values 0-255 in any dtype).

    Returns:
        images of shape (B, 3, H, W) (B = 1, or the list's length), or, when ``load`` is False,
        a list of paths (one for each image, as Medusa).

    Example:
        >>> get_example_image().shape
        torch.Size([1, 3, 384, 480])
        >>> get_example_image(1).shape
        torch.Size([1, 3, 512, 512])
        >>> get_example_image([0, 2], dtype=torch.uint8).dtype
        torch.uint8
    """
    many = isinstance(n_faces, (list, tuple))
    counts = list(n_faces) if many else [n_faces]
    for n in counts:
        if n is not None or many:
            _check_n_faces(n)
    paths = [_example_image_path(n) for n in counts]
    if not load:
        return paths
    imgs = torch.stack([_read_png(p) for p in paths]).to(device=device, dtype=dtype)
    return imgs.permute(0, 2, 3, 1) if channels_last else imgs


def example_image_ground_truth(n_faces: int | None = None) -> dict[str, torch.Tensor]:
    """Where the faces of ``get_example_image(n_faces)`` are.

    Returns:
        a dict with ``bbox`` (K, 4) float32, the source face box mapped into the
        image (axis-aligned hull of its rotated corners), and ``lms`` (K, 5, 2)
        float32, the 5 points (left eye, right eye, nose, left and right mouth
        corners as seen in the image). K = n_faces.
    """
    n = 1 if n_faces is None else n_faces
    _check_n_faces(n)
    if n == 0:
        return {"bbox": torch.zeros(0, 4), "lms": torch.zeros(0, 5, 2)}
    mirrored = [False] + [face[4] for face in _EXTRA_FACES[: n - 1]]
    return _faces_in_frame(_image_mats(n), torch.tensor(mirrored))


def _faces_in_frame(mats: torch.Tensor, mirrored: torch.Tensor) -> dict[str, torch.Tensor]:
    """Box (..., 4) and ordered 5 points (..., 5, 2) of faces placed by ``mats`` (..., 3, 3)."""
    x1, y1, x2, y2 = _SRC_BOX
    corners = torch.tensor([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=mats.dtype)
    corners = transform_points(mats, corners.expand(*mats.shape[:-2], 4, 2))
    lms = transform_points(mats, torch.tensor(_SRC_LMS, dtype=mats.dtype).expand(*mats.shape[:-2], 5, 2))
    lms = torch.where(mirrored[..., None, None], lms[..., list(_MIRROR_ORDER), :], lms)
    bbox = torch.cat([corners.amin(dim=-2), corners.amax(dim=-2)], dim=-1)
    return {"bbox": bbox.float(), "lms": lms.float()}


def _video_path_mats(n_frames: int) -> torch.Tensor:
    """Source -> frame matrices (n_frames, 2, 3, 3) of the main and the second face.

    The path is defined on normalised time u in [0, 1], so every ``n_frames``
    samples the same motion (more frames = smaller steps).
    """
    mats = []
    for i in range(n_frames):
        u = i / max(n_frames - 1, 1)
        # Main face: pan right by 100 px with a vertical sway, zoom 1 -> 1.3 -> 1,
        # in-plane rotation of up to +-12 degrees.
        main = _similarity(
            scale=1.0 + 0.3 * math.sin(math.pi * u),
            angle_deg=12.0 * math.sin(2 * math.pi * u),
            centre=(190.0 + 100.0 * u, 190.0 + 15.0 * math.sin(2 * math.pi * u)),
            mirror=False,
        )
        # Second face: off-screen right until u = 0.1, crosses right to left until
        # u = 0.55 (in front of the main face around u = 0.35), off-screen left until
        # u = 0.7, then comes back in from the left and stops at x = 110.
        if u < 0.1:
            x = 580.0
        elif u < 0.55:
            x = 580.0 - 680.0 * (u - 0.1) / 0.45
        elif u < 0.7:
            x = -100.0
        else:
            x = -100.0 + 210.0 * (u - 0.7) / 0.3
        second = _similarity(
            scale=0.8,
            angle_deg=-8.0,
            centre=(x, 190.0 + 15.0 * math.sin(2 * math.pi * u) + 20.0),
            mirror=True,
        )
        mats.append(torch.stack([main, second]))
    return torch.stack(mats)


def _check_n_frames(n_frames) -> None:
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 2:
        raise ValueError(f"n_frames must be an int >= 2, got {n_frames!r}")


def example_video_ground_truth(n_frames: int = DEFAULT_N_FRAMES, second_face: bool = False) -> dict[str, torch.Tensor]:
    """The known motion of the faces in ``get_example_video(n_frames=n_frames, second_face=second_face)``.

    Face 0 is the main face, face 1 (with ``second_face``) the pasted second face; K faces.

    Returns:
        a dict of float32 tensors:

        - ``mat`` (F, K, 3, 3): source photo -> frame pixel matrix of each face
          (face 1's includes a mirror flip).
        - ``bbox`` (F, K, 4): the source face box mapped into the frame
          (axis-aligned hull; may lie partly or wholly outside the frame).
        - ``lms`` (F, K, 5, 2): the face's 5 points in the frame, ordered as a
          detector reports them (left eye, right eye, nose, left/right mouth).
        - ``visible`` (F, K): fraction of the face box that is in the frame and
          not covered by a face in front (face 1 is in front of face 0).
    """
    _check_n_frames(n_frames)
    mats = _video_path_mats(n_frames)[:, :2 if second_face else 1]
    faces = _faces_in_frame(mats, torch.tensor([False, True])[:mats.shape[1]])
    # Visibility is a ratio of areas, so half-resolution masks measure it (4x cheaper).
    half = torch.diag(torch.tensor([0.5, 0.5, 1.0], dtype=mats.dtype))
    size = (_VIDEO_SIZE[0] // 2, _VIDEO_SIZE[1] // 2)
    layers = _source_layers(None)
    visible = torch.stack([_composite(layers, half @ m, size)[1] for m in mats])
    return {"mat": mats.float(), "bbox": faces["bbox"], "lms": faces["lms"], "visible": visible}


def _camera_move(img: torch.Tensor, n_frames: int) -> torch.Tensor:
    """``n_frames`` uint8 frames (T, 3, H, W) of ``img`` (3, H, W) seen by a camera that zooms in
    by up to 6% and sways by a few pixels; the border it uncovers is the background grey."""
    height, width = img.shape[1:]
    frames = []
    for u in torch.linspace(0, 1, n_frames, dtype=torch.float64).tolist():
        scale = 0.94 + 0.06 * math.sin(math.pi * u)
        shift = (6.0 * math.sin(2 * math.pi * u), 4.0 * math.sin(2 * math.pi * u))
        mat = torch.tensor([[scale, 0.0, (1 - scale) * (width - 1) / 2 + shift[0]],
                            [0.0, scale, (1 - scale) * (height - 1) / 2 + shift[1]],
                            [0.0, 0.0, 1.0]], dtype=torch.float64)  # image -> frame
        inside = warp_crops(torch.ones(1, 1, height, width, dtype=torch.float64), mat[None, None], (height, width))
        frame = warp_crops(img[None].double(), mat[None, None], (height, width))[0, 0]
        frames.append(frame + _BACKGROUND * (1 - inside[0, 0]))
    return torch.stack(frames).round().clamp(0, 255).to(torch.uint8)


def get_example_video(
    n_faces: int | None = None, return_videoloader: bool = False, n_frames: int = DEFAULT_N_FRAMES,
    second_face: bool = False, **kwargs
) -> Path | VideoLoader:
    """An example video (24 fps), made on first use and cached.

    ``n_faces=None`` is the example video (480x384), one moving face as in Medusa's, or with
    ``second_face=True`` the tracking demo, where a second face crosses in front of it: see the
    module docstring and :func:`example_video_ground_truth` for the exact motion. An int ``n`` in
    ``[0, 5]`` is ``get_example_image(n)`` (512x512, exactly ``n`` faces) filmed by a slowly
    moving, zooming camera: every frame shows all ``n`` faces, whole.

    Args:
        n_faces: None, or the number of faces in every frame.
        return_videoloader: return a :class:`VideoLoader` instead of the path.
        n_frames: number of frames (>= 2); the motion is the same for any count,
            sampled more or less finely.
        second_face: (``n_faces=None`` only) add the second face that crosses the first.
        **kwargs: passed to :class:`VideoLoader` (e.g. ``batch_size``, ``device``).

    Returns:
        the MP4 file's path, or a :class:`VideoLoader` over it.

    Example:
        >>> loader = get_example_video(n_frames=8, return_videoloader=True, batch_size=4)
        >>> len(loader), next(iter(loader)).shape
        (2, torch.Size([4, 3, 384, 480]))
    """
    _check_n_frames(n_frames)
    if n_faces is None:
        faces = 2 if second_face else 1
        path = _cache_dir() / f"example_video_v{_VERSION}_{n_frames}-frames_{faces}-faces-moving.mp4"
        if not path.is_file():
            layers = _source_layers(_astronaut())
            mats = _video_path_mats(n_frames)[:, :faces]
            write_video(path, torch.stack([_composite(layers, m, _VIDEO_SIZE)[0] for m in mats]), fps=_VIDEO_FPS)
    else:
        if second_face:
            raise ValueError("second_face is for the moving example video (n_faces=None)")
        _check_n_faces(n_faces)
        # Named as Medusa's (``2_face.mp4``): Medusa code reads the face count off the name's first character.
        path = _cache_dir() / f"{n_faces}_face_v{_VERSION}_{n_frames}-frames.mp4"
        if not path.is_file():
            write_video(path, _camera_move(_read_png(_example_image_path(n_faces)), n_frames), fps=_VIDEO_FPS)
    return VideoLoader(path, **kwargs) if return_videoloader else path


def get_external_data_config(key: str | None = None) -> dict[str, Path] | Path:
    """Where the external model files are, as Medusa's function of the same name says it.

    facecrop's one entry is ``insightface_path``: the ``buffalo_l`` pack folder in the model folder
    (``$FACECROP_MODEL_DIR``, else ``~/.facecrop/models``), where ``facecrop models fetch buffalo_l``
    puts ``2d106det.onnx``, ``1k3d68.onnx`` and ``det_10g.onnx``. Medusa's other entries (FLAME,
    DECA, EMOCA, MICA) are reconstruction models, which facecrop does not have.

    Example:
        >>> get_external_data_config("insightface_path").name
        'buffalo_l'
    """
    from facecrop.zoo import default_model_dir

    config = {"insightface_path": default_model_dir() / "buffalo_l"}
    if key is None:
        return config
    if key not in config:
        raise KeyError(f"{key!r} is not in facecrop's external data (it has {sorted(config)}); Medusa's "
                       "reconstruction models are not part of facecrop")
    return config[key]

