"""Nothing a user types destroys data, and every rerun finishes (the second round of faults).

Each case is what a user typed or made, on real media: a cut of Medusa's ``2.mp4`` (two people,
642x378) in ``../shared/media/medusa``. Every refusal is one line that names the path or option, comes
before any work, and leaves every file as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import warnings
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import real_media
from facecrop import dataset
from facecrop.cli import main
from facecrop.runtime import BundleError, StaleCropsRemoved, VideoError, load_bundle, process_video, stream
from facecrop.runtime.errors import StaleCheckpoint
from facecrop.runtime.lock import OutputLock
from test_faults import FACECROP, start_run, wait_for
from test_runtime import make_video, npz, same


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """The first 48 frames of Medusa's 2.mp4, RGB [48, 378, 642, 3]."""
    with av.open(str(real_media("2.mp4"))) as container:
        return np.stack([f.to_ndarray(format="rgb24") for _, f in zip(range(48), container.decode(video=0))])


@pytest.fixture(scope="module")
def clip(frames, tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("clip") / "two.mp4", frames[:24])


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes: what a refused run must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(capfd) -> str:
    said = [line for line in capfd.readouterr().err.splitlines() if line.startswith("facecrop: error:")]
    assert len(said) == 1, said
    return said[0]


# --- no output over an input ------------------------------------------------------------------------

@pytest.mark.parametrize("overlay, crops, message", [
    ("two.mp4", None, "--visualize two.mp4 would overwrite the video two.mp4"),
    ("r.npz", None, "--visualize r.npz is the same path as the results file r.npz"),
    ("r.crops/overlay.mp4", "png", "--visualize r.crops/overlay.mp4 lies inside the crops folder r.crops"),
    ("missing/overlay.mp4", None, r"cannot write missing/overlay.mp4 \(--visualize\): folder .*missing does not exist"),
], ids=["over-the-video", "over-the-results", "inside-the-crops", "missing-folder"])
def test_overlay_never_replaces_the_video_or_results(bundle_path, clip, tmp_path, capfd, monkeypatch, overlay, crops,
                                                    message):
    monkeypatch.chdir(tmp_path)
    video = Path("two.mp4")
    video.write_bytes(clip.read_bytes())
    Path("r.npz").write_bytes(b"earlier results")
    before = files(tmp_path)
    extra = ["--crops", crops] if crops else []
    assert main(["run", str(bundle_path), "two.mp4", "-o", "r.npz", "--visualize", overlay, *extra]) == 1
    assert re.search(message, error_line(capfd))
    assert files(tmp_path) == before  # refused before any work: not a byte changed


def test_results_never_replace_the_video(bundle, clip, tmp_path):
    video = tmp_path / "take.npz"  # a video with an unlucky name, and -o the same path written another way
    video.write_bytes(clip.read_bytes())
    with pytest.raises(VideoError, match="the results file .* would overwrite the video"):
        process_video(bundle, video, tmp_path / "." / "take.npz", progress=False)
    assert video.read_bytes() == clip.read_bytes()
    (tmp_path / "link.npz").symlink_to(video)
    with pytest.raises(VideoError, match="would overwrite the video"):
        process_video(bundle, video, tmp_path / "link.npz", progress=False)


# --- crops folders that match their results -----------------------------------------------------------

def test_crops_folder_always_matches_its_results(bundle, clip, tmp_path):
    out = tmp_path / "r.npz"
    process_video(bundle, clip, out, crops="png", progress=False)
    crops = out.with_suffix(".crops")
    made = files(crops)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the same tracker settings: the crops still match, kept silently
        process_video(bundle, clip, out, progress=False)
    assert not [w for w in caught if w.category is StaleCropsRemoved]
    assert files(crops) == made
    with pytest.warns(StaleCropsRemoved, match=f"removed {crops}: .*no longer match"):
        process_video(bundle, clip, out, dist_threshold=40.0, progress=False)
    assert not crops.exists()  # other ids: the stale crops are gone, not left to mislabel
    process_video(bundle, clip, out, crops="jpg", progress=False)
    process_video(bundle, clip, out, crops="png", dist_threshold=40.0, progress=False)  # replaced, not refused
    assert json.loads((crops / "meta.json").read_text())["dist_threshold"] == 40.0
    assert {p.split("/")[0] for p in files(crops)} - {"meta.json", "tubes.json"} == {
        f"face_{i:04d}" for i in np.unique(npz(out)["tube_face"])} != set()
    assert not list(crops.rglob("*.jpg"))


