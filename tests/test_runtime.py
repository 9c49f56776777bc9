"""The minimal runtime (facecrop.runtime): bundle loading and its refusals, video processing, resume, CLI.

Videos are built with PyAV in tmp_path from real photos (scikit-image's astronaut, InsightFace's
t1.jpg); the bundle is the real det_500m pipeline with aligned crops, exported with torch.export.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import REPO
from facecrop.cli import main
from facecrop.runtime import BundleError, VideoError, load_bundle, process_video
from facecrop.runtime.bundle import sha256_file

BANNED = ("onnx", "onnx2torch", "onnxruntime", "kornia", "torchvision", "insightface", "cv2", "tqdm", "skimage", "ray")


def make_video(path, frames, codec="libx264", pix_fmt="yuv420p", pts_ms=None, fmt=None, options=None):
    """Encode RGB frames [n, H, W, 3]; ``pts_ms`` gives each frame's time in ms (variable frame rate)."""
    with av.open(str(path), "w", format=fmt, options=options or {}) as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if pts_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        out.start_encoding()
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def decode_all(path):
    """Independent decode of every frame: (frames uint8 [n, 3, H, W] RGB at the video's size, pts [n])."""
    frames, pts = [], []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24")), pts.append(float(frame.pts * frame.time_base))
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2), np.array(pts)


