"""Faces over time: face ids from the runtime's online tracker, every face kept or reported, crops on disk.

Real video: a 4 s cut of Medusa's ``3.mp4`` (0 to 3 people, entering and leaving) in
``../shared/media/medusa``; the bundle is the real det_500m pipeline with aligned crops.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import real_media, real_model
from facecrop.cli import main
from facecrop.runtime import OnlineTracker, VideoError, process_video, summarize_results
from facecrop.runtime.tubes import DROP_REASONS
from facecrop.tracking import sort_faces
from test_runtime import make_video, npz, same

def detections(results: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The results' faces as Medusa's flat detections: landmarks [N, 5, 2] and frame index [N]."""
    frame, _ = np.nonzero(results["valid"])
    return torch.from_numpy(results["lms"][results["valid"]]), torch.from_numpy(frame)


# --- ids ------------------------------------------------------------------------------------------

def test_face_idx_are_sort_faces_ids_on_the_same_detections(crops_run):
    r = npz(crops_run)
    assert r["face_idx"].dtype == np.int64 and r["face_idx"].shape == r["valid"].shape
    assert (r["face_idx"][~r["valid"]] == -1).all() and (r["face_idx"][r["valid"]] >= 0).all()
    lms, frame = detections(r)
    # The whole video at once, as BatchResults.sort_faces does, rows shuffled across frames. Each
    # frame's detections keep the detector's order: it decides which of two new faces is numbered first.
    order = torch.randperm(len(frame), generator=torch.Generator().manual_seed(0))
    for f in frame.unique():
        slots = frame[order] == f
        order[slots] = order[slots].sort().values
    ids = torch.empty_like(frame)
    ids[order] = sort_faces(lms[order], frame[order])
    assert (ids.numpy() == r["face_idx"][r["valid"]]).all()
    tracks = r["track_frames"]
    assert len(tracks) >= 2 and tracks.sum() == r["valid"].sum()  # several people, each face once
    assert (r["track_kept"] == (tracks >= 0.1 * len(r["valid"]))).all()
    summary = summarize_results(crops_run)
    assert summary["tracks"] == len(tracks) and summary["longest_track"] == tracks.max()
    assert summary["frames"] == len(r["valid"]) == 96
    assert summary["frames_no_face"] + (r["valid"].sum(1) == 1).sum() + summary["frames_several_faces"] == 96
    assert summary["overflow_frames"] == 0 and not r["overflow"].any()


def test_dist_threshold_changes_ids(bundle, people_clip, tmp_path, crops_run):
    strict = npz(process_video(bundle, people_clip, tmp_path / "s.npz", dist_threshold=1.0, progress=False))
    # 1 px over all landmark coordinates: every moving face is new in every frame.
    assert strict["face_idx"].max() > npz(crops_run)["face_idx"].max() + 10
    lms, frame = detections(strict)
    assert (sort_faces(lms, frame, dist_threshold=1.0).numpy() == strict["face_idx"][strict["valid"]]).all()


def test_tracker_state_round_trip_continues_the_same_ids():
    rng = np.random.default_rng(0)
    frames = [rng.uniform(0, 400, (rng.integers(0, 4), 5, 2)).astype(np.float32) for _ in range(30)]
    whole = OnlineTracker(60.0)
    ids = [whole.update(f).tolist() for f in frames]
    first = OnlineTracker(60.0)
    for f in frames[:11]:
        first.update(f)
    resumed = OnlineTracker.from_state(first.state())
    assert [resumed.update(f).tolist() for f in frames[11:]] == ids[11:]
    with pytest.raises(ValueError, match="dist_threshold"):
        OnlineTracker(0)