# --- checkpoints: --force discards, messages name the option ------------------------------------------

def test_checkpoint_of_another_video_needs_force_and_force_works(bundle, clip, frames, tmp_path):
    other = make_video(tmp_path / "other.mp4", frames[24:])
    out = tmp_path / "r.npz"

    def stop(n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        process_video(bundle, other, out, checkpoint_frames=8, on_frames=stop, progress=False)
    for resume in (False, True):
        with pytest.raises(StaleCheckpoint, match="another video, bundle or setting; pass --force to discard it"):
            process_video(bundle, clip, out, resume=resume, progress=False)
    want = npz(process_video(bundle, clip, tmp_path / "want.npz", progress=False))
    got = npz(process_video(bundle, clip, out, force=True, progress=False))
    assert all(same(got[k], want[k]) for k in want)
    assert not out.with_name("r.npz.partial").exists()


# --- containers that misstate their duration ----------------------------------------------------------

def test_mpegts_joined_with_cat_keeps_every_frame(bundle, frames, tmp_path):
    first = make_video(tmp_path / "a.ts", frames[:36], fmt="mpegts")
    second = make_video(tmp_path / "b.ts", frames[36:], fmt="mpegts")  # shorter: timestamps reset to 0 part way
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    with pytest.warns(UserWarning, match="timestamps go back at frame 36"):
        r = npz(process_video(bundle, joined, tmp_path / "j.npz", progress=False))
    assert np.array_equal(r["frame_index"], np.arange(48))
    assert r["pts_seconds"][36] < r["pts_seconds"][35]  # as the container gives them
    whole = npz(process_video(bundle, make_video(tmp_path / "whole.mkv", frames, codec="ffv1"), tmp_path / "w.npz",
                              progress=False))
    assert r["valid"].sum() == whole["valid"].sum()
    diff = np.abs(r["bbox"][r["valid"]] - whole["bbox"][whole["valid"]])  # the same faces, through H.264
    assert diff.mean() < 1.5 and diff.max() < 0.06 * (whole["bbox"][..., 2] - whole["bbox"][..., 0]).max()


# --- dataset folders ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(frames, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_video(root / "a.mp4", frames[:16])
    make_video(root / "b.mp4", frames[16:32])
    return root


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / dataset.MANIFEST).read_text().splitlines()]


def test_output_folder_inside_the_input_folder(bundle_path, data, capfd):
    out = data / "results"
    for _ in range(2):  # the second run must find the same two videos, not its own crop videos
        assert main(["run", str(bundle_path), str(data), "-o", str(out), "--crops", "mp4"]) == 0
    videos = {r["video"] for r in rows(out) if "video" in r}
    assert videos == {str(data / "a.mp4"), str(data / "b.mp4")}
    assert list(out.rglob("tube_*.mp4"))  # the tube videos are there, and were not taken as inputs
    assert "| 2 | 0 | 2 | 0 |" in capfd.readouterr().err  # the rerun: both skipped as done
    with pytest.raises(ValueError, match="was written by facecrop"):
        dataset.collect_videos([next(out.rglob("tube_*.mp4"))], out)


