"""Face tubes: runs of one face cut stably, on disk with their sound, with quality columns and a report.

Real media: a 4 s cut of Medusa's ``3.mp4`` (people coming and going), Medusa's ``example_vid.mp4``
(one person talking, with sound), still videos made from Medusa's real photos; the bundle is the real
det_500m pipeline with aligned crops.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from benchmarks.tube_jitter import NOISE, jitter_and_drift, still_video
from conftest import IN_CI, REPO, real_media
from facecrop.cli import main
from facecrop.geometry import warp_crops
from facecrop.runtime import process_video, stream
from facecrop.runtime.crops import read_audio
from facecrop.runtime.errors import UsageError
from facecrop.runtime.face_quality import head_pose
from facecrop.runtime.tubes import DROP_REASONS, TubeOptions, crop_params, find_tubes, params_to_mats
from test_runtime import decode_all, make_video, npz

SIZE = 112


def _decode_image(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def _tube_files(folder: Path, suffix: str) -> list[Path]:
    return sorted(folder.glob(f"face_*/tube_*/frame_*.{suffix}"))


def _expected_crops(video: Path, r: dict) -> dict[tuple[int, int], np.ndarray]:
    """Every tube frame's crop cut independently: the test's own decode, the build side's warp."""
    frames, _ = decode_all(video)
    mats = torch.from_numpy(r["tube_crop_mat"])
    crops = warp_crops(frames[torch.from_numpy(r["tube_frame_index"])], mats[:, None], (SIZE, SIZE))[:, 0]
    crops = crops.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return {(int(t), int(f)): c for t, f, c in zip(r["tube_frame_tube"], r["tube_frame_index"], crops)}


# --- cutting tubes (arrays) ------------------------------------------------------------------------

def _one_face(frames: np.ndarray, total: int, centre=lambda f: (100.0, 100.0), scale=lambda f: 0.5):
    """Arrays of one face found in ``frames`` of ``total``: its crop at ``centre(f)``, ``scale(f)`` crop px a px."""
    face_idx = np.full((total, 1), -1, np.int64)
    face_idx[frames, 0] = 0
    params = np.zeros((total, 1, 4))
    for f in frames:
        cx, cy = centre(f)
        params[f, 0] = (cx, cy, -np.log(scale(f)), 0.0)
    mats = params_to_mats(params, SIZE).astype(np.float32)
    quality = {k: np.where(face_idx >= 0, value, np.nan)
               for k, value in (("face_size", 100.0), ("sharpness", 100.0), ("yaw", 0.0), ("pitch", 0.0), ("roll", 0.0))}
    return face_idx, mats, quality


def test_tubes_split_at_gaps_jumps_and_length_and_drop_short_runs():
    frames = np.r_[0:30, 33:60, 70:100]  # a gap of 2 (bridged), one of 9 (splits)
    face_idx, mats, quality = _one_face(frames, 120, centre=lambda f: (100.0 + (300 if f >= 85 else 0), 100.0))
    t = find_tubes(face_idx, mats, np.array([True]), quality, SIZE, 25.0, TubeOptions(min_tube=10, max_gap=5))
    # 0-59 (the gap of 2 inside), 70-84, then the crop jumps 300 px (more than a quarter of its side): 85-99.
    assert list(zip(t["tube_start"], t["tube_stop"])) == [(0, 60), (70, 85), (85, 100)]
    assert t["tube_number"].tolist() == [0, 1, 2] and (t["tube_face"] == 0).all()
    first = t["tube_frame_tube"] == 0
    assert t["tube_frame_index"][first].tolist() == list(range(60))  # every frame, the missing ones too
    assert (t["tube_frame_slot"][first][30:33] == -1).all() and (t["tube_frame_slot"][first][:30] == 0).all()
    short = find_tubes(face_idx, mats, np.array([True]), quality, SIZE, 25.0, TubeOptions(min_tube=20, max_gap=5))
    assert list(zip(short["tube_start"], short["tube_stop"])) == [(0, 60)]
    assert (short["tube_drop"][70:100, 0] == DROP_REASONS.index("tube too short")).all()
    split = find_tubes(face_idx, mats, np.array([True]), quality, SIZE, 25.0, TubeOptions(min_tube=10, max_tube=25))
    assert list(zip(split["tube_start"], split["tube_stop"]))[:3] == [(0, 25), (25, 50), (50, 60)]


