"""Bundle writing (facecrop.bundle): layout, manifest, atomicity, refusals, CLI export/inspect, backends.

Mechanics are tested on a small stand-in module with the pipeline's exact contract (no model file
needed); the real pipeline built from det_500m is exported with every backend that runs here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from torch import nn
import torch.nn.functional as F

from conftest import real_model
from facecrop import bundle as fb
from facecrop.cli import main
from facecrop.pipeline import build_pipeline
from facecrop.pipeline_config import PipelineConfig
from facecrop.runtime import FORMAT_VERSION, BundleError, load_bundle
from facecrop.runtime import process_video
from facecrop.runtime.aoti import AotiCpuModule
from facecrop.runtime.bundle import sha256_file
from test_runtime import make_video, npz, same

FRAME = (96, 64)  # stand-in golden frame size (width, height); the second case is portrait


class StandIn(nn.Module):
    """The pipeline contract at toy scale: K=2 bright-blob "faces" found by a fixed conv.

    frames uint8 [B, 3, H, W] -> (valid [B,K] bool, conf [B,K], bbox [B,K,4], lms [B,K,5,2],
    crop_mat [B,K,3,3] frame -> crop pixels, imgs_crop [B,K,3,S,S] uint8). A black frame has no face.
    """

    output_names = ("valid", "conf", "bbox", "lms", "crop_mat", "imgs_crop")

    def __init__(self, size: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 2, 5, stride=4, padding=2)
        nn.init.uniform_(self.conv.weight, 0.0, 0.2)
        nn.init.constant_(self.conv.bias, -2.0)  # black frames score sigmoid(-2) < 0.5: no face
        self.size = size
        self.register_buffer("offsets", torch.tensor([[-.4, -.3], [.4, -.3], [0., 0.], [-.3, .4], [.3, .4]]))

    def forward(self, frames):
        x = frames.float() / 255
        heat = self.conv(x)  # [B, K, h, w]
        b, k, h, w = heat.shape
        conf = heat.flatten(2).amax(-1).sigmoid()  # [B, K]
        prob = (heat.flatten(2) * 8).softmax(-1).view(b, k, h, w)
        ys = torch.arange(h, dtype=x.dtype) * (frames.shape[2] / h)
        xs = torch.arange(w, dtype=x.dtype) * (frames.shape[3] / w)
        cx, cy = (prob.sum(2) * xs).sum(-1), (prob.sum(3) * ys).sum(-1)  # [B, K]
        half = 6 + 10 * conf
        bbox = torch.stack([cx - half, cy - half, cx + half, cy + half], -1)
        lms = torch.stack([cx, cy], -1)[:, :, None] + self.offsets * half[..., None, None]  # [B, K, 5, 2]
        s = self.size / (2 * half)
        zero, one = torch.zeros_like(s), torch.ones_like(s)
        crop_mat = torch.stack([torch.stack([s, zero, self.size / 2 - cx * s], -1),
                                torch.stack([zero, s, self.size / 2 - cy * s], -1),
                                torch.stack([zero, zero, one], -1)], -2)  # [B, K, 3, 3]
        # Crop pixel (u, v) samples frame pixel M^-1 (u, v); grid_sample wants [-1, 1] coordinates.
        u = torch.arange(self.size, dtype=x.dtype)
        px = (u[None, None, None, :] - (self.size / 2 - cx * s)[..., None, None]) / s[..., None, None]
        py = (u[None, None, :, None] - (self.size / 2 - cy * s)[..., None, None]) / s[..., None, None]
        grid = torch.stack([(px * 2 + 1) / frames.shape[3] - 1 + py * 0, (py * 2 + 1) / frames.shape[2] - 1 + px * 0], -1)
        crops = F.grid_sample(frames.float().repeat_interleave(k, 0), grid.flatten(0, 1), align_corners=False)
        imgs_crop = crops.round().clamp(0, 255).to(torch.uint8).view(b, k, 3, self.size, self.size)
        return conf > 0.5, conf, bbox, lms, crop_mat, imgs_crop


def standin_frames() -> list[torch.Tensor]:
    """Golden cases: bright shapes on dark ground, uint8 [2, 3, 64, 96] and [1, 3, 80, 48]."""
    frames = torch.zeros(2, 3, FRAME[1], FRAME[0], dtype=torch.uint8)
    frames[0, :, 10:30, 20:44] = 230
    frames[1, :, 30:60, 50:90] = 200
    portrait = torch.zeros(1, 3, 80, 48, dtype=torch.uint8)
    portrait[0, :, 40:70, 5:40] = 210
    return [frames, portrait]


def write_standin(root, backend="export", **kw):
    config = PipelineConfig(detector="standin", max_faces=2)
    kw.setdefault("source_models", {})
    return fb.write_bundle(StandIn().eval(), config, backend=backend, out_root=root,
                           golden_frames=standin_frames(), **kw)


def test_layout_and_manifest(tmp_path):
    path = write_standin(tmp_path, version="1.2.3", name="toy")
    assert path == tmp_path / "toy" / "1.2.3"
    assert sorted(p.name for p in path.iterdir()) == ["golden.npz", "manifest.json", "model.pt2"]
    assert [p.name for p in (tmp_path / "toy").iterdir()] == ["1.2.3"]  # no temp folder left
    m = json.loads((path / "manifest.json").read_text())
    assert m["format_version"] == FORMAT_VERSION == "3.2" and m["version"] == "1.2.3" and m["name"] == "toy"
    assert m["backend"] == "export" and m["device"] == "cpu" and m["dtype"] == "fp32"
    assert "frame_size" not in m["config"] and m["config"]["max_faces"] == 2
    assert m["environment"]["torch"] == torch.__version__ and "torchvision" in m["environment"]
    assert m["input"] == {"name": "frames", "dtype": "uint8", "shape": ["B", 3, "H", "W"], "color": "RGB",
                          "memory_format": "channels_last", "max_batch": fb.MAX_BATCH, "min_side": 16, "max_side": 4096}
    assert m["golden"]["cases"] == [{"frames": 2, "size": [96, 64]}, {"frames": 1, "size": [48, 80]}]
    assert [o["name"] for o in m["outputs"]] == list(StandIn.output_names)
    assert m["outputs"][5] == {"name": "imgs_crop", "dtype": "uint8", "shape": ["B", 2, 3, 16, 16]}
    assert m["artifact"] == {"file": "model.pt2", "sha256": sha256_file(path / "model.pt2")}
    assert m["golden"]["sha256"] == sha256_file(path / "golden.npz")
    with np.load(path / "golden.npz", allow_pickle=False) as g:
        for i, frames in enumerate(standin_frames()):
            assert np.array_equal(g[f"case{i}.input.frames"], frames.numpy())
            want = StandIn().eval()(frames)
            assert np.array_equal(g[f"case{i}.output.valid"], want[0].numpy()) and g[f"case{i}.output.valid"].any()
            assert np.allclose(g[f"case{i}.output.bbox"], want[2].detach().numpy())


def test_source_models_are_hashed(tmp_path):
    model = real_model("det_500m")
    path = write_standin(tmp_path, source_models={"detector": model})
    m = json.loads((path / "manifest.json").read_text())
    assert m["source_models"] == {"detector": {"file": "det_500m.onnx", "sha256":
                                               "5e4447f50245bbd7966bd6c0fa52938c61474a04ec7def48753668a9d8b4ea3a"}}


def test_refuses_to_overwrite_a_version(tmp_path):
    path = write_standin(tmp_path, name="toy")
    before = sha256_file(path / "manifest.json")
    with pytest.raises(ValueError, match="already exists"):
        write_standin(tmp_path, name="toy")
    assert sha256_file(path / "manifest.json") == before


def test_failed_build_leaves_nothing(tmp_path):
    class Broken(StandIn):
        def forward(self, frames):  # passes eagerly, but torch.export cannot trace data-dependent Python
            out = super().forward(frames)
            if frames.float().mean() > 0:
                return out
            return out

    config = PipelineConfig(detector="standin", max_faces=2)
    with pytest.raises(Exception):
        fb.write_bundle(Broken().eval(), config, backend="export", out_root=tmp_path, name="toy",
                        source_models={}, golden_frames=standin_frames())
    assert list((tmp_path / "toy").iterdir()) == []


@pytest.mark.parametrize("kw, message", [
    ({"dtype": "fp16"}, "fp16.*CUDA"),
    ({"backend": "tensorrt"}, "tensorrt"),
    ({"device": "cuda"} if not torch.cuda.is_available() else {"device": "mps"}, "CUDA|cpu"),
    ({"backend": "onnx"}, "backend must be one of"),
    ({"version": "v1"}, "semantic version"),
    ({"name": "../evil"}, "bundle name"),
])
def test_bad_requests_are_refused(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        write_standin(tmp_path, **{"backend": "export", **kw})
    assert not any(tmp_path.rglob("manifest.json"))


@pytest.mark.parametrize("frames, message", [
    ([torch.zeros(2, 3, 64, 95)], r"list of uint8 \[b, 3, H, W\] batches, got \['torch.float32"),
    ([], "non-empty list"),
    ([torch.zeros(1, 3, 8, 64, dtype=torch.uint8)], "64x8 are outside 16-4096"),
])
def test_bad_golden_frames(tmp_path, frames, message):
    config = PipelineConfig(detector="standin", max_faces=2)
    with pytest.raises(ValueError, match=message):
        fb.write_bundle(StandIn(), config, backend="export", out_root=tmp_path, source_models={},
                        golden_frames=frames)


def test_default_golden_frames_hold_real_faces():
    landscape, portrait = fb.default_golden_frames()
    assert landscape.dtype == portrait.dtype == torch.uint8
    assert landscape.shape == (1, 3, 886, 1280) and portrait.shape == (2, 3, 512, 384)  # t1, astronaut cut
    assert torch.equal(portrait[1], portrait[0].flip(-1)) and portrait.float().std() > 30


def test_torchscript_standin_reloads(tmp_path):
    bundle = load_bundle(write_standin(tmp_path, backend="torchscript"))
    assert bundle.manifest["artifact"]["file"] == "model.ts"
    out = bundle(standin_frames()[0][[1, 1, 0]])
    assert out["imgs_crop"].shape == (3, 2, 3, 16, 16)
    assert bundle(torch.zeros(1, 3, 33, 57, dtype=torch.uint8))["valid"].shape == (1, 2)


@pytest.mark.slow
def test_aoti_standin(tmp_path):
    bundle = load_bundle(write_standin(tmp_path, backend="aoti"))
    assert bundle.manifest["artifact"]["file"] == "model_aoti.pt2"
    assert bundle.golden_diffs["bbox"] <= 1e-3
    # The artifact is compiled for channels-last frames; the bundle hands it any layout as that.
    frames = standin_frames()[0]
    channels_last = frames.contiguous(memory_format=torch.channels_last)
    for got, want in zip(bundle(frames.contiguous()).values(), bundle(channels_last).values()):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert bundle.memory_format == torch.channels_last


@pytest.mark.slow
def test_aoti_cpu_module_runs_two_batches_at_once_with_torchs_results(tmp_path, photo_frames):
    """The artifact through its C interface (runtime/aoti.py) gives torch's own loader's outputs bit for bit,
    also with two threads calling it at once, and runs a video without torch imported; an archive it does
    not know goes to torch's loader."""
    path = write_standin(tmp_path, backend="aoti")
    bundle = load_bundle(path)
    assert isinstance(bundle.module, AotiCpuModule) and bundle.parallel == (2 if os.cpu_count() >= 2 else 1)
    artifact = path / bundle.manifest["artifact"]["file"]
    torchs = torch._C._aoti.AOTIModelPackageLoader(str(artifact), "model", False, 1, -1)
    frames = standin_frames()[0].contiguous(memory_format=torch.channels_last)
    batches = [frames[[i % len(frames), (i + 1) % len(frames)]] for i in range(6)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # every call on one thread, as the runtime's workers: the same float sums
    try:
        want = [[t.numpy() for t in torchs.run([b])] for b in batches]
        alone = [bundle.module(b.numpy()) for b in batches]
    finally:
        torch.set_num_threads(threads)
    for got, expected in zip(alone, want):
        assert all(np.array_equal(g, w) and g.dtype == w.dtype for g, w in zip(got, expected))
    # Calls overlapping in time: each keeps its own inputs and outputs.
    with ThreadPoolExecutor(2, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        together = list(pool.map(bundle.module, [b.numpy() for b in batches] * 4))
    for got, expected in zip(together, want * 4):
        assert all(np.array_equal(g, w) for g, w in zip(got, expected))
    # The fallback engine, torch's own documented loader, runs the same library: the same outputs.
    by_torch = load_bundle(path, engine="torch")
    assert not isinstance(by_torch.module, AotiCpuModule) and by_torch.golden_diffs == bundle.golden_diffs
    torch.set_num_threads(1)
    try:
        fallback = [by_torch.run_frames(b.numpy()) for b in batches]
    finally:
        torch.set_num_threads(threads)
    for got, expected in zip(fallback, want):
        assert all(np.array_equal(got[name], w) for name, w in zip(by_torch.output_names, expected))
    with pytest.raises(BundleError, match="unknown engine 'fast'"):
        load_bundle(path, engine="fast")
    # A whole run in a process of its own: torch's Python package is never imported, and of its libraries
    # only libtorch_cpu (not libtorch.so, a CUDA build's stub for the CUDA libraries).
    video = make_video(tmp_path / "v.mp4", photo_frames)
    code = textwrap.dedent(f"""
        import sys
        import facecrop.runtime as rt
        rt.process_video(rt.load_bundle({str(path)!r}), {str(video)!r}, {str(tmp_path / 'alone.npz')!r}, progress=False)
        libraries = {{line.split("/")[-1].strip() for line in open("/proc/self/maps") if "/torch/lib/" in line}}
        print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'), sorted(libraries))
    """)
    said = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert said.startswith("[] [") and "libtorch_cpu.so" in said and "libtorch.so" not in said, said
    # A member beyond the library, its sources and metadata (weights outside it, a proxy executor's ops, or
    # anything newer): torch's own loader runs it, one call at a time.
    with zipfile.ZipFile(artifact, "a") as archive:
        prefix = next(n for n in archive.namelist() if n.endswith(".so")).rsplit("/", 1)[0]
        archive.writestr(f"{prefix}/notes.txt", "a member the C-interface runner does not know")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["artifact"]["sha256"] = sha256_file(artifact)  # as if exported so: the hash check passes
    (path / "manifest.json").write_text(json.dumps(manifest))
    fallback = load_bundle(path)
    assert fallback.parallel == 1 and not isinstance(fallback.module, AotiCpuModule)
    torch.set_num_threads(1)
    try:
        got = fallback.module(batches[0])
    finally:
        torch.set_num_threads(threads)
    assert all(np.array_equal(g.numpy(), w) for g, w in zip(got, want[0]))
    # The run without torch imported gave what torch's loader gives (every call on one thread both ways).
    alone, through_torch = npz(tmp_path / "alone.npz"), npz(process_video(fallback, video, tmp_path / "t.npz", progress=False))
    assert sorted(alone) == sorted(through_torch)
    assert all(same(alone[k], through_torch[k]) for k in alone), [k for k in alone
                                                                  if not same(alone[k], through_torch[k])]


def test_format_2_0_bundles_get_contiguous_frames(tmp_path):
    path = write_standin(tmp_path)
    edit = json.loads((path / "manifest.json").read_text())
    edit["format_version"] = "2.0"
    del edit["input"]["memory_format"]
    (path / "manifest.json").write_text(json.dumps(edit))
    assert load_bundle(path).memory_format == torch.contiguous_format


# --- the real pipeline (det_500m, aligned crop) -------------------------------------------------

def test_cli_export_and_inspect(tmp_path, capsys):
    model = real_model("det_500m")
    # An export at a fixed frame size earlier in the process (a notebook's) must not pin this bundle's size.
    fused = build_pipeline(PipelineConfig(detector=str(model), crop="align"))
    torch.export.export(fused, (torch.zeros(2, 3, 720, 1280, dtype=torch.uint8),),
                        dynamic_shapes=({0: torch.export.Dim("batch", max=64)},))
    rc = main(["export", "--detector", str(model), "--crop", "align",
               "--backend", "export", "--out", str(tmp_path), "--version", "0.1.0"])
    assert rc == 0
    path = tmp_path / "det_500m-align112-det224-export-cpu-fp32" / "0.1.0"
    assert capsys.readouterr().out.strip().endswith(str(path))
    m = json.loads((path / "manifest.json").read_text())
    assert m["config"]["crop"] == "align" and m["source_models"]["detector"]["file"] == "det_500m.onnx"
    assert [o["name"] for o in m["outputs"]] == ["valid", "conf", "bbox", "lms", "overflow", "crop_mat", "imgs_crop"]
    with np.load(path / "golden.npz", allow_pickle=False) as g:
        assert g["case0.output.valid"][0].sum() == 6  # t1's six faces
        assert (g["case1.output.valid"].sum(1) == 1).all()  # the astronaut and her mirror image

    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[:out.rindex("}") + 1])["artifact"]["sha256"] == m["artifact"]["sha256"]
    assert re.search(r"verified Bundle\(.*golden self-check pass", out)

    (path / "model.pt2").write_bytes((path / "model.pt2").read_bytes()[:-10] + b"0123456789")
    assert main(["inspect", str(path)]) == 1
    assert "SHA-256" in capsys.readouterr().err