# --- crops on disk ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["png", "webdataset"])
def test_killed_and_resumed_run_writes_the_same_files(bundle, people_clip, tmp_path, fmt):
    whole = process_video(bundle, people_clip, tmp_path / "whole.npz", crops=fmt, checkpoint_frames=24, progress=False)

    def stop_after_40(n, seen=[0]):  # noqa: B006 - a counter across calls
        seen[0] += n
        if seen[0] >= 40:
            raise KeyboardInterrupt

    cut = tmp_path / "cut.npz"
    with pytest.raises(KeyboardInterrupt):
        process_video(bundle, people_clip, cut, crops=fmt, checkpoint_frames=24, on_frames=stop_after_40, progress=False)
    assert not cut.exists() and not cut.with_suffix(".crops").exists()
    process_video(bundle, people_clip, cut, crops=fmt, checkpoint_frames=24, resume=True, progress=False)
    a, b = npz(whole), npz(cut)
    assert a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)

    def tree(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
                and p.name != "meta.json"}

    assert tree(whole.with_suffix(".crops")) == tree(cut.with_suffix(".crops"))


def test_crops_of_another_setting_refused_unless_forced(bundle, people_clip, crops_run, tmp_path):
    out = tmp_path / "people.npz"
    out.with_suffix(".crops").mkdir()
    (out.with_suffix(".crops") / "mine.txt").write_text("not facecrop's")
    with pytest.raises(VideoError, match="--force"):
        process_video(bundle, people_clip, out, crops="png", progress=False)
    assert (out.with_suffix(".crops") / "mine.txt").exists()
    process_video(bundle, people_clip, out, crops="png", force=True, progress=False)
    assert not (out.with_suffix(".crops") / "mine.txt").exists()
    process_video(bundle, people_clip, out, crops="png", progress=False)  # its own crops: replaced silently


def test_video_without_faces_writes_no_face_folders(bundle, tmp_path):
    video = make_video(tmp_path / "dark.mp4", np.full((10, 240, 320, 3), 16, np.uint8))
    out = process_video(bundle, video, tmp_path / "empty.npz", crops="png", progress=False)
    assert sorted(p.name for p in out.with_suffix(".crops").iterdir()) == ["meta.json", "tubes.json"]
    summary = summarize_results(out)
    assert summary["tracks"] == 0 and summary["frames_no_face"] == summary["frames"] == 10
    assert npz(out)["track_frames"].shape == (0,)


def test_rare_false_detections_are_marked_not_removed(bundle, tmp_path):
    """Medusa's 0.mp4 (no person): at det size 224 and threshold 0.3 a few frames score 0.30-0.32,
    as with InsightFace; those short tracks keep their rows, marked ``track_kept`` False, and make no
    tube: no crop of a plant or a rock becomes training data."""
    out = process_video(bundle, real_media("0.mp4"), tmp_path / "nobody.npz", crops="png", progress=False)
    r = npz(out)
    assert 0 < r["valid"].sum() < 10 and (r["conf"][r["valid"]] < 0.4).all()
    assert not r["track_kept"].any() and r["track_frames"].sum() == r["valid"].sum()
    assert not list(out.with_suffix(".crops").glob("face_*")) and len(r["tube_face"]) == 0
    assert (r["tube_drop"][r["valid"]] == DROP_REASONS.index("track not kept")).all()
    assert summarize_results(out)["tracks_kept"] == 0


def test_cli_prints_the_summary_and_writes_crops(bundle_path, people_clip, tmp_path, capfd):
    out = tmp_path / "cli.npz"
    assert main(["run", str(bundle_path), str(people_clip), "-o", str(out), "--crops", "png",
                 "--dist-threshold", "300", "--present-threshold", "0.2"]) == 0
    err = capfd.readouterr().err
    assert "96 frames" in err and "tracks" in err and "warning" not in err
    r = npz(out)
    assert (r["track_kept"] == (r["track_frames"] >= 0.2 * 96)).all()
    written = {f"face_{f:04d}" for f in r["tube_face"]}
    assert {p.name for p in out.with_suffix(".crops").glob("face_*")} == written and written


# --- every face ---------------------------------------------------------------------------------

