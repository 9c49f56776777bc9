"""Results over many batches: accumulate, track faces, filter, visualise.

:class:`BatchResults` is Medusa's container with the same semantics: per-batch
outputs of the detector, landmark or crop models (dicts of per-detection
tensors plus ``n_img``) are added batch by batch, with ``img_idx`` offset by
the number of frames seen before; faces are then given a stable ``face_idx``
across frames by greedy nearest-landmark matching (:func:`facecrop.tracking.sort_faces`), rare
faces are dropped (:func:`facecrop.tracking.filter_faces`), and the result is drawn as a picture
grid or a video.

Conventions: every per-detection tensor has the detections on its first axis
(N rows in total); ``img_idx`` (N,) long says which frame each row came from;
``bbox`` (N, 4) is (x1, y1, x2, y2), ``lms`` (N, L, 2) are (x, y) pixels;
``crop_mat`` (N, 3, 3) maps original-frame pixels to crop pixels.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facecrop.io import VideoLoader
from facecrop.draw import draw_faces, face_color, save_grid, write_video
from facecrop.geometry import transform_points, warp_crops
from facecrop.tracking import filter_faces, sort_faces

__all__ = ["BatchResults"]

_META = ("n_img", "device")


# Arrays of a runtime results file that are not one row per face: per frame, per track, per saved crop.
NOT_PER_FACE = ("pts_seconds", "overflow", "rotation", "track_frames", "track_kept", "imgs_crop", "crop_frame_index",
                "crop_slot", "tube_face", "tube_number", "tube_start", "tube_stop", "tube_frame_tube",
                "tube_frame_index", "tube_frame_slot", "tube_crop_mat", "tube_options", "crop_size", "video")


class BatchResults:
    """Per-detection results accumulated over batches of frames (Medusa's ``BatchResults``).

    Args:
        n_img: frames the given results cover (``out['n_img']``).
        device: where accumulated tensors are kept (e.g. ``'cpu'`` for long videos).
        **kwargs: per-detection tensors of a first batch (``conf``, ``bbox``, ``lms``,
            ``img_idx``, ``imgs_crop``, ``crop_mat``, ...), so that
            ``BatchResults(**out)`` holds one batch's output.

    Attributes hold, as in Medusa, a list of per-batch tensors (``None`` where a batch had
    nothing) after :meth:`add`, and one tensor after :meth:`concat`; ``n_img`` counts frames
    and, after :meth:`sort_faces`, ``face_idx`` gives each detection its face. ``imgs`` (added
    by ``crop_faces_video(save_imgs=True)``) holds frames, one row per image, not per detection.
    The methods that need the data call :meth:`concat` themselves.

    Example:
        >>> out = {"conf": torch.ones(2), "lms": torch.zeros(2, 5, 2), "img_idx": torch.tensor([0, 1]), "n_img": 2}
        >>> results = BatchResults()
        >>> results.add(**out); results.add(**out); results.add(n_img=3, conf=None)  # a batch without faces
        >>> len(results.conf)
        3
        >>> results.concat()
        >>> results.img_idx, results.n_img
        (tensor([0, 1, 2, 3]), 7)
    """

    def __init__(self, n_img: int = 0, device: str | torch.device = "cpu", **kwargs):
        self.device = device
        self.n_img = 0
        if kwargs:
            self.add(n_img=n_img, **kwargs)
            self.concat()
        else:
            self.n_img = int(n_img)

    def add(self, **kwargs) -> None:
        """Append one batch's outputs; ``img_idx`` is offset by the frames seen before this batch.

        Args:
            **kwargs: ``n_img`` (frames in this batch; required with ``img_idx``) and per-detection
                tensors (or ``None``, skipped by :meth:`concat`), e.g. ``results.add(**model(batch))``.
        """
        n_img = kwargs.pop("n_img", None)
        if kwargs.get("img_idx") is not None and n_img is None:
            raise ValueError("add() needs n_img (the batch's frame count) to offset img_idx")
        for key, value in kwargs.items():
            if key.startswith("_") or key in _META:
                raise ValueError(f"{key!r} cannot be added as per-detection data")
            if value is not None and not isinstance(value, torch.Tensor):
                raise TypeError(f"{key} must be a torch.Tensor or None, got {type(value).__name__}")
            if key == "img_idx" and value is not None:
                # e.g. [0, 0, 1] -> [32, 32, 33] for the second batch of 32 frames
                value = value.long() + self.n_img
            existing = getattr(self, key, None)
            parts = [] if existing is None else [existing] if isinstance(existing, torch.Tensor) else existing
            parts.append(None if value is None else value.detach().to(self.device))
            setattr(self, key, parts)
        if n_img is not None:
            self.n_img += int(n_img)

    def concat(self, n_max: int | None = None) -> None:
        """Turn each attribute's list of batches into one tensor (``None`` if all were ``None``).

        Args:
            n_max: keep only the first ``n_max`` rows of each attribute.
        """
        for key, value in list(vars(self).items()):
            if key.startswith("_") or not isinstance(value, list):
                continue
            parts = [v for v in value if v is not None]
            data = torch.cat(parts) if parts else None
            setattr(self, key, data[:n_max] if data is not None and n_max is not None else data)
        self._check_lengths()

    def _check_lengths(self) -> None:
        lengths = {key: value.shape[0] for key, value in self._tensors().items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"per-detection tensors disagree on the number of detections: {lengths}")

    def _tensors(self) -> dict[str, torch.Tensor]:
        """The per-detection tensors (``imgs`` holds frames, not detections)."""
        return {k: v for k, v in vars(self).items()
                if not k.startswith("_") and k != "imgs" and isinstance(v, torch.Tensor)}

    def sort_faces(self, attr: str = "lms", dist_threshold: float = 250) -> None:
        """Set ``face_idx`` (N,) with :func:`sort_faces` on attribute ``attr`` (e.g. ``'lms'``)."""
        self.concat()
        data = getattr(self, attr, None)
        if data is None:  # Medusa warns and carries on: a video without faces has nothing to sort
            warnings.warn(f"no {attr!r} to sort faces on: were there no detections?", stacklevel=2)
            return
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"cannot sort faces on {attr!r}: not a per-detection tensor")
        if getattr(self, "img_idx", None) is None:
            raise ValueError("cannot sort faces without img_idx")
        if getattr(self, "face_idx", None) is not None:
            raise ValueError("face_idx is already computed")
        self.face_idx = sort_faces(data, self.img_idx, dist_threshold)

    def filter_faces(self, present_threshold: float = 0.1) -> None:
        """Drop faces present in fewer than ``present_threshold`` of ``n_img`` frames; renumber face_idx 0, 1, ..."""
        self.concat()
        if getattr(self, "face_idx", None) is None:
            raise ValueError("filter_faces() needs face_idx: call sort_faces() first")
        keep = filter_faces(self.face_idx, self.n_img, present_threshold)
        for key, value in self._tensors().items():
            setattr(self, key, value[keep])
        # Consecutive ids, in the same order: [0, 2, 5] -> [0, 1, 2].
        self.face_idx = self.face_idx.unique(return_inverse=True)[1]

    def to_dict(self, exclude: str | list[str] | None = None) -> dict:
        """The per-detection tensors and ``n_img`` as a dict (without the keys in ``exclude``)."""
        self.concat()
        exclude = [exclude] if isinstance(exclude, str) else list(exclude or [])
        out = {"n_img": self.n_img, **self._tensors()}
        return {k: v for k, v in out.items() if k not in exclude}

    @classmethod
    def from_npz(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> BatchResults:
        """Load a runtime results file (padded per-frame arrays) into the per-detection form.

        The file holds ``frame_index`` (F,), ``pts_seconds`` (F,), ``valid`` (F, K)
        bool and, padded to K faces per frame, ``conf`` (F, K), ``bbox`` (F, K, 4),
        ``lms`` (F, K, L, 2) and ``crop_mat`` (F, K, 3, 3). Rows where ``valid`` is
        False are dropped; ``img_idx`` is the video frame index (``frame_index``) of
        each kept face and ``n_img`` is F. Per-frame, per-track and saved-crop arrays
        (``NOT_PER_FACE``) are left out.
        """
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        for key in ("frame_index", "valid"):
            if key not in arrays:
                raise ValueError(f"{path} is not a runtime results file: no {key!r} array (has {sorted(arrays)})")
        valid = torch.from_numpy(arrays.pop("valid")).bool()  # [F, K]
        frame_index = torch.from_numpy(arrays.pop("frame_index")).long()  # [F]
        rows, _ = valid.nonzero(as_tuple=True)
        out = {"img_idx": frame_index[rows]}
        for key, value in arrays.items():
            if key in NOT_PER_FACE:
                continue
            if value.shape[:2] != tuple(valid.shape):
                raise ValueError(f"{key} must have shape (F, K, ...) = {tuple(valid.shape)}, got {value.shape}")
            out[key] = torch.from_numpy(value)[valid]
        return cls(n_img=valid.shape[0], device=device, **out)

    @torch.no_grad()
    def visualize(
        self,
        f_out: str | os.PathLike,
        imgs: torch.Tensor | VideoLoader | str | os.PathLike,
        video: bool = False,
        show_cropped: bool = False,
        face_id: int | None = None,
        fps: float = 24,
        crop_size: tuple[int, int] = (224, 224),
        template: torch.Tensor | None = None,
        nrow: int = 8,
    ) -> list[Path]:
        """Draw the results onto the frames and save them as one picture grid or an MP4.

        On the original frames: face boxes (one colour per ``face_idx``, red before
        sorting) labelled with their confidence, landmarks in green, and the
        template (mapped back with the inverse ``crop_mat``) in blue. With
        ``show_cropped``: each face's frames warped into crop space with
        ``crop_mat``, its landmarks and the template; one output per face, named
        ``<stem>_face-<id+1><suffix>`` when there are several faces.

        Args:
            f_out: output path: ``.png``/``.jpg`` for a grid, ``.mp4`` for a video.
            imgs: the frames the results came from: a tensor of shape (n_img, 3, H, W)
                (or (3, H, W)), uint8 or float 0-255, a :class:`VideoLoader`, or the
                path of the video or picture.
            video: write an MP4 (one frame per input frame) instead of a grid.
            show_cropped: draw in crop space (needs ``crop_mat``).
            face_id: with ``show_cropped``, draw this face only, to ``f_out`` itself.
            fps: video frame rate.
            crop_size: crop ``(h, w)`` for ``show_cropped``.
            template: points of shape (P, 2) in crop pixels (e.g. the alignment
                template scaled to ``crop_size``).
            nrow: pictures per row of the grid.

        Returns:
            the paths written.
        """
        self.concat()
        imgs = _as_uint8_frames(imgs)
        if imgs.shape[0] != self.n_img:
            raise ValueError(f"imgs must hold the {self.n_img} frames the results cover, got shape {tuple(imgs.shape)}")
        f_out = Path(f_out)
        if show_cropped:
            if getattr(self, "crop_mat", None) is None:
                raise ValueError("show_cropped=True needs crop_mat (results of a crop model)")
            face_idx = self._face_idx()
            ids = face_idx.unique().tolist() if face_id is None else [int(face_id)]
            if face_id is not None and int(face_id) not in face_idx.tolist():
                raise ValueError(f"face_id {face_id} is not among the faces {face_idx.unique().tolist()}")
            paths = []
            for face_id in ids:
                path = f_out.with_name(f"{f_out.stem}_face-{face_id + 1}{f_out.suffix}") if len(ids) > 1 else f_out
                frames = self._draw_cropped(imgs, face_id, crop_size, template)
                paths.append(_save(path, frames, video, fps, nrow))
            return paths
        return [_save(f_out, self._draw_frames(imgs, template), video, fps, nrow)]

    def _face_idx(self) -> torch.Tensor:
        face_idx = getattr(self, "face_idx", None)
        if face_idx is None:  # before sort_faces every detection is drawn as face 0
            return torch.zeros(self._num_detections(), dtype=torch.int64)
        return face_idx.cpu()

    def _num_detections(self) -> int:
        tensors = self._tensors()
        return next(iter(tensors.values())).shape[0] if tensors else 0

    def _draw_frames(self, imgs: torch.Tensor, template: torch.Tensor | None) -> torch.Tensor:
        img_idx = self._cpu("img_idx")
        bbox, conf, lms = self._cpu("bbox"), self._cpu("conf"), self._cpu("lms")
        crop_mat = self._cpu("crop_mat")
        sorted_ = getattr(self, "face_idx", None) is not None
        face_idx = self._face_idx()
        out = []
        for i, img in enumerate(imgs):
            det = (img_idx == i) if img_idx is not None else torch.zeros(0, dtype=torch.bool)
            if not det.any():
                out.append(img)
                continue
            colors = [face_color(f) for f in face_idx[det].tolist()] if sorted_ else None
            labels = [f"{c:.3f}" for c in conf[det].tolist()] if conf is not None else None
            tmpl = None
            if template is not None and crop_mat is not None:
                # [K, P, 2]: the crop-space template seen in the original frame
                tmpl = transform_points(torch.linalg.inv(crop_mat[det].double()), template.double().cpu())
            out.append(
                draw_faces(
                    img,
                    bbox=bbox[det] if bbox is not None else None,
                    lms=lms[det] if lms is not None else None,
                    labels=labels,
                    colors=colors,
                    template=tmpl,
                )
            )
        return torch.stack(out)

    def _draw_cropped(self, imgs, face_id, crop_size, template) -> torch.Tensor:
        img_idx, lms = self._cpu("img_idx"), self._cpu("lms")
        crop_mat = self._cpu("crop_mat").float()
        rows = (self._face_idx() == face_id).nonzero().squeeze(1)
        out = []
        for r in rows.tolist():
            frame = imgs[int(img_idx[r])].float().unsqueeze(0)  # [1, 3, H, W]
            crop = warp_crops(frame, crop_mat[r].view(1, 1, 3, 3), tuple(crop_size))[0, 0]
            crop = crop.round().clamp(0, 255).to(torch.uint8)
            crop_lms = transform_points(crop_mat[r], lms[r].float()).unsqueeze(0) if lms is not None else None
            out.append(draw_faces(crop, lms=crop_lms, template=template.cpu() if template is not None else None))
        return torch.stack(out)

    def _cpu(self, key: str) -> torch.Tensor | None:
        value = getattr(self, key, None)
        return value.cpu() if isinstance(value, torch.Tensor) else None

    def __len__(self) -> int:
        """Number of detections (concatenated)."""
        return self._num_detections()

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self._tensors().items())
        return f"BatchResults(n_img={self.n_img}, device='{self.device}', {shapes})"


def _as_uint8_frames(imgs) -> torch.Tensor:
    """Frames (B, 3, H, W) uint8 on the CPU from a tensor, a VideoLoader, or a video/picture path."""
    if isinstance(imgs, (str, os.PathLike)):
        path = Path(imgs)
        if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            with Image.open(path) as img:
                imgs = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)
        else:
            imgs = VideoLoader(path)
    if isinstance(imgs, VideoLoader):
        imgs = torch.cat(list(imgs))
    if not isinstance(imgs, torch.Tensor):
        raise TypeError(f"imgs must be a tensor of frames, a VideoLoader or a path, got {type(imgs).__name__}")
    if imgs.ndim == 3:
        imgs = imgs.unsqueeze(0)
    if imgs.ndim != 4 or imgs.shape[1] != 3:
        raise ValueError(f"imgs must have shape (B, 3, H, W) or (3, H, W), got {tuple(imgs.shape)}")
    if imgs.dtype != torch.uint8:
        imgs = imgs.round().clamp(0, 255).to(torch.uint8)
    return imgs.cpu()


def _save(path: Path, frames: torch.Tensor, video: bool, fps: float, nrow: int) -> Path:
    if path.exists():
        path.unlink()
    if video:
        return write_video(path, frames, fps=fps)
    return save_grid(path, frames, nrow=nrow)