def test_tubes_only_of_kept_tracks_and_filtered_faces_count_as_missing():
    face_idx, mats, quality = _one_face(np.arange(40), 40)
    assert len(find_tubes(face_idx, mats, np.array([False]), quality, SIZE, 25.0, TubeOptions())["tube_face"]) == 0
    assert len(find_tubes(face_idx, mats, np.array([False]), quality, SIZE, 25.0,
                          TubeOptions(keep_all=True))["tube_face"]) == 1
    quality["yaw"][10:30] = 60.0  # turned away for 20 frames: more than max_gap, so two tubes
    t = find_tubes(face_idx, mats, np.array([True]), quality, SIZE, 25.0, TubeOptions(max_yaw=45, min_tube=5))
    assert list(zip(t["tube_start"], t["tube_stop"])) == [(0, 10), (30, 40)]
    assert (t["tube_drop"][10:30, 0] == DROP_REASONS.index("yaw too large")).all()


def test_smoothing_keeps_a_steady_motion_and_a_still_face_still():
    frames = np.arange(60)
    moving = _one_face(frames, 60, centre=lambda f: (100.0 + 3.0 * f, 80.0 + 1.0 * f), scale=lambda f: 0.5 + 0.002 * f)
    t = find_tubes(*moving[:2], np.array([True]), moving[2], SIZE, 25.0, TubeOptions())
    # Zero phase, ends reflected: a linear motion comes out as it went in, to the last frame (no lag).
    assert np.allclose(crop_params(t["tube_crop_mat"], SIZE)[:, :2], crop_params(moving[1][:, 0], SIZE)[:, :2],
                       atol=0.05)
    rng = np.random.default_rng(0)
    shaky = _one_face(frames, 60, centre=lambda f: tuple(100.0 + rng.normal(0, 1.0, 2)))
    t = find_tubes(*shaky[:2], np.array([True]), shaky[2], SIZE, 25.0, TubeOptions())
    raw_steps = np.abs(np.diff(crop_params(shaky[1][:, 0], SIZE)[:, :2], axis=0)).mean()
    smooth_steps = np.abs(np.diff(crop_params(t["tube_crop_mat"], SIZE)[:, :2], axis=0)).mean()
    assert smooth_steps < raw_steps / 5, (raw_steps, smooth_steps)


def test_tube_options_refuse_nonsense():
    with pytest.raises(UsageError, match="max_tube"):
        TubeOptions(min_tube=50, max_tube=10)
    with pytest.raises(UsageError, match="max_yaw"):
        TubeOptions(max_yaw=120)
    with pytest.raises(UsageError, match="max_gap must be a non-negative number of frames"):
        TubeOptions(max_gap=-1)


# --- tubes on disk: pixels -----------------------------------------------------------------------------