def test_crowd_frame_keeps_every_insightface_face(t1_rgb):
    """t1.jpg tiled 2x2 (24 faces): the default K = 32 keeps every face InsightFace finds, within 1 px,
    eager and exported (the exported NMS picks in rounds of 8 that run while boxes are left)."""
    import onnxruntime as ort
    from insightface.model_zoo.scrfd import SCRFD

    from facecrop.pipeline import build_pipeline
    from facecrop.pipeline_config import PipelineConfig
    from facecrop.runtime.bundle import MAX_SIDE, MIN_SIDE

    model = real_model("det_500m")
    crowd = np.concatenate([np.concatenate([t1_rgb, t1_rgb], 1)] * 2, 0)  # [1772, 2560, 3]
    reference = SCRFD(str(model), session=ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]))
    reference.prepare(-1, input_size=(640, 640), det_thresh=0.3, nms_thresh=0.3)
    boxes, _ = reference.detect(crowd[..., ::-1].copy(), input_size=(640, 640))
    assert len(boxes) >= 20
    config = PipelineConfig(detector=str(model), crop="align", det_size=(640, 640))
    assert config.max_faces == 32
    module = build_pipeline(config)
    frames = torch.from_numpy(np.stack([crowd, crowd[:, ::-1]])).permute(0, 3, 1, 2)  # and its mirror image
    frames = frames.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = module.forward_dict(frames[:1])
    assert not out["overflow"].any() and int(out["valid"].sum()) == len(boxes)
    ours = out["bbox"][out["valid"]].numpy()
    nearest = np.abs(ours[None] - boxes[:, None, :4]).max(-1).min(1)  # each InsightFace box to our closest
    assert nearest.max() <= 1.0, nearest

    dims = {0: torch.export.Dim("batch", min=1, max=64), 2: torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE),
            3: torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE)}
    small = frames[:, :, :886, :1280].contiguous(memory_format=torch.channels_last)  # t1 and its mirror: 6 + 6
    torch._dynamo.reset()
    exported = torch.export.export(module, (small,), dynamic_shapes=(dims,), strict=False).module()
    with torch.inference_mode():
        for batch in (frames, small):
            want, got = module(batch), exported(batch)
            for name, a, b in zip(module.output_names, want, got):
                assert torch.equal(a, b), name
    assert int(want[0].sum()) == 12 and int(got[0].sum()) == 12


def test_crowd_video_keeps_every_insightface_face(t1_rgb, tmp_path):
    """A video of real-photo crowds (t1.jpg tiled 2x2, 24 faces, moving): in every frame each face
    InsightFace's SCRFD.detect finds (det size 640, thresholds 0.3) is in the results within 1 px."""
    import onnxruntime as ort
    from insightface.model_zoo.scrfd import SCRFD

    from facecrop import bundle as fb
    from facecrop.pipeline import build_pipeline
    from facecrop.pipeline_config import PipelineConfig
    from test_runtime import decode_all

    model = real_model("det_500m")
    crowd = np.concatenate([np.concatenate([t1_rgb, t1_rgb], 1)] * 2, 0)  # [1772, 2560, 3]
    frames = np.stack([np.ascontiguousarray(crowd[12 * i:12 * i + 1440, 20 * i:20 * i + 2400]) for i in range(4)])
    video = make_video(tmp_path / "crowd.mp4", frames)
    config = PipelineConfig(detector=str(model), crop="align", det_size=(640, 640))
    path = fb.write_bundle(build_pipeline(config), config, backend="export", out_root=tmp_path / "b",
                           source_models={"detector": model})
    from facecrop.runtime import load_bundle

    r = npz(process_video(load_bundle(path), video, tmp_path / "crowd.npz", progress=False))
    reference = SCRFD(str(model), session=ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]))
    reference.prepare(-1, input_size=(640, 640), det_thresh=0.3, nms_thresh=0.3)
    decoded, _ = decode_all(video)
    for i, frame in enumerate(decoded.permute(0, 2, 3, 1).numpy()):
        boxes, _ = reference.detect(np.ascontiguousarray(frame[..., ::-1]), input_size=(640, 640))
        ours = r["bbox"][i][r["valid"][i]]
        assert len(boxes) >= 16 and len(ours) == len(boxes) and not r["overflow"][i], (i, len(boxes), len(ours))
        assert np.abs(ours[None] - boxes[:, None, :4]).max(-1).min(1).max() <= 1.0, i
    assert (r["track_frames"] == len(frames)).sum() >= 16  # the people in view throughout keep one id each


