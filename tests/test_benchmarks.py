"""The benchmark script runs end to end (tiny ``--smoke`` mode) and writes what it promises.

No timing is asserted: the figures depend on the machine; only that every pipeline ran on
the same real frames, found faces, and that the JSON, markdown and PNG hold the report.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO, real_media, real_model


@pytest.mark.slow
def test_smoke_run_writes_json_markdown_and_plot(tmp_path):
    model = real_model("det_500m")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--smoke", "--out", str(tmp_path),
                           "--model-dir", str(model.parent)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]

    results = json.loads((tmp_path / "results.json").read_text())
    assert {"mode", "machine", "video", "rows", "sweeps", "target_case", "notes"} <= set(results)
    assert results["mode"] == "smoke"
    assert {"torch", "device", "threads", "cpu"} <= set(results["machine"])
    rows = {r["backend"]: r for r in results["rows"]}
    assert set(rows) == {"insightface", "eager"}
    for row in rows.values():
        assert "error" not in row, row
        assert {"fps", "fps_decode_included", "ms_per_frame", "peak_rss_mb", "warmup_s", "ratio"} <= set(row)
        assert row["fps"] > 0 and row["fps_decode_included"] > 0 and row["peak_rss_mb"] > 0
        assert row["faces_per_frame"] > 0  # the real faces in the video are found
    assert rows["insightface"]["ratio"] == pytest.approx(1.0)
    assert set(rows["eager"]["ms_per_frame"]) == {"1", "2"}
    # Both pipelines see the same real faces: frame 0 has one, frame 1 two.
    assert rows["eager"]["faces_per_frame"] == rows["insightface"]["faces_per_frame"] == pytest.approx(1.5)
    for sweep in ("faces", "sizes"):
        fps = results["sweeps"][sweep]["fps"]
        assert set(fps) == {"insightface", "eager"}
        assert all(set(v) == set(results["sweeps"][sweep]["labels"]) for v in fps.values())

    report = (tmp_path / "results.md").read_text()
    assert "| det_500m@224 + align224 | insightface |" in report and "| det_500m@224 + align224 | eager |" in report
    assert results["machine"]["torch"] in report
    assert report.splitlines()[0] in proc.stdout  # the table is printed
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("run-")]  # the work folder is removed


def test_dataset_benchmark_runs(bundle_path, tmp_path):
    """The folder-run benchmark end to end on two short videos (its figures are not asserted)."""
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "dataset_run.py"), "--bundle", str(bundle_path), "--videos", "2",
                    "--frames", "8", "--repeats", "1", "--out", str(tmp_path / "out")], check=True, cwd=REPO,
                   capture_output=True, text=True)
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["pipeline"] for r in rows] == ["shell loop", "folder run"] and all(r["fps"] > 0 for r in rows)
    manifest = (tmp_path / "out" / "folder" / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 2 and all(json.loads(line)["status"] == "done" for line in manifest)


@pytest.mark.slow
def test_cpu_video_benchmark_runs(bundle_path, tmp_path):
    """``cpu_video.py`` end to end on two tiny videos of other sizes with 0-3 faces (figures not asserted)."""
    model = real_model("det_500m")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "cpu_video.py"), "--backends", "export",
                           "--bundle", f"export={bundle_path}",
                           "--sizes", "480p", "322x240", "--faces", "0-3", "--frames", "8", "--repeats", "1",
                           "--model-dir", str(model.parent), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [(r["size"], r["pipeline"]) for r in rows] == [("480p", "insightface"), ("480p", "export"),
                                                          ("322x240", "insightface"), ("322x240", "export")]
    assert all("error" not in r and r["fps"] > 0 and r["frames"] == 8 for r in rows), rows
    for ours, theirs in zip(rows[1::2], rows[::2]):
        assert ours["faces"] == theirs["faces"] > 0  # the same faces found on the same frames
    assert "0-3 faces a frame" in proc.stdout and "| stage | ms/frame |" in proc.stdout
    videos = {p.name for p in (tmp_path / "videos").iterdir()}  # and the profile's 720p video
    assert {"bench_322x240_8_0-3faces.mp4", "bench_854x480_8_0-3faces.mp4"} <= videos


def test_whole_process_benchmark_runs(bundle_path, tmp_path):
    """``whole_process.py`` on two short real clips and the fixed-cost steps (its figures are not asserted)."""
    model = real_model("det_500m")
    media = real_media("1.mp4").parent
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "whole_process.py"), "--bundle", str(bundle_path),
                           "--media-dir", str(media),
                           "--sets", "dataset", "fixed", "--clips", "2", "--repeats", "1", "--model-dir",
                           str(model.parent), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "whole_process.json").read_text())
    (row,) = results["rows"]
    assert row["input"] == "2 clips of 4 s" and row["frames"] > 150
    sides = ("InsightFace script", "facecrop run (folder)", "shell loop of facecrop run")
    assert all(row[s]["seconds"] > 0 and row[s]["peak_mb"] > 100 for s in sides), row
    steps = dict(results["fixed_cost_s"])
    assert list(steps)[0] == "import facecrop.runtime (numpy, PyAV)" and all(v >= 0 for v in steps.values())
    assert "| 2 clips of 4 s |" in proc.stdout and "| shell loop of facecrop run |" in proc.stdout
    assert not (tmp_path / "out" / "work").exists()  # the work folder is removed


def test_live_benchmark_runs(bundle_path, tmp_path):
    """``live.py --quick``: a real stream over loopback at 480p 25 fps, then served twice as fast (figures not asserted)."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "live.py"), "--quick", "--seconds", "2",
                           "--bundle", str(bundle_path), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "live.json").read_text())
    assert [(r["case"], r["policy"]) for r in rows] == [("480p 25 fps", "all"), ("480p 50 fps", "latest")]
    assert rows[0]["frames"] == 50 and rows[0]["dropped"] == 0  # every frame of 2 s at 25 fps, none dropped
    assert rows[1]["frames"] + rows[1]["dropped"] == 50
    assert all(r["latency_p99_ms"] >= r["latency_p50_ms"] > 0 and 0 < r["module_share"] <= 1 for r in rows)
    assert "| 480p 25 fps | all | 50 |" in (tmp_path / "live.md").read_text()


def test_runtime_ab_benchmark_runs(bundle_path, tmp_path):
    """``runtime_ab.py`` on one real video and two clips (an export bundle: the sides take turns; figures not asserted)."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "runtime_ab.py"), "--bundle", str(bundle_path),
                           "--videos", "example_vid.mp4", "--clips", "2", "--repeats", "1",
                           "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "out" / "runtime_ab.md").read_text()
    assert "| example_vid.mp4 | one call at a time" in table and "| 2 clips, `run_local` |" in table