def test_cut_crops_is_the_bundles_sampler_bit_for_bit(photo_frames):
    """numpy's cut of a real frame equals the compiled module's sampler (eager here) for any similarity,
    inside, across and outside the frame's edges."""
    from facecrop.runtime.cut import cut_crops
    from facecrop.runtime.warp import sample_crops

    rng = np.random.default_rng(0)
    frame = np.ascontiguousarray(photo_frames[7])
    scale, turn = rng.uniform(0.2, 2.0, 40), rng.uniform(-np.pi, np.pi, 40)
    mats = np.zeros((40, 3, 3), np.float32)
    mats[:, 0, 0], mats[:, 0, 1] = scale * np.cos(turn), scale * np.sin(turn)
    mats[:, 1, 0], mats[:, 1, 1] = -scale * np.sin(turn), scale * np.cos(turn)
    centres = rng.uniform((-60, -60), (frame.shape[1] + 60, frame.shape[0] + 60), (40, 2))  # some past the edges
    mats[:, :2, 2] = (SIZE - 1) / 2 - np.einsum("nij,nj->ni", mats[:, :2, :2], centres)
    mats[:, 2, 2] = 1
    ours = cut_crops(frame, mats, SIZE)
    theirs = sample_crops(torch.from_numpy(frame).permute(2, 0, 1)[None], torch.from_numpy(mats),
                          torch.zeros(40, dtype=torch.int64), (SIZE, SIZE))
    assert np.array_equal(ours, theirs.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    assert ours.any(axis=(1, 2, 3)).sum() >= 30  # most crops see the photo (the canvas around it is black)

def test_unsmoothed_tube_crops_are_the_bundle_crops(bundle, people_clip, tmp_path):
    """With smoothing off, the tube writer cuts what the bundle cut: its sampler, the run's frames."""
    out = process_video(bundle, people_clip, tmp_path / "raw.npz", save_crops=True, crops="png", progress=False,
                        tubes=TubeOptions(smooth_s=0, keep_all=True, min_tube=1))
    r = npz(out)
    files = _tube_files(out.with_suffix(".crops"), "png")
    assert len(files) == len(r["tube_frame_index"]) == r["valid"].sum()  # no gaps bridged at min_tube 1, every face
    worst = 0
    for path in files:
        face, frame = int(path.parent.parent.name[5:]), int(path.stem[6:])
        slot = int(np.nonzero(r["face_idx"][frame] == face)[0][0])
        n = np.nonzero((r["crop_frame_index"] == frame) & (r["crop_slot"] == slot))[0][0]
        diff = np.abs(_decode_image(path.read_bytes()).astype(int) - r["imgs_crop"][n].transpose(1, 2, 0))
        worst = max(worst, diff.max())
    assert worst <= 1  # eager against compiled float rounding: a grey level at most


def test_png_tubes_hold_the_smoothed_crops_of_kept_tracks(crops_run, people_clip):
    r = npz(crops_run)
    folder = crops_run.with_suffix(".crops")
    files = _tube_files(folder, "png")
    assert len(files) == len(r["tube_frame_index"]) > 0
    assert set(r["tube_face"]) <= set(np.flatnonzero(r["track_kept"]))  # kept tracks only, by default
    expected = _expected_crops(people_clip, r)
    listed = json.loads((folder / "tubes.json").read_text())
    for t, tube in enumerate(listed):
        assert tube["name"] == f"face_{tube['face_idx']:04d}/tube_{tube['number']:03d}"
        names = sorted(p.name for p in (folder / tube["name"]).iterdir())
        assert names == [f"frame_{f:06d}.png" for f in range(tube["start"], tube["stop"])]
        for f in range(tube["start"], tube["stop"]):
            assert np.array_equal(_decode_image((folder / tube["name"] / f"frame_{f:06d}.png").read_bytes()),
                                  expected[(t, f)])
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["tubes"]["min_tube"] == 16 and "non-commercial" in meta["licence"]["terms"]
    assert meta["source_models"]["detector"]["file"] == "det_500m.onnx"


def test_jpg_tubes_within_their_quality(bundle, people_clip, crops_run, tmp_path):
    r = npz(crops_run)
    expected = _expected_crops(people_clip, r)
    errors = {}
    for quality in (2, 10):
        out = process_video(bundle, people_clip, tmp_path / f"q{quality}.npz", crops="jpg", jpeg_quality=quality,
                            progress=False)
        files = _tube_files(out.with_suffix(".crops"), "jpg")
        assert len(files) == len(r["tube_frame_index"])
        tube_of = {(int(f), int(n)): t for t, (f, n) in enumerate(zip(r["tube_face"], r["tube_number"]))}
        errors[quality] = np.mean([np.abs(_decode_image(p.read_bytes()).astype(int) - expected[
            (tube_of[(int(p.parent.parent.name[5:]), int(p.parent.name[5:]))], int(p.stem[6:]))]).mean() for p in files])
    assert errors[2] < 1.5 and errors[2] < errors[10] < 3.0, errors


def test_webdataset_samples_are_tube_frames(bundle, people_clip, crops_run, tmp_path):
    import webdataset as wds

    r = npz(crops_run)
    expected = _expected_crops(people_clip, r)
    out = process_video(bundle, people_clip, tmp_path / "w.npz", crops="webdataset", progress=False)
    shards = sorted(str(p) for p in out.with_suffix(".crops").glob("shard-*.tar"))
    samples = list(wds.WebDataset(shards, shardshuffle=False).decode("rgb8"))
    assert len(samples) == len(r["tube_frame_index"])
    ids = [f"people/{f}/{n}" for f, n in zip(r["tube_face"], r["tube_number"])]
    for sample in samples:
        meta = sample["json"]
        t, frame = ids.index(meta["tube"]), meta["frame_index"]
        assert np.array_equal(sample["png"], expected[(t, frame)])
        row = np.nonzero((r["tube_frame_tube"] == t) & (r["tube_frame_index"] == frame))[0][0]
        assert np.allclose(meta["crop_mat"], r["tube_crop_mat"][row])
        slot = r["tube_frame_slot"][row]
        assert meta["detected"] == (slot >= 0)
        if slot >= 0:
            assert np.allclose(meta["bbox"], r["bbox"][frame, slot]) and meta["sharpness"] == pytest.approx(
                float(r["sharpness"][frame, slot]), rel=1e-6)
        assert meta["video"] == str(people_clip) and meta["pts_seconds"] == pytest.approx(r["pts_seconds"][frame])


# --- tubes on disk: video and sound ------------------------------------------------------------------

@pytest.fixture(scope="module")
def talk_with_sound(tmp_path_factory) -> Path:
    """Medusa's example_vid.mp4 (a person talking) with its first 40 frames blacked out, so that the
    person's tube starts at frame 40 (1.67 s in), and a sound track of seeded noise (its own track is
    digital silence, measured: every sample 0.0), which lines up with itself at one offset only."""
    source = real_media("example_vid.mp4")
    path = tmp_path_factory.mktemp("talk") / "talk.mp4"
    rate = 48000
    noise = np.random.default_rng(7).uniform(-0.5, 0.5, (2, rate * 10)).astype(np.float32)
    with av.open(str(source)) as src, av.open(str(path), "w") as out:
        video_in = src.streams.video[0]
        video = out.add_stream("libx264", rate=video_in.average_rate)
        video.width, video.height, video.pix_fmt = video_in.width, video_in.height, "yuv420p"
        video.codec_context.time_base = video_in.time_base
        audio = out.add_stream("aac", rate=rate, layout="stereo")
        for i, frame in enumerate(src.decode(video_in)):
            rgb = frame.to_ndarray(format="rgb24")
            image = av.VideoFrame.from_ndarray(np.zeros_like(rgb) if i < 40 else rgb, format="rgb24")
            image.pts, image.time_base = frame.pts, frame.time_base
            out.mux(video.encode(image))
        out.mux(video.encode())
        for begin in range(0, noise.shape[1], 1024):
            piece = av.AudioFrame.from_ndarray(np.ascontiguousarray(noise[:, begin:begin + 1024]), format="fltp",
                                               layout="stereo")
            piece.sample_rate, piece.pts = rate, begin
            out.mux(audio.encode(piece))
        out.mux(audio.encode())
    return path


def test_mp4_tube_has_the_source_rate_frames_and_sound(bundle, talk_with_sound, tmp_path):
    out = process_video(bundle, talk_with_sound, tmp_path / "talk.npz", crops="mp4", progress=False)
    r = npz(out)
    folder = out.with_suffix(".crops")
    (tube,) = json.loads((folder / "tubes.json").read_text())
    assert tube["start"] == 40 and tube["stop"] == 232
    frames = [int(x) for x in (folder / f"{tube['name']}.frames.txt").read_text().split()]
    assert frames == list(range(40, 232))
    rate = 24000 / 1001
    with av.open(str(folder / f"{tube['name']}.mp4")) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.average_rate == pytest.approx(rate, rel=1e-3)
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video)]
        duration = float(video.duration * video.time_base)
        audio_duration = float(audio.duration * audio.time_base)
    assert len(decoded) == 192
    assert duration == pytest.approx(192 / rate, abs=1 / rate)  # the frame range at the source's rate
    assert audio_duration == pytest.approx(duration, abs=1 / rate)
    expected = _expected_crops(talk_with_sound, r)
    loss = np.mean([np.abs(d.astype(int) - expected[(0, f)]).mean() for d, f in zip(decoded, frames)])
    assert loss < 3.0, loss  # H.264 at CRF 18 on 112 px crops (measured about 1.2 grey levels)


