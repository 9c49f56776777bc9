"""A dataset of videos: ``facecrop run BUNDLE INPUT... -o OUT_DIR`` on this machine and through Ray Data.

Real-photo videos of several sizes (one of them truncated, one empty) are run as a folder and a
``.txt`` list; every good video's arrays must equal a one-video ``process_video`` of it, every
failure must be in the manifest with its reason, and a run killed with SIGKILL (the driver, or a
Ray actor) must end, after a rerun, with each video present exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facecrop import dataset
from facecrop.cli import main
from facecrop.runtime import process_video
from test_runtime import make_video, npz, same


def manifest_rows(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / dataset.MANIFEST).read_text().splitlines()]


@pytest.fixture(scope="module")
def videos(tmp_path_factory, photo_frames):
    """A folder of real-photo videos at three sizes in nested folders, one truncated and one empty,
    plus a list file naming one more video outside the folder."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "study"
    (folder / "day1").mkdir(parents=True)
    (folder / "day2").mkdir()
    good = [make_video(folder / "day1" / "talk.mp4", photo_frames),
            make_video(folder / "day2" / "talk.mp4", np.stack([cv2.resize(f, (360, 288)) for f in photo_frames])),
            make_video(folder / "day2" / "square.mkv", np.stack([f[:, 100:460] for f in photo_frames]), codec="ffv1")]
    data = good[2].read_bytes()
    (folder / "day2" / "cut.mkv").write_bytes(data[: len(data) // 2])
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.txt").write_text("not a video, and not listed as an input\n")
    (root / "extra").mkdir()
    outside = make_video(root / "extra" / "portrait.mp4", np.stack([f[:, 200:488] for f in photo_frames[:8]]))
    listing = root / "list.txt"
    listing.write_text("# one video listed by a relative path\nextra/portrait.mp4\n")
    return {"folder": folder, "list": listing, "good": good + [outside],
            "bad": [folder / "day2" / "cut.mkv", folder / "empty.mp4"]}


@pytest.fixture(scope="module")
def singles(bundle, videos, tmp_path_factory):
    """Each good video run on its own with process_video: what the dataset run must reproduce."""
    out = tmp_path_factory.mktemp("singles")
    return {v: npz(process_video(bundle, v, out / f"{i}.npz", progress=False)) for i, v in enumerate(videos["good"])}


@pytest.fixture(scope="module")
def local_run(bundle_path, videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "results"
    code = main(["run", str(bundle_path), str(videos["folder"]), str(videos["list"]), "-o", str(out)])
    return out, code


def test_collect_videos(videos, tmp_path):
    found = dataset.collect_videos([videos["folder"], videos["list"], videos["good"][0]])
    assert found == sorted(v.resolve() for v in videos["good"] + videos["bad"])  # each once, notes.txt left out
    with pytest.raises(ValueError, match="does not exist"):
        dataset.collect_videos([tmp_path / "nowhere"])
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="holds no videos"):
        dataset.collect_videos([tmp_path / "docs"])
    (tmp_path / "bad.txt").write_text("missing.mp4\n")
    with pytest.raises(ValueError, match="do not exist: .*missing.mp4"):
        dataset.collect_videos([tmp_path / "bad.txt"])


def test_output_names_never_collide(videos, tmp_path):
    names = {dataset.output_path(tmp_path, v) for v in videos["good"] + videos["bad"]}
    assert len(names) == len(videos["good"]) + len(videos["bad"])  # day1/talk.mp4 and day2/talk.mp4 differ
    assert all(str(n).startswith(str(tmp_path.resolve())) and n.name.endswith(".npz") for n in names)


def test_folder_run_matches_single_runs(local_run, videos, singles):
    out, code = local_run
    assert code == 1  # two videos failed: the exit code says so, after the others were done
    rows = manifest_rows(out)
    assert len(rows) == len(videos["good"]) + len(videos["bad"])
    by_video = {Path(r["video"]): r for r in rows}
    for video, want in singles.items():
        row = by_video[video.resolve()]
        assert row["status"] == "done" and row["error"] is None
        assert row["frames"] == len(want["frame_index"]) and row["faces"] == int(want["valid"].sum())
        assert row["bundle_sha256"] and row["fps"] > 0 and row["settings"] == dataset.run_settings(None)
        assert row["summary"]["tracks"] == len(want["track_frames"]) and row["summary"]["frames"] == row["frames"]
        got = npz(row["output"])
        assert sorted(got) == sorted(want)
        for key in want:
            assert same(got[key], want[key]), (video, key)
    cut, empty = (by_video[v.resolve()] for v in videos["bad"])
    assert cut["status"] == "failed" and "decoding stopped at frame" in cut["error"]
    assert empty["status"] == "failed" and "cannot open" in empty["error"]
    assert not Path(empty["output"]).exists()
    assert Path(cut["output"] + ".partial").is_dir()  # the frames before the damage are kept


def test_rerun_skips_done_and_retries_failed(local_run, bundle_path, videos, capfd):
    out, _ = local_run
    before = manifest_rows(out)
    code = main(["run", str(bundle_path), str(videos["folder"]), str(videos["list"]), "-o", str(out)])
    assert code == 1
    new = manifest_rows(out)[len(before):]
    assert sorted(r["video"] for r in new) == sorted(str(v.resolve()) for v in videos["bad"])  # only the failed
    assert all(r["status"] == "failed" for r in new)
    err = capfd.readouterr().err
    assert "| 6 | 0 | 4 | 2 |" in err  # the summary table: 6 videos, 0 done now, 4 skipped, 2 failed
    assert "failed: " in err and "cut.mkv" in err


def test_other_bundle_or_settings_refused_unless_forced(local_run, bundle_path, videos, tmp_path, capfd):
    out, _ = local_run
    good = str(videos["good"][0])
    assert main(["run", str(bundle_path), good, "-o", str(out), "--save-crops"]) == 1
    assert "made otherwise: setting save_crops False there, True now" in capfd.readouterr().err
    forced = tmp_path / "forced"
    assert main(["run", str(bundle_path), good, "-o", str(forced)]) == 0
    assert main(["run", str(bundle_path), good, "-o", str(forced), "--save-crops", "--force"]) == 0
    rows = [r for r in manifest_rows(forced) if "video" in r]  # and, between them, the --force run's line
    assert [r["settings"]["save_crops"] for r in rows] == [False, True]
    assert "imgs_crop" in npz(rows[-1]["output"])


def test_manifest_of_another_bundle_refused(local_run, bundle_path, videos, tmp_path, capfd):
    out, _ = local_run
    other = tmp_path / "other"
    other.mkdir()
    rows = manifest_rows(out)
    for row in rows:
        row["bundle_sha256"] = "0" * 64  # as a folder filled by another bundle would record it
    (other / dataset.MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["run", str(bundle_path), str(videos["good"][0]), "-o", str(other)]) == 1
    assert "made otherwise: bundle '000000000000' there" in capfd.readouterr().err
    assert len(manifest_rows(other)) == len(rows)  # nothing was added or redone


def test_bad_output_folder_and_inputs(bundle_path, videos, tmp_path, capfd):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["run", str(bundle_path), str(videos["folder"]), "-o", str(blocker / "out")]) == 1
    assert "cannot write to output folder" in capfd.readouterr().err
    assert main(["run", str(bundle_path), str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "o")]) == 1
    assert "does not exist" in capfd.readouterr().err
    assert not (tmp_path / "o" / dataset.MANIFEST).exists()


