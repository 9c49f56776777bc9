"""Medusa's landmark-and-cropping tutorial, step by step, with facecrop.

Usage: ``python examples/landmarks_and_cropping.py OUT_DIR [--model-dir DIR]``.
``docs/landmarks_and_cropping.md`` explains each step; running the script with
``OUT_DIR = docs/images`` makes the pictures and videos the doc shows.

Steps: (1) the detector's five points; (2) 106 vs 68 landmarks; (3) landmarks
on a video, accumulated with ``BatchResults``; (4) the box crop's square box vs
the detector's box; (5) the box crop; (6) cropping by hand with ``crop_mat``
and kornia's ``warp_affine``; (7) uncropping with the inverse matrix; (8)
landmarks moved into crop space; (9) the aligned crop with the template; (10)
the aligned-crop video, one per face. ``OUT_DIR/checks.json`` records the
numbers the steps measure (e.g. how far the hand-made crop is from
``imgs_crop``) and which pictures use stand-in weights.

Models: the detector ``det_500m`` and the landmark models ``2d106det`` and
``1k3d68`` are looked up in ``--model-dir``, else ``$FACECROP_MODEL_DIR`` (see
``facecrop.zoo``). The detector is required (``facecrop models fetch
buffalo_sc`` downloads it). A missing landmark model is replaced by a stand-in
network with random weights (the test suite's builder, ``facecrop.testing``):
the pipeline then runs exactly as with the real one, but its points are not
real landmarks, and every picture that depends on them says so in a red strip.

Conventions: images RGB uint8 (3, H, W), points (x, y) pixels, boxes
(x1, y1, x2, y2); ``crop_mat`` (N, 3, 3) maps image pixels to crop pixels.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

# At 96 frames the second face moves about 16 px per frame, slowly enough for Medusa's
# tracker; at 48 frames (32 px) it swaps the two faces' identities where they cross.
N_FRAMES = 96
BATCH_SIZE = 16
CROP_SIZE = 224
STANDIN_LABEL = "STAND-IN landmark weights: random, not real landmarks"
# Caption strips below every picture; the stand-in warning is the bottom strip.
CAPTION_BG, CAPTION_FG = (32, 32, 32), (255, 255, 255)
WARNING_BG, WARNING_FG = (170, 0, 0), (255, 235, 0)
DETECTOR_BOX_COLOR = (255, 64, 64)
SQUARE_BOX_COLOR = (64, 160, 255)
LMS_106_COLOR, LMS_68_COLOR = (0, 255, 0), (255, 0, 255)


def find_models(model_dir: Path | None, standin_dir: Path) -> tuple[Path, dict[str, Path], list[str]]:
    """Detector and landmark model files; stand-ins are built for missing landmark models.

    Returns:
        the detector path, ``{'2d106det': path, '1k3d68': path}`` and the names
        replaced by stand-ins.
    """
    from facecrop.zoo import ModelNotFoundError, resolve_model

    detector = resolve_model("det_500m", model_dir=model_dir)
    landmarks, standins = {}, []
    for name in ("2d106det", "1k3d68"):
        try:
            landmarks[name] = resolve_model(name, model_dir=model_dir)
        except ModelNotFoundError:
            landmarks[name] = build_standin(name, standin_dir)
            standins.append(name)
    return detector, landmarks, standins


def build_standin(name: str, folder: Path) -> Path:
    """A stand-in landmark ONNX file with the official model's input/output contract."""
    from facecrop.testing import build_landmark_onnx

    return build_landmark_onnx(folder / f"{name}.onnx", kind=name)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf", size)
    except OSError:
        return ImageFont.load_default(size)