def test_mp4_tube_sound_is_the_source_sound_of_its_time_range(bundle, talk_with_sound, tmp_path):
    """Cross-correlated with the source's sound, the tube's sound lines up at the tube's start time,
    within a video frame."""
    out = process_video(bundle, talk_with_sound, tmp_path / "talk.npz", crops="mp4", progress=False)
    (tube,) = json.loads((out.with_suffix(".crops") / "tubes.json").read_text())
    with av.open(str(out.with_suffix(".crops") / f"{tube['name']}.mp4")) as container:
        ours = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
    source = read_audio(talk_with_sound, 0.0, 10.0, 48000, "stereo")[0]
    window = ours[48000:48000 * 3]  # 2 s of speech from 1 s into the tube
    scores = np.correlate(source, window, mode="valid")
    lag_s = np.argmax(scores) / 48000 - 1.0  # where the window sits in the source, less its place in the tube
    assert lag_s == pytest.approx(tube["start_s"], abs=1001 / 24000)


# --- smoothing on real faces ----------------------------------------------------------------------------

def test_still_noisy_faces_hold_still_and_talking_faces_do_not_drift(bundle, tmp_path):
    """The figures in docs/tubes.md, on two of the real photos and Medusa's talking video."""
    cuts = []
    for name in ("1_face.jpg", "4_face.jpg"):
        video = still_video(real_media(name), tmp_path / f"{name}.mp4", frames=40, noise=NOISE)
        m = jitter_and_drift(npz(process_video(bundle, video, tmp_path / f"{name}.npz", progress=False)))
        cuts.append(m["raw_jitter"] / m["smooth_jitter"])
    talk = jitter_and_drift(npz(process_video(bundle, real_media("example_vid.mp4"), tmp_path / "ex.npz",
                                              progress=False)))
    print(f"\njitter cut on still noisy faces {[round(c, 1) for c in cuts]}; talking drift {talk['drift']:.2f} px")
    assert min(cuts) >= 5 and talk["drift"] <= 2.0 and talk["frames"] == 232