def npz(path):
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal arrays, NaN equal to NaN where they are floats (quality columns are NaN where no face is)."""
    return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")


# --- imports ----------------------------------------------------------------------------------

def test_runtime_imports_only_torch_numpy_av(bundle_path, tmp_path, photo_frames):
    video = make_video(tmp_path / "v.mp4", photo_frames[:4])
    code = textwrap.dedent(f"""
        import sys
        import torch, numpy, av
        base = set(sys.modules)  # torch itself imports tqdm (torch.hub) when it is installed
        import facecrop.runtime as rt
        bundle = rt.load_bundle({str(bundle_path)!r})
        rt.process_video(bundle, {str(video)!r}, {str(tmp_path / 'r.npz')!r}, progress=False)
        banned = lambda mods: sorted(m for m in mods if m.split('.')[0] in {BANNED!r})
        print(banned(set(sys.modules) - base), banned(sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    added, present = out.strip().split("] [")
    assert added == "[" and all(m.startswith("tqdm") for m in present.strip("[]'").split("', '") if m), out


def test_a_library_run_leaves_the_process_as_it_found_it(bundle_path, tmp_path, photo_frames):
    """No child process, no malloc setting and no thread count changed by ``import facecrop.runtime``,
    ``load_bundle`` and runs (two, one after the other); ``tune_process`` is the opt-in that does change malloc."""
    video = make_video(tmp_path / "v.mp4", photo_frames[:4])
    code = textwrap.dedent(f"""
        import ctypes, json, os
        libc = ctypes.CDLL(None)
        class MallInfo2(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                        "fsmblks", "uordblks", "fordblks", "keepcost")]
        libc.mallinfo2.restype, libc.malloc.restype, libc.free.argtypes = MallInfo2, ctypes.c_void_p, [ctypes.c_void_p]
        def mapped_by_itself():  # a 64 MiB block: above glibc's own mmap threshold, below tune_process's
            before = libc.mallinfo2().hblkhd
            block = libc.malloc(64 << 20)
            mapped = libc.mallinfo2().hblkhd - before >= 64 << 20
            libc.free(block)
            return mapped
        def children():
            stats = [open(f"/proc/{{p}}/stat").read() for p in os.listdir("/proc") if p.isdigit()
                     and os.path.exists(f"/proc/{{p}}/stat")]
            return [s.split()[0] for s in stats if s.rsplit(")", 1)[1].split()[1] == str(os.getpid())]
        import torch
        threads = torch.get_num_threads()
        import facecrop.runtime as rt
        bundle = rt.load_bundle({str(bundle_path)!r})
        for name in ("a", "b"):
            rt.process_video(bundle, {str(video)!r}, {str(tmp_path)!r} + f"/{{name}}.npz", progress=False)
        after = dict(mapped=mapped_by_itself(), threads=torch.get_num_threads() == threads, children=children())
        from facecrop.runtime.tuning import tune_process
        tune_process()
        print(json.dumps(dict(after, tuned_mapped=mapped_by_itself())))
    """)
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert out == {"mapped": True, "threads": True, "children": [], "tuned_mapped": False}, out


def test_runtime_reads_as_modules_of_one_job():
    import ast

    import facecrop.runtime as runtime

    for path in sorted((REPO / "runtime").glob("*.py")):
        source = path.read_text()
        doc = ast.get_docstring(ast.parse(source))
        assert doc and len(doc.splitlines()[0]) <= 110, f"{path.name}: its docstring's first line says its job"
    # The public API fits on one screen of the package's docstring, every exported name in it.
    doc = runtime.__doc__
    assert len(doc.splitlines()) <= 40
    assert all(name in doc for name in runtime.__all__), [n for n in runtime.__all__ if n not in doc]


# --- load_bundle ------------------------------------------------------------------------------

def test_load_bundle(bundle):
    assert bundle.side_bounds == (16, 4096)
    assert bundle.output_names == ["valid", "conf", "bbox", "lms", "overflow", "crop_mat", "imgs_crop"]
    assert bundle.golden_diffs["bbox"] <= 1e-3 * 1280 / 224 and bundle.golden_diffs["imgs_crop"] <= 1
    assert [c["size"] for c in bundle.manifest["golden"]["cases"]] == [[1280, 886], [384, 512]]
    for height, width in [(240, 320), (17, 4096), (1080, 1920), (501, 333)]:  # one bundle, any size
        out = bundle(torch.zeros(3, 3, height, width, dtype=torch.uint8))
        assert out["valid"].shape == (3, 32) and not out["valid"].any()
    with pytest.raises(ValueError, match=r"uint8 \[B, 3, H, W\].*float32"):
        bundle(torch.zeros(1, 3, 240, 320))
    for height, width in [(15, 320), (240, 4097), (1, 1), (0, 64)]:
        with pytest.raises(ValueError, match=f"frame size {width}x{height} is outside the bundle's bounds"):
            bundle(torch.zeros(1, 3, height, width, dtype=torch.uint8))


def copy_bundle(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def edit_manifest(path, **changes):
    m = json.loads((path / "manifest.json").read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            m[section][field] = value
        else:
            m[section] = value
    (path / "manifest.json").write_text(json.dumps(m))


def test_tampered_artifact(bundle_path, tmp_path):
    path = copy_bundle(bundle_path, tmp_path / "b")
    data = bytearray((path / "model.pt2").read_bytes())
    data[len(data) // 2] ^= 1
    (path / "model.pt2").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match the SHA-256.*tampered"):
        load_bundle(path)


def test_future_and_old_formats(bundle_path, tmp_path):
    path = copy_bundle(bundle_path, tmp_path / "b")
    edit_manifest(path, format_version="4.0")
    with pytest.raises(BundleError, match="format version 4.0, newer than this runtime's 3.2"):
        load_bundle(path)
    edit_manifest(path, format_version="1.0")  # one fixed frame size: re-export
    with pytest.raises(BundleError, match="format version 1.0, which took one fixed frame size.*re-export"):
        load_bundle(path)
    edit_manifest(path, format_version="3.7")  # a newer minor version stays loadable
    assert load_bundle(path).side_bounds == (16, 4096)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_bundle_for_another_device(bundle_path, tmp_path):
    path = copy_bundle(bundle_path, tmp_path / "b")
    with pytest.raises(BundleError, match="built for device 'cpu' and cannot run on 'cuda'"):
        load_bundle(path, device="cuda")
    edit_manifest(path, device="cuda")
    with pytest.raises(BundleError, match="built for CUDA, but this machine has no usable CUDA"):
        load_bundle(path)
    edit_manifest(path, device="cpu", backend="tensorrt")
    with pytest.raises(BundleError, match="TensorRT bundles run on CUDA only"):
        load_bundle(path)


def test_golden_mismatch(bundle_path, tmp_path):
    path = copy_bundle(bundle_path, tmp_path / "b")
    golden = npz(path / "golden.npz")
    golden["case1.output.bbox"] = golden["case1.output.bbox"] + 0.01
    np.savez(path / "golden.npz", **golden)
    edit_manifest(path, golden__sha256=sha256_file(path / "golden.npz"))
    with pytest.raises(BundleError, match="golden self-check.*bbox: difference 0.01"):
        load_bundle(path)


class Evil:
    marker = None

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def evil_pickle(marker):
    Evil.marker = str(marker)
    return pickle.dumps(Evil())


def rezip(src, dst, replace):
    """Copy zip ``src`` to ``dst`` replacing members for which ``replace(name)`` returns bytes."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            new = replace(info.filename)
            zout.writestr(info, zin.read(info.filename) if new is None else new)


def plant(path, file, data):
    (path / file).write_bytes(data)
    key = "artifact" if file != "golden.npz" else "golden"
    edit_manifest(path, **{f"{key}__sha256": sha256_file(path / file)})  # the attacker fixes the hash too


def test_malicious_pickles_never_run(bundle_path, tmp_path):
    marker = tmp_path / "PWNED"
    evil = evil_pickle(marker)
    buffer = io.BytesIO()
    torch.save({"x": Evil()}, buffer)  # a torch zip-format pickle with the payload inside
    evil_torch = buffer.getvalue()
    cases = {}
    cases["artifact is a pickle"] = ("model.pt2", evil)
    cases["golden is a pickle"] = ("golden.npz", evil)
    objects = io.BytesIO()
    np.savez(objects, **{"case0.input.frames": np.array([Evil()], dtype=object)})
    cases["golden holds an object array"] = ("golden.npz", objects.getvalue())
    rezip(bundle_path / "model.pt2", tmp_path / "s.pt2",
          lambda n: evil_torch if "/data/sample_inputs/" in n else None)
    cases["pt2 sample inputs"] = ("model.pt2", (tmp_path / "s.pt2").read_bytes())

    def pickled_weight(name):
        if name.endswith("model_weights_config.json"):
            with zipfile.ZipFile(bundle_path / "model.pt2") as z:
                config = json.loads(z.read(name))
            next(iter(config["config"].values()))["use_pickle"] = True
            return json.dumps(config).encode()
        return evil_torch if name.endswith("/weights/weight_0") else None

    rezip(bundle_path / "model.pt2", tmp_path / "w.pt2", pickled_weight)
    cases["pt2 pickled weight"] = ("model.pt2", (tmp_path / "w.pt2").read_bytes())
    for i, (what, (file, data)) in enumerate(cases.items()):
        path = copy_bundle(bundle_path, tmp_path / f"b{i}")
        plant(path, file, data)
        with pytest.raises(BundleError):
            load_bundle(path)
        assert not marker.exists(), what
    # Control: torch.export.load itself would have run the planted sample inputs.
    subprocess.run([sys.executable, "-c", f"import sys, torch; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                    f"import test_runtime; torch.export.load({str(tmp_path / 's.pt2')!r})"], capture_output=True)
    assert marker.exists()


def test_malicious_torchscript_pickle(tmp_path):
    from test_bundle import write_standin

    path = write_standin(tmp_path, backend="torchscript")
    marker = tmp_path / "PWNED"
    rezip(path / "model.ts", tmp_path / "evil.ts", lambda n: evil_pickle(marker) if n.endswith("data.pkl") else None)
    plant(path, "model.ts", (tmp_path / "evil.ts").read_bytes())
    with pytest.raises(BundleError, match="cannot load model.ts"):
        load_bundle(path)
    assert not marker.exists()


# --- process_video ----------------------------------------------------------------------------

def test_process_video_matches_direct_calls(bundle, tmp_path, photo_frames):
    video = make_video(tmp_path / "v.mp4", photo_frames)
    out = process_video(bundle, video, tmp_path / "r.npz", batch_size=5, save_crops=True, progress=False)
    r = npz(out)
    assert sorted(r) == sorted(["frame_index", "pts_seconds", "valid", "conf", "bbox", "lms", "crop_mat", "overflow",
                                "imgs_crop", "crop_frame_index", "crop_slot", "face_idx", "track_frames", "track_kept",
                                "rotation", "face_size", "sharpness", "yaw", "pitch", "roll", "tube_idx", "tube_drop",
                                "tube_face", "tube_number", "tube_start", "tube_stop", "tube_frame_tube",
                                "tube_frame_index", "tube_frame_slot", "tube_crop_mat", "tube_options", "crop_size",
                                "video"])
    assert (r["rotation"] == 0).all()
    assert np.array_equal(r["frame_index"], np.arange(12))
    assert np.allclose(r["pts_seconds"], np.arange(12) / 25)
    frames, _ = decode_all(video)
    assert frames.shape[2:] == (360, 640)  # the video's own size reaches the module: no second resize
    want = {k: v.numpy() for k, v in bundle(frames).items()}
    assert np.array_equal(r["valid"], want["valid"]) and np.array_equal(r["overflow"], want["overflow"])
    assert r["valid"][3].sum() == 0 and (r["valid"][[0, 1, 2, 4, 5]].sum(1) >= 1).all()  # black frame 3: no face
    assert (r["valid"][6:].sum(1) >= 4).all()  # t1's faces
    v = want["valid"]
    # process_video runs the module on one core fewer (the decoder has its own), and oneDNN's sums
    # then round in another order: a few float32 ulps, nothing more.
    for key in ("conf", "bbox", "lms", "crop_mat"):
        assert np.allclose(r[key], want[key], rtol=1e-5, atol=1e-5 * np.abs(want[key]).max()), key
    assert len(r["imgs_crop"]) == v.sum() and np.abs(r["imgs_crop"].astype(int) - want["imgs_crop"][v]).max() <= 1
    assert np.array_equal(r["valid"][r["crop_frame_index"], r["crop_slot"]], np.ones(v.sum(), bool))
    assert not (tmp_path / "r.npz.partial").exists()


@pytest.mark.parametrize("kind", ["gray", "yuv420p10le", "odd"])
def test_pixel_formats_and_sizes(bundle, tmp_path, photo_frames, kind):
    frames = photo_frames[6:10]
    if kind == "gray":
        video = make_video(tmp_path / "v.mkv", frames, codec="ffv1", pix_fmt="gray")
    elif kind == "yuv420p10le":
        video = make_video(tmp_path / "v.mp4", frames, pix_fmt="yuv420p10le")
    else:
        video = make_video(tmp_path / "v.mkv", frames[:, :357, :611], codec="ffv1", pix_fmt="yuv444p")
    with av.open(str(video)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == {"odd": "yuv444p"}.get(kind, kind)
    r = npz(process_video(bundle, video, tmp_path / "r.npz", batch_size=3, progress=False))
    assert np.array_equal(r["frame_index"], np.arange(4))
    # The same content as clean 8-bit RGB: faces found in the same places (in source pixels).
    clean = frames[:, :357, :611] if kind == "odd" else frames
    if kind == "gray":
        clean = np.repeat(np.round(clean @ [0.299, 0.587, 0.114]).astype(np.uint8)[..., None], 3, -1)
    ref = make_video(tmp_path / "ref.mkv", clean, codec="ffv1", pix_fmt="bgr0")
    e = npz(process_video(bundle, ref, tmp_path / "e.npz", progress=False))
    assert (e["valid"].sum(1) >= 5).all()
    # Conversions differ slightly (the ramp to 10 bits, BT.601 grey), so a marginal face may come or
    # go, but nearly every face must be found again within 3 px.
    for i in range(4):
        want, got = e["bbox"][i][e["valid"][i]], r["bbox"][i][r["valid"][i]]
        nearest = np.abs(want[:, None] - got[None]).max(-1).min(1)  # [faces in the clean video]
        assert (nearest < 3).mean() >= 0.8, nearest


def test_frame_size_changes_mid_stream(bundle, tmp_path, photo_frames):
    # MPEG-TS streams may change resolution mid-stream; two concatenated ones do exactly that.
    small = np.ascontiguousarray(photo_frames[6:9, :288, :512])
    first = make_video(tmp_path / "a.ts", photo_frames[:5], fmt="mpegts")
    second = make_video(tmp_path / "b.ts", small, fmt="mpegts")
    video = tmp_path / "both.ts"
    video.write_bytes(first.read_bytes() + second.read_bytes())
    frames = []
    with av.open(str(video)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert [f.shape[:2] for f in frames] == [(360, 640)] * 5 + [(288, 512)] * 3
    r = npz(process_video(bundle, video, tmp_path / "r.npz", batch_size=4, progress=False))
    assert np.array_equal(r["frame_index"], np.arange(8))
    # Each frame's results are those of the module on that frame at its own size.
    for i, frame in enumerate(frames):
        want = bundle(torch.from_numpy(frame).permute(2, 0, 1)[None].contiguous())
        for key in ("valid", "bbox", "lms", "crop_mat"):
            assert np.allclose(r[key][i], want[key][0].numpy(), atol=1e-3 * max(frame.shape) / 224), (i, key)
    assert r["valid"][5:].sum() >= 3


def test_frame_outside_the_bounds(bundle, tmp_path, photo_frames):
    tiny = make_video(tmp_path / "tiny.mkv", np.ascontiguousarray(photo_frames[:3, :12, :64]), codec="ffv1")
    with pytest.raises(VideoError, match=r"frame 0 is 64x12, outside the bundle's 16-4096 px a side"):
        process_video(bundle, tiny, tmp_path / "r.npz", progress=False)
    assert not (tmp_path / "r.npz").exists()


def test_variable_frame_rate(bundle, tmp_path, photo_frames):
    pts = [0, 40, 80, 200, 210, 500, 540, 541, 900, 1000, 1001, 1500]
    video = make_video(tmp_path / "vfr.mkv", photo_frames, codec="ffv1", pts_ms=pts)
    r = npz(process_video(bundle, video, tmp_path / "r.npz", batch_size=4, progress=False))
    assert np.array_equal(r["frame_index"], np.arange(12))
    assert np.array_equal(r["pts_seconds"], np.array(pts) / 1000)


def test_resume_after_injected_failure(bundle, tmp_path, photo_frames):
    video = make_video(tmp_path / "v.mp4", photo_frames)
    full = npz(process_video(bundle, video, tmp_path / "full.npz", batch_size=2, progress=False))

    class FailsAfter:
        def __init__(self, n):
            self.n, self.side_bounds, self.output_names = n, bundle.side_bounds, bundle.output_names
            self.manifest, self.device_type, self.warm_up = bundle.manifest, bundle.device_type, bundle.warm_up
            self.parallel = 2  # two batches in flight, as on a CPU with aoti: the batches before the failure are kept

        def run_frames(self, frames):
            self.n -= 1
            if self.n < 0:
                raise RuntimeError("injected failure")
            return bundle.run_frames(frames)

    out = tmp_path / "r.npz"
    with pytest.raises(RuntimeError, match="injected"):
        process_video(FailsAfter(3), video, out, batch_size=2, progress=False, checkpoint_frames=2)
    assert not out.exists()
    meta = json.loads((tmp_path / "r.npz.partial" / "meta.json").read_text())
    assert sum(c["frames"] for c in meta["chunks"]) == 6
    with pytest.raises(VideoError, match="--resume"):
        process_video(bundle, video, out, batch_size=2, progress=False)
    process_video(bundle, video, out, batch_size=3, progress=False, resume=True)
    r = npz(out)
    assert sorted(r) == sorted(full)
    for k in full:
        assert same(r[k], full[k]), k
    assert not (tmp_path / "r.npz.partial").exists()


def test_resume_after_kill(bundle_path, tmp_path, photo_frames):
    video = make_video(tmp_path / "v.mp4", np.concatenate([photo_frames] * 3))
    out = tmp_path / "r.npz"
    code = textwrap.dedent(f"""
        import time, facecrop.runtime as rt
        bundle = rt.load_bundle({str(bundle_path)!r})
        slow = lambda: None
        slow.__dict__.update(side_bounds=bundle.side_bounds, output_names=bundle.output_names, manifest=bundle.manifest,
                             device_type=bundle.device_type, warm_up=bundle.warm_up,
                             run_frames=lambda frames: (time.sleep(0.3), bundle.run_frames(frames))[1])
        rt.process_video(slow, {str(video)!r}, {str(out)!r}, batch_size=2, progress=False, checkpoint_frames=2)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code])
    meta = tmp_path / "r.npz.partial" / "meta.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (meta.exists() and len(json.loads(meta.read_text())["chunks"]) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sum(c["frames"] for c in json.loads(meta.read_text())["chunks"])
    assert 6 <= done < 36 and not out.exists()
    bundle = load_bundle(bundle_path)
    r = npz(process_video(bundle, video, out, batch_size=4, progress=False, resume=True))
    full = npz(process_video(bundle, video, tmp_path / "full.npz", batch_size=4, progress=False))
    assert np.array_equal(r["frame_index"], np.arange(36))
    for k in full:
        assert same(r[k], full[k]), k


# --- bad input --------------------------------------------------------------------------------

def test_truncated_and_corrupt_video(bundle, tmp_path, photo_frames):
    video = make_video(tmp_path / "v.mkv", np.concatenate([photo_frames] * 2), codec="ffv1")
    full = npz(process_video(bundle, video, tmp_path / "full.npz", batch_size=4, progress=False))
    data = video.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    corrupt = tmp_path / "corrupt.mkv"
    corrupt.write_bytes(data[: len(data) // 2] + b"\x55" * 5000 + data[len(data) // 2 + 5000:])
    for i, bad in enumerate([cut, corrupt]):
        out = tmp_path / f"r{i}.npz"
        with pytest.raises(VideoError, match=r"decoding (stopped|failed) at frame (\d+).*kept in") as err:
            process_video(bundle, bad, out, batch_size=4, progress=False)
        assert not out.exists()
        failed_at = int(re.search(r"at frame (\d+)", str(err.value)).group(1))
        assert 3 <= failed_at < 24
        partial = tmp_path / f"r{i}.npz.partial"
        kept = [npz(p) for p in sorted(partial.glob("chunk_*.npz"))]
        kept = {k: np.concatenate([c[k] for c in kept]) for k in kept[0] if not k.startswith("state.")}  # not: the tracker
        n = len(kept["frame_index"])
        assert n <= failed_at and np.array_equal(kept["frame_index"], np.arange(n))
        assert np.array_equal(kept["bbox"], full["bbox"][:n])


def test_zero_frames_not_a_video_missing(bundle, tmp_path):
    zero = tmp_path / "zero.avi"
    with av.open(str(zero), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    for video, message in [(zero, "contains no video frames"), (text, "cannot open .* as a video"),
                           (tmp_path / "missing.mp4", "not found")]:
        with pytest.raises(VideoError, match=message):
            process_video(bundle, video, tmp_path / "r.npz", progress=False)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.mp4", "zero.avi"]


def test_unwritable_output_is_checked_before_decoding(bundle, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")  # would fail at decoding: the output error must come first
    for output, message in [(tmp_path / "no" / "r.npz", "does not exist"), (blocker / "r.npz", "does not exist"),
                            (tmp_path, "is a folder")]:
        with pytest.raises(VideoError, match=message):
            process_video(bundle, notes, output, progress=False)


# --- CLI --------------------------------------------------------------------------------------

def test_cli_run_with_overlay(bundle_path, tmp_path, photo_frames, capsys):
    video = make_video(tmp_path / "v.mp4", photo_frames)
    rc = main(["run", str(bundle_path), str(video), "-o", str(tmp_path / "r.npz"), "--batch-size", "4",
               "--save-crops", "--visualize", str(tmp_path / "overlay.mp4")])
    assert rc == 0
    err = capsys.readouterr().err
    assert "golden self-check passed" in err and "12/12 frames" in err and "frames/s" in err
    r = npz(tmp_path / "r.npz")
    assert len(r["frame_index"]) == 12 and len(r["imgs_crop"]) == r["valid"].sum()
    with av.open(str(tmp_path / "overlay.mp4")) as c:
        overlay = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(overlay) == 12 and overlay[0].shape == (360, 640, 3)
    # Box edges are drawn: pixels on the first face's top edge differ from the source frame.
    x1, y1, x2, _ = np.round(r["bbox"][0, 0]).astype(int)
    assert np.abs(overlay[0][y1, x1:x2].astype(int) - photo_frames[0][y1, x1:x2]).mean() > 30


def test_cli_errors_exit_nonzero(bundle_path, tmp_path, capsys):
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    assert main(["run", str(bundle_path), str(notes), "-o", str(tmp_path / "r.npz")]) == 1
    assert "cannot open" in capsys.readouterr().err
    path = copy_bundle(bundle_path, tmp_path / "b")
    edit_manifest(path, format_version="9.0")
    assert main(["run", str(path), str(notes), "-o", str(tmp_path / "r.npz")]) == 1
    assert "newer than this runtime" in capsys.readouterr().err
    assert not (tmp_path / "r.npz").exists()