def _wrap(text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and font.getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + [line]


def text_strip(width: int, text: str, bg: tuple, fg: tuple) -> torch.Tensor:
    """A text strip of shape (3, h, width), h even (video encoders need even sizes)."""
    font = _font(max(11, min(16, width // 36)))
    pad = 4
    lines = [wrapped for part in text.split("\n") for wrapped in _wrap(part, font, width - 2 * pad)]
    line_h = font.size + 3
    height = len(lines) * line_h + 2 * pad
    height += height % 2
    strip = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(strip)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * line_h), line, fill=fg, font=font)
    return torch.frombuffer(bytearray(strip.tobytes()), dtype=torch.uint8).view(height, width, 3).permute(2, 0, 1)


def caption(img: torch.Tensor, text: str, standin: bool) -> torch.Tensor:
    """``img`` (3, H, W) with ``text`` below it and, if ``standin``, the red stand-in warning at the bottom.

    Strips go below the picture so that its pixel coordinates stay those of the image.
    """
    parts = [img, text_strip(img.shape[2], text, CAPTION_BG, CAPTION_FG)]
    if standin:
        parts.append(text_strip(img.shape[2], STANDIN_LABEL, WARNING_BG, WARNING_FG))
    return torch.cat(parts, dim=1)


def hstack(imgs: list[torch.Tensor], gap: int = 4) -> torch.Tensor:
    """Pictures (3, H, W_i) of equal height side by side, ``gap`` white columns apart."""
    white = torch.full((3, imgs[0].shape[1], gap), 255, dtype=torch.uint8)
    parts = [p for img in imgs for p in (img, white)][:-1]
    return torch.cat(parts, dim=2)


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    return img.round().clamp(0, 255).to(torch.uint8)


class Outputs:
    """Writes the tutorial's files into ``folder`` and remembers which carry the stand-in label."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.labelled: list[str] = []

    def picture(self, name: str, img: torch.Tensor, text: str, standin: bool) -> Path:
        """Save ``img`` (3, H, W) uint8 as ``name`` with its caption (and the stand-in warning)."""
        from facecrop.draw import save_image

        return self.wrote(save_image(self.folder / name, caption(img, text, standin)), standin)

    def wrote(self, path: Path, standin: bool, note: str = "") -> Path:
        """Record and print a file written (``standin``: it shows the stand-in label)."""
        if standin:
            self.labelled.append(path.name)
        print(f"    -> {path}  ({STANDIN_LABEL if standin else 'real weights'}{note})")
        return path


def step_detector(outputs, img, detector) -> dict:
    """1. The detector's box, confidence and five points (eyes, nose, mouth corners)."""
    from facecrop.draw import draw_faces

    out = detector(img)
    print(f"[1] SCRFD found {len(out['conf'])} face(s); lms {tuple(out['lms'].shape)} = 5 points per face")
    drawn = draw_faces(img[0], bbox=out["bbox"], lms=out["lms"], labels=[f"{c:.3f}" for c in out["conf"].tolist()])
    text = "1. detector: box, confidence and 5 points (eyes, nose, mouth corners)"
    outputs.picture("01_detector_points.png", drawn, text, standin=False)
    return {"n_faces": len(out["conf"])}


def zoom_on(img: torch.Tensor, box: torch.Tensor, size: int = 512, margin: float = 1.6):
    """The square around ``box`` (x1, y1, x2, y2), ``margin`` x its larger side, resampled to ``size``.

    Returns:
        the zoomed picture (3, size, size) uint8 and ``zoom_mat`` (3, 3), image -> zoom pixels,
        made like a crop: :func:`facecrop.geometry.warp_crops` with a 3x3 matrix.
    """
    from facecrop.geometry import warp_crops

    x1, y1, x2, y2 = box.tolist()
    side = margin * max(x2 - x1, y2 - y1)
    left, top = (x1 + x2 - side) / 2, (y1 + y2 - side) / 2
    scale = (size - 1) / side
    zoom_mat = torch.tensor([[scale, 0.0, -scale * left], [0.0, scale, -scale * top], [0.0, 0.0, 1.0]])
    zoomed = warp_crops(img[None].float(), zoom_mat.view(1, 1, 3, 3), (size, size))[0, 0]
    return to_uint8(zoomed), zoom_mat


def step_106_vs_68(outputs, img, detector, landmark_paths, standins) -> None:
    """2. The 106-point and the 68-point landmarks of the same face, drawn together (zoomed in)."""
    from torchvision.utils import draw_keypoints

    from facecrop import RetinafaceLandmarkModel
    from facecrop.geometry import transform_points

    outs = {}
    for name in ("2d106det", "1k3d68"):
        outs[name] = RetinafaceLandmarkModel(str(landmark_paths[name]), detector=detector)(img)
        print(f"[2] {name}: lms {tuple(outs[name]['lms'].shape)}")
    zoomed, zoom_mat = zoom_on(img[0], outs["2d106det"]["bbox"][0])
    drawn = draw_keypoints(zoomed, transform_points(zoom_mat, outs["2d106det"]["lms"][:1]),
                           colors=LMS_106_COLOR, radius=3)
    drawn = draw_keypoints(drawn, transform_points(zoom_mat, outs["1k3d68"]["lms"][:1]),
                           colors=LMS_68_COLOR, radius=3)
    standin = any(name in standins for name in outs)
    text = "2. landmarks, zoomed on the face: 106 points (2d106det, green) and 68 points (1k3d68, magenta)"
    outputs.picture("02_landmarks_106_vs_68.png", drawn, text, standin)


def tracks(results) -> dict:
    """Per tracked face (1, 2, ... as in the video names): its frames and detector boxes, for checking."""
    return {
        str(face + 1): {
            "img_idx": results.img_idx[results.face_idx == face].tolist(),
            "bbox": [[round(v, 1) for v in box] for box in results.bbox[results.face_idx == face].tolist()],
        }
        for face in results.face_idx.unique().tolist()
    }


def step_video_landmarks(outputs, detector, landmark_path, standin) -> dict:
    """3. Landmarks on every frame of a video, batch by batch, tracked and visualised as an MP4."""
    from facecrop import BatchResults, RetinafaceLandmarkModel, get_example_video

    model = RetinafaceLandmarkModel(str(landmark_path), detector=detector)
    loader = get_example_video(n_frames=N_FRAMES, return_videoloader=True, batch_size=BATCH_SIZE, second_face=True)
    results = BatchResults()
    frames = []
    for batch in loader:
        results.add(**model(batch))  # img_idx is offset by the frames seen so far
        frames.append(batch)
    results.concat()
    n_detections = len(results)
    results.sort_faces(attr="lms", dist_threshold=250)
    n_tracked = len(results.face_idx.unique())
    results.filter_faces(present_threshold=0.1)
    n_faces = len(results.face_idx.unique())
    print(f"[3] {loader.n_frames} frames in batches of {BATCH_SIZE}: {n_detections} detections, "
          f"{n_tracked} tracked face(s), {n_faces} present in >= 10% of frames")
    frames = torch.cat(frames)
    # The caption goes below each frame, so the results' coordinates still fit the frames.
    text = "3. 2d106det landmarks on the example video, one colour per tracked face"
    labelled = torch.stack([caption(f, text, standin) for f in frames])
    (path,) = results.visualize(outputs.folder / "03_video_landmarks.mp4", labelled, video=True, fps=loader.fps)
    outputs.wrote(path, standin)
    save_preview(outputs, "03_video_landmarks_preview.png", [path], standin, per_video=4)
    return {"n_frames": loader.n_frames, "tracks": tracks(results)}


def save_preview(outputs: Outputs, name: str, videos: list[Path], standin: bool, per_video: int,
                 scale: float = 0.5) -> Path:
    """A picture of ``per_video`` evenly spaced frames of each video (one row each), read back from the files."""
    from facecrop.io import VideoLoader
    from facecrop.draw import save_grid

    rows, picked = [], []
    for video in videos:
        frames = torch.cat(list(VideoLoader(video)))
        picks = torch.linspace(0, len(frames) - 1, per_video).round().long()
        small = F.interpolate(frames[picks].float(), scale_factor=scale, mode="bilinear", antialias=True)
        rows.append(to_uint8(small))
        picked.append(f"{video.name} frames {picks.tolist()}")
    path = save_grid(outputs.folder / name, torch.cat(rows), nrow=per_video)
    return outputs.wrote(path, standin, f"; read back from the MP4s: {'; '.join(picked)}")


def step_box_crop(outputs, img, detector, landmark_path, standin) -> dict:
    """4. and 5. The box crop (DECA/EMOCA): its square box vs the detector's box, and the crop."""
    from facecrop import BboxCropModel
    from facecrop.draw import draw_faces

    det = detector(img)
    out = BboxCropModel(str(landmark_path), output_size=(CROP_SIZE, CROP_SIZE), detector=detector)(img)
    print(f"[4] detector box {fmt(det['bbox'][0])}, box crop's square box {fmt(out['bbox'][0])} "
          f"(around the {out['lms'].shape[1]} landmarks, x1.1 x1.25)")
    boxes = torch.cat([det["bbox"], out["bbox"]])
    colors = [DETECTOR_BOX_COLOR] * len(det["bbox"]) + [SQUARE_BOX_COLOR] * len(out["bbox"])
    labels = ["detector"] * len(det["bbox"]) + ["box crop"] * len(out["bbox"])
    drawn = draw_faces(img[0], bbox=boxes, lms=out["lms"], labels=labels, colors=colors)
    text = "4. detector box (red) vs the box crop's square box (blue), landmarks green"
    outputs.picture("04_box_crop_vs_detector_box.png", drawn, text, standin)

    print(f"[5] imgs_crop {tuple(out['imgs_crop'].shape)} {out['imgs_crop'].dtype}, "
          f"crop_mat {tuple(out['crop_mat'].shape)}")
    text = f"5. the box crop, {CROP_SIZE}x{CROP_SIZE}"
    outputs.picture("05_box_crop.png", out["imgs_crop"][0], text, standin)
    return out


def fmt(box: torch.Tensor) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in box.tolist()) + ")"


def step_crop_by_hand(outputs, img, out, standin) -> dict:
    """6. ``crop_mat`` is all it takes: kornia's ``warp_affine`` gives the same crop."""
    from kornia.geometry.transform import warp_affine

    crop_mat = out["crop_mat"]  # [N, 3, 3]: image pixels -> crop pixels
    imgs = img.float().expand(len(crop_mat), -1, -1, -1)  # one copy of the image per face
    by_hand = warp_affine(imgs, crop_mat[:, :2], dsize=(CROP_SIZE, CROP_SIZE), align_corners=True)
    diff = (to_uint8(by_hand).int() - out["imgs_crop"].int()).abs()
    max_diff = int(diff.max())
    print(f"[6] kornia warp_affine(img, crop_mat[:, :2], align_corners=True) vs imgs_crop: "
          f"max |difference| {max_diff} grey level(s), "
          f"{float((diff > 0).float().mean()) * 100:.2f}% of values differ")
    differs = diff[0].amax(dim=0, keepdim=True) > 0  # [1, S, S]: any channel
    diff_img = (differs * 255).to(torch.uint8).expand(3, -1, -1)  # white where they differ
    text = (f"6. imgs_crop | by hand: kornia warp_affine with crop_mat | where they differ (white; "
            f"max {max_diff} grey level)")
    picture = hstack([out["imgs_crop"][0], to_uint8(by_hand[0]), diff_img])
    outputs.picture("06_crop_by_hand.png", picture, text, standin)
    return {"hand_crop_max_abs_diff": max_diff, "crop_mat": crop_mat[0].tolist()}


def step_uncrop(outputs, img, out, standin) -> dict:
    """7. The inverse of ``crop_mat`` puts the crop back where it came from."""
    from kornia.geometry.transform import warp_affine

    from facecrop.geometry import invert_affine

    height, width = img.shape[2:]
    img_mat_crop = invert_affine(out["crop_mat"])  # [N, 3, 3]: crop pixels -> image pixels
    crop = out["imgs_crop"][:1].float()
    back = warp_affine(crop, img_mat_crop[:1, :2], dsize=(height, width), align_corners=True)[0]
    covered = warp_affine(torch.ones_like(crop[:, :1]), img_mat_crop[:1, :2], dsize=(height, width),
                          align_corners=True)[0, 0] > 0.999  # [H, W]: inside the crop's footprint
    # Resampled twice (crop, then uncrop), so close to the original, not equal.
    mean_diff = float((back - img[0].float()).abs()[:, covered].mean())
    print(f"[7] uncropped with invert_affine(crop_mat): covers {int(covered.sum())} pixels, "
          f"mean |uncropped - original| there {mean_diff:.2f} grey levels")
    pasted = torch.where(covered, back, img[0].float() * 0.3)  # the crop pasted back, the rest dimmed
    text = "7. original | the crop warped back with the inverse crop_mat | pasted into the dimmed original"
    picture = hstack([img[0], to_uint8(back), to_uint8(pasted)])
    outputs.picture("07_uncrop.png", picture, text, standin)
    return {"uncrop_mean_abs_diff": mean_diff, "uncrop_covered_pixels": int(covered.sum())}


def step_landmarks_in_crop(outputs, out, standin) -> dict:
    """8. ``transform_points(crop_mat, lms)`` moves the landmarks into the crop."""
    from facecrop.draw import draw_faces
    from facecrop.geometry import transform_points

    lms_crop = transform_points(out["crop_mat"], out["lms"])  # [N, L, 2] in crop pixels
    inside = float(((lms_crop >= 0) & (lms_crop <= CROP_SIZE - 1)).all(-1).float().mean())
    print(f"[8] transform_points(crop_mat, lms): {tuple(lms_crop.shape)}, {inside * 100:.0f}% inside the crop")
    drawn = draw_faces(out["imgs_crop"][0], lms=lms_crop[:1])
    text = "8. landmarks moved into the crop with transform_points(crop_mat, lms)"
    outputs.picture("08_landmarks_in_crop.png", drawn, text, standin)
    return {"crop_lms_inside": inside}


def aligned_template() -> torch.Tensor:
    """The ArcFace template scaled from 112x112 to the crop size, shape (5, 2)."""
    from facecrop import TEMPLATE

    return TEMPLATE * (CROP_SIZE / 112)


def step_aligned_crop(outputs, img, detector) -> dict:
    """9. The aligned crop (ArcFace/MICA): the five points land on the template."""
    from facecrop import AlignCropModel
    from facecrop.draw import draw_faces
    from facecrop.geometry import transform_points

    out = AlignCropModel(output_size=(CROP_SIZE, CROP_SIZE), detector=detector)(img)
    template = aligned_template()
    points = transform_points(out["crop_mat"], out["lms"])  # [N, 5, 2]: detector points in the crop
    dist = float((points[0] - template).norm(dim=-1).mean())
    print(f"[9] aligned crop {tuple(out['imgs_crop'].shape)}: the 5 points lie {dist:.1f} px (mean) "
          "from the template")
    drawn = draw_faces(to_uint8(out["imgs_crop"][0]), lms=points[:1], template=template)  # float crops, as Medusa's
    text = "9. aligned crop: template (blue) and the detector's 5 points moved into the crop (green)"
    outputs.picture("09_aligned_crop_template.png", drawn, text, standin=False)
    return {"template_mean_dist_px": dist}


def step_aligned_video(outputs, detector) -> dict:
    """10. Aligned crops on every frame, one video per tracked face."""
    from facecrop import AlignCropModel, BatchResults, get_example_video

    model = AlignCropModel(output_size=(CROP_SIZE, CROP_SIZE), detector=detector)
    loader = get_example_video(n_frames=N_FRAMES, return_videoloader=True, batch_size=BATCH_SIZE, second_face=True)
    results = BatchResults()
    for batch in loader:
        results.add(**model(batch))
    results.sort_faces()
    results.filter_faces()
    counts = results.face_idx.bincount().tolist()
    print(f"[10] aligned crops of {len(counts)} face(s), {counts} frames each")
    paths = results.visualize(outputs.folder / "10_aligned_crop_video.mp4", loader, video=True, show_cropped=True,
                              fps=loader.fps, crop_size=(CROP_SIZE, CROP_SIZE), template=aligned_template())
    for path in paths:
        outputs.wrote(path, standin=False)
    save_preview(outputs, "10_aligned_crop_video_preview.png", paths, standin=False, per_video=6)
    # visualize writes one video per face, in face_idx order
    videos = {str(face + 1): path.name for face, path in zip(results.face_idx.unique().tolist(), paths)}
    return {"videos": videos, "n_frames": loader.n_frames, "tracks": tracks(results)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder for the pictures and videos (e.g. docs/images)")
    parser.add_argument("--model-dir", type=Path, help="folder of the ONNX models (default $FACECROP_MODEL_DIR)")
    args = parser.parse_args(argv)

    from facecrop import SCRFDetector, get_example_image

    # Stand-in weights are built in a temporary folder: never left beside the pictures.
    with tempfile.TemporaryDirectory(prefix="facecrop-standins-") as tmp:
        try:
            detector_path, landmark_paths, standins = find_models(args.model_dir, Path(tmp))
        except (FileNotFoundError, ValueError) as err:
            print(f"landmarks_and_cropping: {err}", file=sys.stderr)
            return 1
        args.out_dir.mkdir(parents=True, exist_ok=True)
        for name in standins:
            print(f"NOTE: {name} not found, using a stand-in: {STANDIN_LABEL} "
                  "(the pictures that use it carry this label in red)")
        detector = SCRFDetector(model_path=str(detector_path), det_size=(224, 224))
        img = get_example_image(1, dtype=torch.uint8)  # [1, 3, 512, 512], the astronaut photo
        outputs = Outputs(args.out_dir)
        standin_106 = "2d106det" in standins
        checks = {"standins": standins, "standin_label": STANDIN_LABEL}
        checks["detector"] = step_detector(outputs, img, detector)
        step_106_vs_68(outputs, img, detector, landmark_paths, standins)
        checks["video_landmarks"] = step_video_landmarks(outputs, detector, landmark_paths["2d106det"],
                                                         standin_106)
        crops = step_box_crop(outputs, img, detector, landmark_paths["2d106det"], standin_106)
        checks["crop_by_hand"] = step_crop_by_hand(outputs, img, crops, standin_106)
        checks["uncrop"] = step_uncrop(outputs, img, crops, standin_106)
        checks["landmarks_in_crop"] = step_landmarks_in_crop(outputs, crops, standin_106)
        checks["aligned_crop"] = step_aligned_crop(outputs, img, detector)
        checks["aligned_video"] = step_aligned_video(outputs, detector)
    checks["labelled"] = sorted(outputs.labelled)
    (args.out_dir / "checks.json").write_text(json.dumps(checks, indent=2))
    print(f"checks: {args.out_dir / 'checks.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