def test_stream_holds_a_still_face_steady_causally(bundle, tmp_path):
    video = still_video(real_media("1_face.jpg"), tmp_path / "still.mp4", frames=40, noise=NOISE)
    raw, smooth = [], []
    with stream(bundle, video) as results:
        for r in results:
            slot = int(np.flatnonzero(r["valid"])[0])
            raw.append(r["crop_mat"][slot])
            smooth.append(r["smooth_crop_mat"][slot])
    step = [np.abs(np.diff(crop_params(np.array(m), SIZE)[5:, :2], axis=0)).mean() for m in (raw, smooth)]
    assert step[1] < step[0] / 3, step  # a causal filter holds a still face about 3-6x steadier


# --- quality ---------------------------------------------------------------------------------------------

def test_quality_columns_follow_the_pictures(bundle, tmp_path):
    """Mirrored, a face's yaw changes sign; turned 20 degrees, its roll changes by 20; blurred, it is less sharp."""
    with av.open(str(real_media("1_face.jpg"))) as container:
        photo = next(container.decode(video=0)).to_ndarray(format="rgb24")
    import cv2

    turn = cv2.getRotationMatrix2D((photo.shape[1] / 2, photo.shape[0] / 2), -20, 1.0)
    variants = np.stack([photo, photo[:, ::-1], cv2.warpAffine(photo, turn, photo.shape[1::-1]),
                         cv2.GaussianBlur(photo, (0, 0), 3)])
    r = npz(process_video(bundle, make_video(tmp_path / "v.mp4", variants), tmp_path / "v.npz", progress=False))
    best = r["conf"].argmax(1)
    pick = {k: r[k][np.arange(4), best] for k in ("yaw", "roll", "sharpness", "face_size")}
    assert np.sign(pick["yaw"][0]) == -np.sign(pick["yaw"][1]) and abs(pick["yaw"][0] + pick["yaw"][1]) < 5
    assert pick["roll"][2] - pick["roll"][0] == pytest.approx(20, abs=4)
    assert pick["sharpness"][3] < pick["sharpness"][0] / 2
    box = r["bbox"][0, best[0]]
    assert pick["face_size"][0] == pytest.approx(np.sqrt((box[2] - box[0]) * (box[3] - box[1])), rel=1e-4)
    assert np.isnan(r["yaw"][~r["valid"]]).all()