def test_sigkill_then_rerun_loses_and_duplicates_nothing(bundle_path, videos, singles, tmp_path):
    out = tmp_path / "killed"
    good = [str(v) for v in videos["good"]]
    # A slowed module (0.4 s a batch) so that the kill lands in the middle of the run.
    code = textwrap.dedent(f"""
        import sys, time
        import facecrop.runtime.bundle as rb
        call = rb.Bundle.__call__
        rb.Bundle.__call__ = lambda self, frames: (time.sleep(0.4), call(self, frames))[1]
        from facecrop.cli import main
        sys.exit(main(["run", {str(bundle_path)!r}, *{good!r}, "-o", {str(out)!r}, "--batch-size", "4"]))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not ((out / dataset.MANIFEST).is_file() and list(out.rglob("*.partial"))):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = manifest_rows(out) if (out / dataset.MANIFEST).is_file() else []
    assert 1 <= len(first) < len(good), "the kill should land after one video and before the last"
    assert main(["run", str(bundle_path), *good, "-o", str(out)]) == 0
    rows = manifest_rows(out)
    assert sorted(r["video"] for r in rows) == sorted(str(Path(v).resolve()) for v in good)  # each exactly once
    for row in rows:
        want = singles[next(v for v in videos["good"] if str(v.resolve()) == row["video"])]
        got = npz(row["output"])
        for key in want:
            assert same(got[key], want[key]), (row["video"], key)
    assert not list(out.rglob("*.partial"))


# --- Ray ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    # In-process ("local"): a bare ray.init() would join the last cluster `ray start` made here.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_run_equals_local_run(ray_instance, local_run, bundle_path, videos, tmp_path):
    from facecrop import distributed

    local_out, _ = local_run
    out = tmp_path / "ray"
    rows, skipped = distributed.run_dataset(bundle_path, [videos["folder"], videos["list"]], out, progress=False)
    assert skipped == []
    local = {r["video"]: r for r in manifest_rows(local_out)}
    ray_rows = manifest_rows(out)
    assert sorted(r["video"] for r in ray_rows) == sorted(local)
    for row in ray_rows:
        want = local[row["video"]]
        same = ("status", "frames", "faces", "bundle_sha256", "settings", "identity")
        assert {k: row[k] for k in same} == {k: want[k] for k in same}
        if row["status"] == "done":  # byte for byte: the same arrays, in the same file layout
            assert Path(row["output"]).read_bytes() == Path(want["output"]).read_bytes()
        else:  # the same reason, naming each run's own output folder
            assert row["error"].replace(str(out.resolve()), "OUT") == want["error"].replace(str(local_out.resolve()), "OUT")


def test_ray_actor_killed_mid_run(ray_instance, bundle_path, videos, singles, tmp_path):
    from facecrop import distributed

    out = tmp_path / "ray-killed"
    good = [str(v) for v in videos["good"]]
    result = {}
    driver = threading.Thread(target=lambda: result.update(rows=distributed.run_dataset(
        bundle_path, good, out, progress=False)[0]))
    driver.start()
    killed = None
    deadline = time.time() + 240
    while killed is None and time.time() < deadline and driver.is_alive():
        if list(out.rglob("*.partial")):  # an actor is inside a video: kill its process
            listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
            pids = [int(line.split()[0]) for line in listing.splitlines() if "MapWorker" in line]
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed = pids[0]
        time.sleep(0.05)
    driver.join(timeout=300)
    assert killed is not None, "no actor process was found to kill"
    rows = manifest_rows(out)
    assert sorted(r["video"] for r in rows) == sorted(str(Path(v).resolve()) for v in good)  # each exactly once
    assert all(r["status"] == "done" for r in rows)
    for row in rows:
        want = singles[next(v for v in videos["good"] if str(v.resolve()) == row["video"])]
        assert np.array_equal(npz(row["output"])["bbox"], want["bbox"])


def test_ray_errors_are_clear(bundle_path, videos, tmp_path):
    video = str(videos["good"][0])
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "facecrop.cli", "run", str(bundle_path), video, "-o",
                           str(tmp_path / "o"), "--ray", "127.0.0.1:1"], capture_output=True, text=True)
    assert proc.returncode == 1 and "cannot reach a Ray cluster at 127.0.0.1:1" in proc.stderr
    assert time.time() - start < 60  # within seconds of startup, not Ray's long connection timeout
    code = "import sys; sys.modules['ray'] = None; from facecrop.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, "run", str(bundle_path), video, "-o", str(tmp_path / "p"),
                           "--ray"], capture_output=True, text=True)
    assert proc.returncode == 1 and "pip install 'facecrop[cluster]'" in proc.stderr


@pytest.fixture
def ray_cluster(tmp_path):
    """A Ray cluster as README starts one: ``ray start --head --block`` in its own process group, on
    loopback, with token authentication on (``ray start`` turns it on where ``~/.ray/auth_token``
    exists). ``HOME`` is a temporary folder, so the token is this test's; yields (address, env)."""
    if shutil.which("ray", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("Ray is not installed (facecrop[cluster])")
    home = tmp_path / "home"
    home.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(home)
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    # Ray's documented first step for token authentication; `ray start` then turns it on.
    subprocess.run([ray, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=120)
    log = open(tmp_path / "ray-head.log", "w")
    head = subprocess.Popen([ray, "start", "--head", "--block",
                             f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while "Ray runtime started" not in (tmp_path / "ray-head.log").read_text():
            assert head.poll() is None and time.time() < deadline, (tmp_path / "ray-head.log").read_text()
            time.sleep(0.2)
        assert "Token authentication is enabled" in (tmp_path / "ray-head.log").read_text()
        yield f"127.0.0.1:{port}", env
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the head and every process it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        log.close()


def test_ray_cluster_started_as_readme_says(ray_cluster, bundle_path, videos, local_run, tmp_path):
    address, env = ray_cluster
    out = tmp_path / "cluster"
    command = [os.path.join(os.path.dirname(sys.executable), "facecrop"), "run", str(bundle_path),
               str(videos["folder"]), str(videos["list"]), "-o", str(out), "--ray", address]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stderr  # the dataset's two bad videos fail, as in the local run
    assert "Traceback" not in proc.stderr and "Authentication" not in proc.stderr, proc.stderr
    local = {r["video"]: r for r in manifest_rows(local_run[0])}
    rows = manifest_rows(out)
    assert sorted(r["video"] for r in rows) == sorted(local)
    for row in rows:
        if row["status"] == "done":
            assert Path(row["output"]).read_bytes() == Path(local[row["video"]]["output"]).read_bytes()
    speeds = [float(part.split(" frames/s")[0].split()[-1]) for part in proc.stderr.split("\r") if " frames/s" in part]
    assert speeds and speeds[-1] > 0, proc.stderr  # progress counts the actors' frames
    wrong = subprocess.run(command[:-4] + [str(videos["good"][0]), "-o", str(tmp_path / "w"), "--ray", address],
                           env={**env, "RAY_AUTH_TOKEN": "0" * 32}, capture_output=True, text=True, timeout=300)
    said = [line for line in wrong.stderr.splitlines() if line.startswith("facecrop:")]
    assert wrong.returncode == 1 and len(said) == 1, wrong.stderr
    assert "cannot join the Ray cluster" in said[0] and "RAY_AUTH_TOKEN" in said[0], said


def test_ray_actor_no_node_can_hold_is_refused(ray_instance, bundle_path, videos, tmp_path):
    from facecrop import distributed

    with pytest.raises(ValueError, match=r"no node of the Ray cluster can hold an actor of --num-cpus 1 --num-gpus 1 "
                                         r"\(its nodes have 2 CPUs and 0 GPUs\)"):
        distributed.run_dataset(bundle_path, [videos["good"][0]], tmp_path / "gpu", num_gpus=1, progress=False)