def test_force_then_plain_reruns_continue(bundle_path, data, tmp_path, capfd, monkeypatch):
    out = tmp_path / "out"
    assert main(["run", str(bundle_path), str(data), "-o", str(out)]) == 0
    # --force with other settings on one video of the folder, then the original command: refused, naming what differs
    assert main(["run", str(bundle_path), str(data / "a.mp4"), "-o", str(out), "--force", "--dist-threshold", "40"]) == 0
    capfd.readouterr()
    assert main(["run", str(bundle_path), str(data), "-o", str(out)]) == 1
    line = error_line(capfd)
    assert "1 of these videos" in line and "setting dist_threshold 40.0 there, 250.0 now" in line and "{" not in line
    # the whole folder with --force, interrupted after the first video (as Ctrl-C would)
    original = dataset.run_one

    def interrupted(bundle, job, *args, **kwargs):
        if job.video.name == "b.mp4":
            raise KeyboardInterrupt
        return original(bundle, job, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(dataset, "run_one", interrupted)
        assert main(["run", str(bundle_path), str(data), "-o", str(out), "--force", "--dist-threshold", "60"]) == 130
    said = [line for line in capfd.readouterr().err.splitlines() if line.startswith("facecrop:")]
    assert len(said) == 1 and "1 of 2 videos finished in this run" in said[0], said
    assert "without --force, to continue" in said[0]
    # the plain rerun (the advice) continues the --force run: a is done in its settings, b is redone
    assert main(["run", str(bundle_path), str(data), "-o", str(out), "--dist-threshold", "60"]) == 0
    assert "| 2 | 1 | 1 | 0 |" in capfd.readouterr().err
    latest = {r["video"]: r for r in rows(out) if "video" in r}
    assert {r["settings"]["dist_threshold"] for r in latest.values()} == {60.0}
    assert main(["run", str(bundle_path), str(data), "-o", str(out), "--dist-threshold", "60"]) == 0  # all done


def test_list_files_and_bad_manifests(bundle_path, data, tmp_path, capfd):
    odd = tmp_path / "take#2.mp4"
    odd.write_bytes((data / "a.mp4").read_bytes())
    listing = tmp_path / "list.txt"
    listing.write_text(f"# a comment line\n{odd.name}\n{data}\n")  # a name with '#', and a folder
    assert dataset.collect_videos([listing]) == sorted([odd, data / "a.mp4", data / "b.mp4"])
    (tmp_path / "empty.txt").write_text("# nothing here\n")
    assert main(["run", str(bundle_path), str(tmp_path / "empty.txt"), "-o", str(tmp_path / "o")]) == 1
    assert "names no videos" in error_line(capfd)
    out = tmp_path / "bad"
    out.mkdir()
    for text, wrong in [('{"video": "x"}\n{"video": 1}\n', "output, status"), ('[1, 2]\n', "video")]:
        (out / dataset.MANIFEST).write_text(text)
        assert main(["run", str(bundle_path), str(odd), "-o", str(out)]) == 1
        line = error_line(capfd)
        assert f"{out / dataset.MANIFEST} line 1 is not a facecrop manifest row ({wrong}" in line, line


def test_a_second_run_on_a_dataset_folder_is_refused_at_once(bundle_path, data, tmp_path, capfd):
    out = tmp_path / "busy"
    out.mkdir()
    with OutputLock(out / dataset.MANIFEST):  # as a dataset run in progress holds it
        assert main(["run", str(bundle_path), str(data / "a.mp4"), "-o", str(out)]) == 1
    assert f"another run is writing {out / dataset.MANIFEST} (pid {os.getpid()})" in error_line(capfd)
    assert sorted(p.name for p in out.iterdir()) == []


# --- options and sources that cannot work -------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["export", "--max-faces", "0"], "argument --max-faces: expected a positive integer, got '0'"),
    (["run", "B", "foo://cam/1", "-o", "x.jsonl"], "unknown URL scheme 'foo'"),
], ids=["max-faces-0", "unknown-scheme"])
def test_bad_options_are_refused_by_the_parser(capfd, argv, message):
    with pytest.raises(SystemExit) as code:
        main(argv)
    assert code.value.code == 2 and message in capfd.readouterr().err


def test_unknown_device_and_huge_batches(bundle_path, bundle, clip, tmp_path):
    with pytest.raises(BundleError, match="unknown device 'banana': facecrop runs on 'cpu', 'cuda' or 'cuda:N'"):
        load_bundle(bundle_path, device="banana")
    # A batch holds at most 24 MiB of frames: 34 of these 642x378 ones, so the clip's 24 frames make one batch.
    want = npz(process_video(bundle, clip, tmp_path / "24.npz", batch_size=24, progress=False))
    got = npz(process_video(bundle, clip, tmp_path / "huge.npz", batch_size=10**9, progress=False))
    assert all(same(got[k], want[k]) for k in want)


def test_bundle_folders_are_readable_by_others(bundle_path):
    assert bundle_path.stat().st_mode & 0o055 == 0o055 & ~current_umask()  # as the umask allows, not mkdtemp's 0700


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_app_frames_read_before_an_error_are_yielded(bundle, frames):
    def camera():
        yield from frames[:5]
        raise OSError("the camera was unplugged")

    got = []
    with pytest.raises(OSError, match="unplugged"):
        for result in stream(bundle, camera(), batch_size=4):
            got.append(result["frame_index"])
    assert got == [0, 1, 2, 3, 4]


def test_a_server_that_never_sends_is_one_clear_line(bundle):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    url = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    try:
        with pytest.raises(VideoError, match=f"cannot open {url}: nothing arrived within 1 s"):
            stream(bundle, url, timeout_s=1.0)
    finally:
        server.close()
    assert accepted  # it did connect


# --- Ctrl-C at the worst moments ----------------------------------------------------------------------