def test_head_pose_of_a_turned_mean_face():
    """Five points of the mean face turned by a known yaw, pitch and roll, seen orthographically."""
    face = np.array([[-0.5, 0, 0], [0.5, 0, 0], [0, 0.495 * 1.15, -0.5], [-0.41, 1.15, 0], [0.41, 1.15, 0]])
    for yaw, pitch in ((30, 0), (0, -20), (-20, 10)):
        a, b = np.radians(yaw), np.radians(pitch)
        turn = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
        tilt = np.array([[1, 0, 0], [0, np.cos(b), np.sin(b)], [0, -np.sin(b), np.cos(b)]])
        points = (face @ (tilt @ turn).T)[:, :2] * 40 + 100
        estimate = head_pose(points)
        assert estimate[0] == pytest.approx(yaw, abs=4) and estimate[1] == pytest.approx(pitch, abs=6), (yaw, pitch)


def test_cli_filters_are_recorded_with_the_results(bundle_path, people_clip, tmp_path, capfd):
    out = tmp_path / "f.npz"
    assert main(["run", str(bundle_path), str(people_clip), "-o", str(out), "--crops", "png", "--min-face", "70",
                 "--max-yaw", "40", "--min-sharpness", "5"]) == 0
    r = npz(out)
    recorded = json.loads(str(r["tube_options"][0]))
    assert recorded["min_face"] == 70 and recorded["max_yaw"] == 40 and recorded["min_sharpness"] == 5
    assert json.loads((out.with_suffix(".crops") / "meta.json").read_text())["tubes"] == recorded
    small = r["valid"] & (r["face_size"] < 70)
    assert small.any() and (r["tube_drop"][small] == DROP_REASONS.index("face too small")).all()
    assert (r["tube_idx"][small] == -1).all()


# --- the report ------------------------------------------------------------------------------------------

CHECK_IMAGES = """<script>addEventListener('load', () => { const bad = [...document.images].filter(
  i => !(i.complete && i.naturalWidth > 0)).length; document.body.setAttribute('data-images',
  document.images.length + ' ' + bad); });</script>"""