def test_overflow_is_reported_in_results_manifest_and_cli(t1_rgb, tmp_path, capfd):
    from facecrop import bundle as fb
    from facecrop.pipeline import build_pipeline
    from facecrop.pipeline_config import PipelineConfig

    model = real_model("det_500m")
    config = PipelineConfig(detector=str(model), crop="none", max_faces=4)
    path = fb.write_bundle(build_pipeline(config), config, backend="export", out_root=tmp_path / "b",
                           source_models={"detector": model})
    frames = np.stack([t1_rgb] * 3 + [np.zeros_like(t1_rgb)])  # six faces (found at det size 224), then none
    video = make_video(tmp_path / "t1.mp4", frames)
    out = tmp_path / "t1.npz"
    assert main(["run", str(path), str(video), "-o", str(out)]) == 0
    err = capfd.readouterr().err
    assert "warning: 3 frames found more than 4 faces" in err and "--max-faces" in err
    r = npz(out)
    assert r["overflow"].tolist() == [True, True, True, False] and r["valid"].sum(1).tolist() == [4, 4, 4, 0]
    assert main(["run", str(path), str(video), "-o", str(tmp_path / "ds")]) == 0
    row = json.loads((tmp_path / "ds" / "manifest.jsonl").read_text().splitlines()[-1])
    assert row["summary"]["overflow_frames"] == 3
    assert "more faces than the bundle keeps" in capfd.readouterr().err


def test_dataset_run_gives_the_ids_and_crops_of_a_single_run(bundle_path, people_clip, crops_run, tmp_path):
    assert main(["run", str(bundle_path), str(people_clip), "-o", str(tmp_path / "ds"), "--crops", "png",
                 "--save-crops"]) == 0
    row = json.loads((tmp_path / "ds" / "manifest.jsonl").read_text().splitlines()[-1])
    output = Path(row["output"])
    single, ours = npz(crops_run), npz(output)
    assert all(same(single[k], ours[k]) for k in single)
    assert row["settings"]["crops"] == "png" and row["summary"]["tracks"] == len(single["track_frames"])
    names = sorted(str(p.relative_to(output.with_suffix(".crops"))) for p in output.with_suffix(".crops").rglob("*.png"))
    assert names == sorted(str(p.relative_to(crops_run.with_suffix(".crops")))
                           for p in crops_run.with_suffix(".crops").rglob("*.png"))


def test_shards_are_plain_tar_files(bundle, people_clip, tmp_path):
    out = process_video(bundle, people_clip, tmp_path / "t.npz", crops="webdataset", progress=False)
    (shard,) = out.with_suffix(".crops").glob("shard-*.tar")
    with tarfile.open(shard) as archive:
        members = archive.getmembers()
    assert members and all(m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in members)
    assert len({m.name.split(".")[0] for m in members}) * 2 == len(members)  # an image and a JSON per key


def test_doctests_of_the_tracking_modules():
    import doctest

    import facecrop.runtime.face_quality
    import facecrop.runtime.quality
    import facecrop.runtime.track
    import facecrop.runtime.tubes
    import facecrop.tracking

    for module in (facecrop.runtime.track, facecrop.runtime.quality, facecrop.tracking, facecrop.runtime.tubes,
                   facecrop.runtime.face_quality):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_results_file_loads_as_medusa_batch_results(crops_run):
    from facecrop.containers import BatchResults

    r = npz(crops_run)
    results = BatchResults.from_npz(crops_run)
    assert results.n_img == 96 and len(results.img_idx) == r["valid"].sum()
    assert np.array_equal(results.face_idx.numpy(), r["face_idx"][r["valid"]])
    assert np.array_equal(results.bbox.numpy(), r["bbox"][r["valid"]])
