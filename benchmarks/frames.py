"""Benchmark frames: real faces from the test photos pasted onto real-photo backgrounds.

Every frame is built from :mod:`benchmarks.photos` (InsightFace's ``t1.jpg`` with six
faces, scikit-image's astronaut with one), so the detectors see real faces at
realistic sizes. Frames are RGB uint8 ``[H, W, 3]``; the test video is an H.264 MP4
written with PyAV and cached outside the repository (under the ``--out`` folder).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

FRAME_SIZES = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
FPS = 25


@lru_cache(maxsize=1)
def face_patches() -> tuple[np.ndarray, ...]:
    """The seven real faces (six of ``t1``, the astronaut) as RGB patches with some context.

    Faces are located once with InsightFace's SCRFD-500MF reference at 640 (the
    benchmark's own detectors never choose what they are measured on).
    """
    from benchmarks.photos import astronaut_rgb, t1_rgb

    patches = []
    for rgb in (t1_rgb(), astronaut_rgb()):
        for x1, y1, x2, y2 in _reference_boxes(rgb):
            cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, 1.7 * max(x2 - x1, y2 - y1)
            h, w = rgb.shape[:2]
            left, top = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
            right, bottom = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
            patches.append(np.ascontiguousarray(rgb[top:bottom, left:right]))
    return tuple(patches)


def _reference_boxes(rgb: np.ndarray) -> np.ndarray:
    """Face boxes ``[N, 4]`` by InsightFace's SCRFD on the ``det_500m`` weights at 640x640."""
    from benchmarks.detector_parity import insightface_detect

    boxes, scores, _ = insightface_detect(_det_500m(), rgb, (640, 640), det_threshold=0.5)
    return boxes[scores >= 0.5]


def _det_500m() -> Path:
    import os

    repo = Path(__file__).resolve().parents[1]
    return Path(os.environ.get("FACECROP_MODEL_DIR", repo.parent / "shared" / "models")) / "det_500m.onnx"


@lru_cache(maxsize=4)
def _background(size: tuple[int, int]) -> np.ndarray:
    """A heavily blurred ``t1`` photo (no detectable faces left) of ``size`` (width, height)."""
    import cv2

    from benchmarks.photos import t1_rgb

    small = cv2.resize(t1_rgb(), (size[0] // 16, size[1] // 16), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), 3), size, interpolation=cv2.INTER_LINEAR)


def compose_frame(n_faces: int, seed: int, size: tuple[int, int] = FRAME_SIZES["720p"]) -> np.ndarray:
    """One frame with ``n_faces`` real faces on a grid of cells, jittered per ``seed``.

    Args:
        n_faces: faces to paste (cycling through the seven real faces, mirrored on the second lap).
        seed: picks the faces' order, sizes and positions.
        size: ``(width, height)``.

    Returns:
        RGB uint8 ``[height, width, 3]``. Faces are about a fifth of the frame height,
        so they stay detectable at the 224x224 detector input.
    """
    import cv2

    rng = np.random.default_rng(seed)
    width, height = size
    frame = _background(size).copy()
    cols = max(1, int(np.ceil(np.sqrt(n_faces * width / height))))
    rows = max(1, int(np.ceil(n_faces / cols)))
    cell_w, cell_h = width // cols, height // rows
    patches = face_patches()
    order = rng.permutation(max(n_faces, len(patches)))
    for slot, cell in enumerate(rng.permutation(rows * cols)[:n_faces]):
        patch = patches[order[slot] % len(patches)]
        if order[slot] >= len(patches):
            patch = patch[:, ::-1]
        side = int(min(cell_w, cell_h) * rng.uniform(0.75, 0.95))
        scale = side / max(patch.shape[:2])
        patch = cv2.resize(patch, (max(1, int(patch.shape[1] * scale)), max(1, int(patch.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
        ph, pw = patch.shape[:2]
        x = (cell % cols) * cell_w + int(rng.uniform(0, cell_w - pw + 1))
        y = (cell // cols) * cell_h + int(rng.uniform(0, cell_h - ph + 1))
        frame[y:y + ph, x:x + pw] = patch
    return frame


def video_faces(index: int, faces: tuple[int, int] = (1, 6)) -> int:
    """Faces in frame ``index`` of the test video: ``lo, lo + 1, ..., hi, lo, ...`` (default 1 to 6)."""
    lo, hi = faces
    return lo + index % (hi - lo + 1)


def synthetic_frames(count: int, n_faces: int | None = None, size=FRAME_SIZES["720p"]) -> np.ndarray:
    """``count`` frames ``[count, H, W, 3]``: the video's face counts, or ``n_faces`` in each."""
    return np.stack([compose_frame(n_faces or video_faces(i), seed=i, size=tuple(size)) for i in range(count)])


def ensure_video(folder: Path, count: int, size=FRAME_SIZES["720p"], faces: tuple[int, int] = (1, 6)) -> Path:
    """The cached test video ``folder/bench_<W>x<H>_<count>.mp4`` (H.264, yuv420p), built if absent.

    ``faces``: the range of faces a frame holds (see :func:`video_faces`); other than 1-6 it is in the name.
    Written to a temporary name and renamed, so an interrupted build never leaves a short video.
    """
    import av

    width, height = size
    tag = "" if tuple(faces) == (1, 6) else f"_{faces[0]}-{faces[1]}faces"
    path = folder / f"bench_{width}x{height}_{count}{tag}.mp4"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(compose_frame(video_faces(i, faces), seed=i, size=size), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    tmp.rename(path)
    return path


def decode_batches(path: Path, batch_size: int, limit: int | None = None):
    """Yield RGB uint8 ``[b, H, W, 3]`` batches decoded by PyAV (FFmpeg threads on), ``limit`` frames at most."""
    import av

    pending, seen = [], 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            pending.append(frame.to_ndarray(format="rgb24"))
            seen += 1
            if len(pending) == batch_size:
                yield np.stack(pending)
                pending = []
            if limit is not None and seen >= limit:
                break
    if pending:
        yield np.stack(pending)