def _chromium(*args: str) -> str:
    """Chromium's stdout for ``args``, headless, with every host name unresolvable (no network)."""
    if shutil.which("chromium") is None:
        if IN_CI:
            pytest.fail("CI needs chromium for the report tests (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND",
               *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def test_report_shows_every_tube_in_a_real_browser(crops_run, tmp_path, capfd):
    page = tmp_path / "people.html"
    assert main(["report", str(crops_run), "-o", str(page)]) == 0
    text = page.read_text()
    assert "http://" not in text and "https://" not in text.replace("https://github.com/deepinsight", "")
    tubes = json.loads((crops_run.with_suffix(".crops") / "tubes.json").read_text())
    for tube in tubes:
        assert tube["id"] in text
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", CHECK_IMAGES + "</body>"))
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    assert f'data-images="{len(tubes)} 0"' in dom  # a contact sheet per tube, every one decoded
    shot = tmp_path / "shot.png"
    _chromium(f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri())
    with av.open(str(shot)) as container:
        pixels = next(container.decode(video=0)).to_ndarray(format="rgb24")
    sheet = pixels[400:700, 30:900]  # where the first tube's crops are drawn
    assert sheet.std() > 25 and (np.abs(np.diff(sheet.astype(int), axis=1)).mean() > 3)  # pictures, not a blank page


def test_dataset_report_lists_the_worst_videos_first(bundle_path, people_clip, tmp_path, capfd):
    data = tmp_path / "data"
    data.mkdir()
    (data / "people.mp4").symlink_to(people_clip)
    make_video(data / "dark.mp4", np.full((8, 240, 320, 3), 16, np.uint8))
    assert main(["run", str(bundle_path), str(data), "-o", str(tmp_path / "out"), "--report"]) == 0
    index = (tmp_path / "out" / "report" / "index.html").read_text()
    assert index.index("dark.mp4") < index.index("people.mp4")  # no face in a tube: the worst
    pages = sorted((tmp_path / "out" / "report").glob("*.html"))
    assert len(pages) == 3 and all("<img" in p.read_text() for p in pages if "people" in p.name)


# --- reading it back ---------------------------------------------------------------------------------

def test_webdataset_loader_reads_a_dataset_folder_without_mixing_videos(bundle_path, people_clip, tmp_path,
                                                                        monkeypatch, capsys):
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    (data / "a" / "one.mp4").write_bytes(people_clip.read_bytes())  # copies: two videos, not one linked twice
    (data / "two.mp4").write_bytes(people_clip.read_bytes())
    assert main(["run", str(bundle_path), str(data), "-o", str(tmp_path / "out"), "--crops", "webdataset"]) == 0
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    import webdataset_loader

    batches = list(webdataset_loader.loader(tmp_path / "out", batch_size=16))
    videos = {b["video"] for b in batches}
    assert videos == {str(data / "a" / "one.mp4"), str(data / "two.mp4")}
    for b in batches:
        assert all(t.startswith(Path(b["video"]).stem + "/") for t in b["tube"])  # one video a batch, ids kept
        assert b["crops"].shape[1:] == (3, SIZE, SIZE) and len(b["tube"]) == len(b["crops"]) <= 16
    per_video = sum(len(b["crops"]) for b in batches) // 2
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    (two,) = [row["output"] for row in rows if row["video"].endswith("two.mp4")]
    assert per_video == len(npz(two)["tube_frame_index"])
    assert webdataset_loader.main([str(tmp_path / "out"), "--batch-size", "16"]) == 0
    assert "one.mp4" in capsys.readouterr().out


# --- licence ---------------------------------------------------------------------------------------------

def test_bundles_carry_the_models_licence_and_inspect_says_it(bundle_path, capsys):
    manifest = json.loads((bundle_path / "manifest.json").read_text())
    assert "non-commercial research use only" in manifest["licence"]["terms"]
    assert main(["inspect", str(bundle_path)]) == 0
    assert "models' licence: non-commercial research use only" in capsys.readouterr().out


def test_doctests_of_the_writers():
    import doctest

    import facecrop.runtime.cut
    import facecrop.runtime.jsonl
    import facecrop.runtime.video_out
    import facecrop.runtime.warp

    for module in (facecrop.runtime.jsonl, facecrop.runtime.video_out, facecrop.runtime.warp, facecrop.runtime.cut):
        result = doctest.testmod(module, extraglobs={"np": np})
        assert result.attempted > 0 and result.failed == 0, module.__name__
