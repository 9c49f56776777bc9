"""The GPU script's CPU rehearsal runs end to end, so its first run on a GPU counts.

No figure is asserted (they depend on the machine): only that every step that can run here ran,
passed parity against the eager CPU reference, and that the JSON and the table say so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO, real_model


@pytest.mark.slow
def test_cpu_rehearsal_runs_every_step_it_can(tmp_path):
    model = real_model("det_2.5g")
    env = {**os.environ, "FACECROP_MODEL_DIR": str(model.parent), "FACECROP_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=900, cwd=REPO,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    steps = {s["step"]: s for s in report["steps"]}
    assert report["environment"]["pipeline"] == "det_2.5g@224 + align224, K=8"
    ran = {"prepare", "eager", "bundle-export-fp32", "video", "whole-process", "medusa-loop"}
    assert {name for name, s in steps.items() if s["status"] == "ok"} == ran, steps
    for name in ("cuda-graph", "bundle-aoti-fp16", "bundle-export-fp16", "tensorrt-fp16", "compile-max-autotune"):
        assert steps[name] == {"step": name, "status": "skipped", "reason": "needs CUDA"}
    for name in ("bundle-aoti-fp32", "compile-reduce-overhead"):
        assert steps[name]["reason"] == "--quick on a CPU"

    assert steps["prepare"]["sizes"] == ["1280x720", "720x1280", "642x378", "512x512"]
    assert steps["prepare"]["reference_faces"] > 20  # real faces, 0 to 10 a frame
    for name in ("eager", "bundle-export-fp32"):
        s = steps[name]
        assert s["parity_ok"] and s["count_agree"] == 1.0 and s["frames"] == steps["prepare"]["parity_frames"]
        assert s["box_px_max"] <= 1e-2 and s["crop_grey_mean_max"] <= 0.05  # the CPU runs the reference's code
        assert set(s["fps"]) == {"1", "8"} and all(v > 0 for v in s["fps"].values())
    video = steps["video"]
    assert video["frames"] == 48 and video["faces"] > 0 and video["end_to_end_fps"] > 0 and video["decode_only_fps"] > 0
    assert steps["medusa-loop"]["faces"] > 0 and steps["medusa-loop"]["nets"] == "onnxruntime"
    whole = steps["whole-process"]  # facecrop run and the InsightFace script as processes
    assert whole["bundle"] == "export-fp32" and whole["frames"] == 48 and whole["speed_up"] > 0
    assert whole["peak_mb"]["facecrop"] > 100 and whole["peak_mb"]["insightface"] > 100

    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert table in proc.stdout  # printed too
    assert "| eager | ok |" in table and "| cuda-graph | skipped: needs CUDA |" in table
    assert ">= 10,000" in table and "bound by decoding" in table and "x the Medusa-style loop" in table
    assert "as a process, x the InsightFace script" in table


def _fake_check():
    return SimpleNamespace(cuda=False, reference=[{}], args=SimpleNamespace(quick=True))


def test_a_failing_or_overlong_step_is_recorded_and_the_run_goes_on():
    from benchmarks.gpu_check import run_step

    def broken(check):
        raise RuntimeError("no such kernel")

    failed = run_step(_fake_check(), "broken", broken, None, 60)
    assert failed["status"] == "failed" and "RuntimeError: no such kernel" in failed["error"]

    start = time.perf_counter()
    slow = run_step(_fake_check(), "slow", lambda check: time.sleep(30) or {}, None, 10)
    assert slow["status"] == "timeout" and "10 s budget" in slow["error"]
    assert time.perf_counter() - start < 15

    late = run_step(_fake_check(), "late", broken, None, 5)
    assert late == {"step": "late", "status": "skipped", "reason": "the run's deadline (--deadline) had passed"}


def test_the_medusa_loops_torch_session_gives_onnxruntimes_outputs():
    """Without onnxruntime-gpu, the Medusa-style loop's detector runs as the converted net, same numbers."""
    import onnxruntime as ort
    import torch

    from benchmarks.gpu_check import TorchSession

    path = real_model("det_500m")
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    ort.set_default_logger_severity(3)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x})
    got = TorchSession(path, (224, 224), torch.device("cpu")).run(None, {"input": x})
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-4 * max(1.0, np.abs(w).max()))
