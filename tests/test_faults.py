"""Faults real users hit: one clear line, a non-zero exit, nothing lost, nothing left that blocks the next run.

Runs are real: the ``facecrop`` executable in its own process group for Ctrl-C and SIGTERM, two
processes on one output, bytes damaged on disk, a disk filled for real (a small tmpfs in a private
mount namespace). The video is real: Medusa's ``2.mp4`` (two people, 642x378).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import as_in_a_terminal, real_media
from facecrop.runtime import CheckpointDamaged, RunInterrupted, VideoError, process_video
from test_runtime import make_video, npz

FACECROP = Path(sys.executable).parent / "facecrop"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """The first 240 frames of Medusa's 2.mp4, re-encoded."""
    with av.open(str(real_media("2.mp4"))) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(240), container.decode(video=0))]
    return make_video(tmp_path_factory.mktemp("clip") / "two_people.mp4", np.stack(frames))


@pytest.fixture(scope="module")
def full(bundle, clip, tmp_path_factory):
    """The uninterrupted run's results."""
    return npz(process_video(bundle, clip, tmp_path_factory.mktemp("full") / "full.npz", progress=False))


def assert_same_results(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def start_run(bundle_path, video, output, *extra) -> subprocess.Popen:
    """``facecrop run`` as a user starts it: its own process group (a terminal's), stderr captured."""
    return subprocess.Popen([str(FACECROP), "run", str(bundle_path), str(video), "-o", str(output), *extra],
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=as_in_a_terminal)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


# --- nothing left that blocks the next run ---------------------------------------------------------

@pytest.mark.parametrize("size", [(8, 8), (5000, 100)], ids=["8x8", "5000x100"])
def test_failing_at_the_first_frame_leaves_nothing(bundle, clip, full, tmp_path, size):
    width, height = size
    bad = make_video(tmp_path / "bad.mkv", np.full((3, height, width, 3), 128, np.uint8), codec="ffv1",
                     pix_fmt="yuv444p")
    out = tmp_path / "out.npz"
    with pytest.raises(VideoError, match=f"frame 0 is {width}x{height}, outside") as err:
        process_video(bundle, bad, out, progress=False)
    assert "kept" not in str(err.value)
    assert leftovers(tmp_path) == ["bad.mkv"]
    assert_same_results(npz(process_video(bundle, clip, out, progress=False)), full)  # not blocked


def test_a_second_run_on_one_output_is_refused_and_a_dead_runs_lock_taken_over(bundle_path, bundle, clip, full,
                                                                              tmp_path):
    out = tmp_path / "out.npz"
    first = start_run(bundle_path, clip, out)
    wait_for(out.with_name("out.npz.partial"), first)
    with pytest.raises(VideoError, match=rf"another run is writing {out} \(pid {first.pid}\)"):
        process_video(bundle, clip, out, progress=False, resume=True)  # as the first's advice would have it
    first.kill()  # SIGKILL: no chance to clean up; the lock file stays, held by no one
    first.communicate()
    assert (tmp_path / "out.npz.lock").read_text().strip() == str(first.pid)
    assert_same_results(npz(process_video(bundle, clip, out, progress=False, resume=True)), full)
    assert leftovers(tmp_path) == ["out.npz"]


# --- Ctrl-C and SIGTERM -----------------------------------------------------------------------------

@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_interrupt_says_one_line_and_resume_completes(bundle_path, clip, full, tmp_path, signum, code):
    out = tmp_path / "out.npz"
    proc = start_run(bundle_path, clip, out)
    said_so_far = []  # stderr as it comes: the progress bar says how many frames are done
    reader = threading.Thread(target=lambda: said_so_far.extend(iter(lambda: proc.stderr.read(1), "")))
    reader.start()
    deadline = time.time() + 300
    while not re.search(r"\] (1[6-9]|[2-9]\d|\d{3})/240 frames", "".join(said_so_far)):  # 16 frames or more in
        assert proc.poll() is None and time.time() < deadline, "".join(said_so_far)
        time.sleep(0.05)
    os.killpg(proc.pid, signum)  # as a terminal's Ctrl-C does: the whole group, decoding process included
    proc.wait(timeout=60)
    reader.join(timeout=60)
    stderr = "".join(said_so_far)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr, stderr
    said = [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("facecrop:")]
    assert len(said) == 1, stderr
    frames = int(said[0].split("results for frames 0-")[1].split(" ")[0]) + 1
    assert 0 < frames < 240 and "run the same command with --resume to continue" in said[0], said
    assert ("stopped by SIGTERM" if signum == signal.SIGTERM else "interrupted") in said[0]
    meta = json.loads((out.with_name("out.npz.partial") / "meta.json").read_text())
    assert sum(c["frames"] for c in meta["chunks"]) == frames  # what it says is what it kept
    resumed = subprocess.run([str(FACECROP), "run", str(bundle_path), str(clip), "-o", str(out), "--resume"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_results(npz(out), full)
    assert leftovers(tmp_path) == ["out.npz"]


# --- damaged checkpoints ----------------------------------------------------------------------------

def interrupted_run(bundle, clip, out, after_frames: int) -> None:
    """A run stopped (as by Ctrl-C) once ``after_frames`` frames are done, checkpointed every 32 frames."""
    seen = []

    def count(n):
        seen.append(n)
        if sum(seen) >= after_frames:
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted, match="kept in"):
        process_video(bundle, clip, out, progress=False, checkpoint_frames=32, on_frames=count)


def test_a_damaged_chunk_is_computed_again(bundle, clip, full, tmp_path):
    out = tmp_path / "out.npz"
    interrupted_run(bundle, clip, out, after_frames=120)
    partial = out.with_name("out.npz.partial")
    chunk = partial / "chunk_000001.npz"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = b"\xff" * 64
    chunk.write_bytes(bytes(data))
    with pytest.warns(CheckpointDamaged, match="chunk_000001.npz is damaged: frames 32 on are computed again"):
        got = npz(process_video(bundle, clip, out, progress=False, resume=True, checkpoint_frames=32))
    assert_same_results(got, full)


def test_a_damaged_checkpoint_list_starts_again(bundle, clip, full, tmp_path):
    out = tmp_path / "out.npz"
    interrupted_run(bundle, clip, out, after_frames=64)
    (out.with_name("out.npz.partial") / "meta.json").write_text('{"identity": {"vid')
    with pytest.warns(CheckpointDamaged, match="starts again from frame 0"):
        got = npz(process_video(bundle, clip, out, progress=False, resume=True))
    assert_same_results(got, full)


# --- a full disk ------------------------------------------------------------------------------------

def test_full_disk_says_what_it_needs_and_resume_completes(bundle_path, tmp_path):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("needs a private mount namespace (unshare -m, as root) for a small tmpfs")
    video = real_media("2.mp4")  # 668 frames: two chunks of 256 and the rest
    disk = tmp_path / "disk"
    disk.mkdir()
    # 25 MB: the first chunk (256 frames, crops kept: about 20 MB) fits, the second does not.
    script = f"""
        set -u
        mount -t tmpfs -o size=25m tmpfs {disk}
        {FACECROP} run {bundle_path} {video} -o {disk}/out.npz --save-crops 2> {tmp_path}/first.err
        echo $? > {tmp_path}/first.rc
        ls -A {disk} {disk}/out.npz.partial > {tmp_path}/listing
        mount -o remount,size=200m {disk}
        {FACECROP} run {bundle_path} {video} -o {disk}/out.npz --save-crops --resume 2> {tmp_path}/second.err
        echo $? > {tmp_path}/second.rc
        cp {disk}/out.npz {tmp_path}/resumed.npz
        ls -A {disk} > {tmp_path}/after
    """
    subprocess.run(["unshare", "-m", "bash", "-c", script], check=True, timeout=600)
    first = (tmp_path / "first.err").read_text()
    assert (tmp_path / "first.rc").read_text().strip() == "1", first
    assert "Traceback" not in first, first
    said = [line for line in first.replace("\r", "\n").splitlines() if line.startswith("facecrop:")]
    assert len(said) == 1 and "No space left on device" in said[0], first
    assert f"in {disk}" in said[0] and "MB more are needed there" in said[0], said
    assert "results for frames 0-255 are kept" in said[0] and "--resume" in said[0], said
    assert ".tmp" not in (tmp_path / "listing").read_text()  # no half-written file left filling the disk
    assert (tmp_path / "second.rc").read_text().strip() == "0", (tmp_path / "second.err").read_text()
    assert (tmp_path / "after").read_text().split() == ["out.npz"]
    from facecrop.runtime import load_bundle

    full = npz(process_video(load_bundle(bundle_path), video, tmp_path / "full.npz", save_crops=True, progress=False))
    assert_same_results(npz(tmp_path / "resumed.npz"), full)


# --- a wrong bundle ---------------------------------------------------------------------------------

@pytest.mark.parametrize("declared", ["aoti", "torchscript"])
def test_an_artifact_of_another_backend_is_named_as_such(bundle_path, tmp_path, declared):
    from facecrop.runtime import BundleError, load_bundle

    folder = shutil.copytree(bundle_path, tmp_path / "bundle")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["backend"] = declared  # a torch.export .pt2 declared as another backend's
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=f"written by the 'export' backend, but the manifest declares '{declared}'") \
            as err:
        load_bundle(folder)
    assert "\n" not in str(err.value)