def test_ctrl_c_at_start_and_twice_says_one_line_and_resume_completes(bundle_path, bundle, clip, tmp_path):
    out = tmp_path / "r.npz"
    early = start_run(bundle_path, clip, out)
    time.sleep(0.3)  # the decoding process is importing PyAV now
    os.killpg(early.pid, signal.SIGINT)
    _, stderr = early.communicate(timeout=60)
    assert early.returncode == 130 and "Traceback" not in stderr, stderr
    assert not out.with_name("r.npz.partial").exists()
    twice = start_run(bundle_path, clip, out, "--batch-size", "2")
    wait_for(out.with_name("r.npz.partial") / "meta.json", twice)
    time.sleep(0.1)  # some batches in
    os.killpg(twice.pid, signal.SIGINT)
    time.sleep(0.01)
    os.killpg(twice.pid, signal.SIGINT)  # while the first one's saving runs
    _, stderr = twice.communicate(timeout=60)
    assert twice.returncode == 130 and "Traceback" not in stderr, stderr
    assert not list(out.with_name("r.npz.partial").glob("*.tmp"))
    resumed = start_run(bundle_path, clip, out, "--resume")
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read()
    want = npz(process_video(bundle, clip, tmp_path / "want.npz", progress=False))
    got = npz(out)
    assert all(same(got[k], want[k]) for k in want)


def test_full_disk_while_writing_tubes_leaves_no_half_crops_and_resume_finishes(bundle_path, frames, tmp_path):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("needs a private mount namespace (unshare -m, as root) for a small tmpfs")
    video = make_video(tmp_path / "two.mp4", np.concatenate([frames] * 9))  # 432 frames, two faces each
    disk = tmp_path / "disk"
    disk.mkdir()
    # 11 MB: every frame's results fit; the tubes' PNG files (about 31 KB a frame, written once the results
    # are complete) do not. Then the disk grows (a remount) and the same command with --resume finishes.
    script = f"""
        mount -t tmpfs -o size=11m tmpfs {disk}
        {FACECROP} run {bundle_path} {video} -o {disk}/out.npz --crops png 2> {tmp_path}/err
        echo $? > {tmp_path}/rc
        find {disk} -name '*.png' > {tmp_path}/listing
        mount -o remount,size=64m {disk}
        {FACECROP} run {bundle_path} {video} -o {disk}/out.npz --crops png --resume 2> {tmp_path}/err2
        echo $? > {tmp_path}/rc2
        find {disk}/out.crops -name '*.png' | wc -l > {tmp_path}/count
    """
    subprocess.run(["unshare", "-m", "bash", "-c", script], check=True, timeout=600)
    err = (tmp_path / "err").read_text()
    assert (tmp_path / "rc").read_text().strip() == "1" and "No space left on device" in err, err
    assert "results for frames 0-431 are kept" in err and "--resume" in err, err
    assert not (tmp_path / "listing").read_text().split()  # no half-written crops left taking the space
    assert (tmp_path / "rc2").read_text().strip() == "0", (tmp_path / "err2").read_text()
    assert int((tmp_path / "count").read_text()) > 400  # two faces a frame, in tubes


def test_ctrl_c_in_a_dataset_run_keeps_every_frame_and_says_so(bundle_path, bundle, frames, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    video = make_video(folder / "long.mp4", np.concatenate([frames] * 5))  # 240 frames: no chunk before 256
    out = tmp_path / "out"
    proc = subprocess.Popen([str(FACECROP), "run", str(bundle_path), str(folder), "-o", str(out)],
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    partial = dataset.output_path(out, video).with_name("long.mp4.npz.partial")
    wait_for(partial / "meta.json", proc)
    time.sleep(0.5)  # some batches in
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    said = [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("facecrop:")]
    assert proc.returncode == 130 and len(said) == 1 and "Traceback" not in stderr, stderr
    assert "0 of 1 videos finished in this run" in said[0] and "run the same command again" in said[0], said
    kept = int(re.search(r"results for frames 0-(\d+) are kept", said[0]).group(1)) + 1
    meta = json.loads((partial / "meta.json").read_text())
    assert sum(c["frames"] for c in meta["chunks"]) == kept > 0  # every frame computed, not whole chunks only
    again = subprocess.run([str(FACECROP), "run", str(bundle_path), str(folder), "-o", str(out)],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    want = npz(process_video(bundle, video, tmp_path / "want.npz", progress=False))
    got = npz(dataset.output_path(out, video))
    assert all(same(got[k], want[k]) for k in want)
