"""The model zoo against a real local HTTP server and the real weights in shared/models.

The download tests run ``fetch_pack`` unchanged against ``http.server`` on
127.0.0.1, serving a pack zip built in the test from small fake ``.onnx``
payloads whose hashes go into a test :class:`PackSpec`.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import shutil
import socket
import struct
import threading
import zipfile
from pathlib import Path

import pytest

from conftest import IN_CI, model_dir
from facecrop import cli, zoo

# The real weights live in FACECROP_MODEL_DIR (default ../shared/models), as for every real-weight test;
# in CI they must be there, so these tests run (and fail without them) instead of skipping.
SHARED_MODELS = model_dir()
needs_shared = pytest.mark.skipif(not (SHARED_MODELS / "det_500m.onnx").is_file() and not IN_CI,
                                  reason=f"real SCRFD weights not in {SHARED_MODELS} (FACECROP_MODEL_DIR)")

PAYLOADS = {"det_fake": b"fake detector " * 1000, "lmk_fake": b"fake landmarks " * 3000}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buf.getvalue()


def _spec(zip_data: bytes | None, files: dict[str, bytes] = PAYLOADS, name: str = "fakepack") -> zoo.PackSpec:
    return zoo.PackSpec(name, {n: _sha(d) for n, d in files.items()},
                        sha256=_sha(zip_data) if zip_data is not None else None)


class _Server:
    """Serves ``routes[path] = bytes``; paths in ``truncate`` send half the body and hang up
    (with a TCP reset if ``reset``)."""

    def __init__(self):
        self.routes: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.reset = False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in server.truncate:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    if server.reset:
                        # SO_LINGER 0: close() sends a TCP reset instead of an orderly end of stream.
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        self.connection.close()
                    else:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = _Server()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Keep the user's ~/.facecrop and ~/.insightface and the environment out of every test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(zoo.MODEL_DIR_ENV, raising=False)
    monkeypatch.delenv(zoo.ZOO_URL_ENV, raising=False)
    return home


def _refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port once the socket is closed: connecting is refused.
    return f"http://127.0.0.1:{port}"


def _entries(model_dir: Path) -> list[str]:
    """Everything left in model_dir (a pack folder, a zip, temp files)."""
    return sorted(p.name for p in model_dir.iterdir()) if model_dir.exists() else []


# ---------------------------------------------------------------------------
# fetch_pack


def test_fetch_good_pack_extracts_and_verifies(server, tmp_path):
    # One file at the top level, one inside a folder: both layouts occur in InsightFace zips.
    data = _zip_bytes({"det_fake.onnx": PAYLOADS["det_fake"], "fakepack/lmk_fake.onnx": PAYLOADS["lmk_fake"],
                       "README.txt": b"not extracted"})
    server.routes["/fakepack.zip"] = data
    model_dir = tmp_path / "models"
    target = zoo.fetch_pack(_spec(data), model_dir=model_dir, base_url=server.url, progress=False)
    assert target == model_dir / "fakepack"
    assert sorted(p.name for p in target.iterdir()) == ["det_fake.onnx", "lmk_fake.onnx"]
    for name, payload in PAYLOADS.items():
        assert (target / f"{name}.onnx").read_bytes() == payload
    # Only the pack folder remains: no zip, no temp files.
    assert _entries(model_dir) == ["fakepack"]
    # A second fetch finds the verified folder and does not download again.
    server.routes.clear()
    assert zoo.fetch_pack(_spec(data), model_dir=model_dir, base_url=server.url, progress=False) == target


def test_fetch_uses_env_url_and_model_dir(server, tmp_path, monkeypatch):
    data = _zip_bytes({f"{n}.onnx": d for n, d in PAYLOADS.items()})
    server.routes["/fakepack.zip"] = data
    monkeypatch.setenv(zoo.ZOO_URL_ENV, server.url + "/")
    monkeypatch.setenv(zoo.MODEL_DIR_ENV, str(tmp_path / "envdir"))
    assert zoo.pack_url("buffalo_l") == server.url + "/buffalo_l.zip"
    target = zoo.fetch_pack(_spec(data), progress=False)
    assert target == tmp_path / "envdir" / "fakepack"
    assert (target / "det_fake.onnx").is_file()


def test_fetch_wrong_zip_sha_leaves_nothing(server, tmp_path):
    data = _zip_bytes({f"{n}.onnx": d for n, d in PAYLOADS.items()})
    server.routes["/fakepack.zip"] = data
    spec = zoo.PackSpec("fakepack", {n: _sha(d) for n, d in PAYLOADS.items()}, sha256="0" * 64)
    model_dir = tmp_path / "models"
    with pytest.raises(zoo.ModelIntegrityError, match="SHA-256") as info:
        zoo.fetch_pack(spec, model_dir=model_dir, base_url=server.url, progress=False)
    assert _sha(data) in str(info.value) and "0" * 64 in str(info.value)
    assert _entries(model_dir) == []


def test_fetch_tampered_member_leaves_nothing(server, tmp_path):
    tampered = dict(PAYLOADS, lmk_fake=PAYLOADS["lmk_fake"][:-1] + b"X")
    data = _zip_bytes({f"{n}.onnx": d for n, d in tampered.items()})
    server.routes["/fakepack.zip"] = data
    # The zip's own hash matches, so only the per-file check can catch the tampered member.
    spec = zoo.PackSpec("fakepack", {n: _sha(d) for n, d in PAYLOADS.items()}, sha256=_sha(data))
    model_dir = tmp_path / "models"
    with pytest.raises(zoo.ModelIntegrityError, match="lmk_fake.onnx .*has SHA-256"):
        zoo.fetch_pack(spec, model_dir=model_dir, base_url=server.url, progress=False)
    assert _entries(model_dir) == []


def test_fetch_zip_lacking_a_file(server, tmp_path):
    data = _zip_bytes({"det_fake.onnx": PAYLOADS["det_fake"]})
    server.routes["/fakepack.zip"] = data
    model_dir = tmp_path / "models"
    with pytest.raises(zoo.ModelIntegrityError, match="lacks lmk_fake.onnx"):
        zoo.fetch_pack(_spec(data), model_dir=model_dir, base_url=server.url, progress=False)
    assert _entries(model_dir) == []


@pytest.mark.parametrize("reset", [False, True], ids=["end-of-stream", "tcp-reset"])
@pytest.mark.parametrize("pinned_zip", [True, False], ids=["pinned-zip", "unpinned-zip"])
def test_fetch_connection_dropped_midway_leaves_nothing(server, tmp_path, pinned_zip, reset):
    # Large enough that the transfer is still going when the server hangs up.
    files = {"det_fake": os.urandom(3 << 20), "lmk_fake": PAYLOADS["lmk_fake"]}
    data = _zip_bytes({f"{n}.onnx": d for n, d in files.items()})
    server.routes["/fakepack.zip"] = data
    server.truncate.add("/fakepack.zip")
    server.reset = reset
    model_dir = tmp_path / "models"
    spec = _spec(data if pinned_zip else None, files)
    with pytest.raises(zoo.DownloadError, match="fakepack.zip") as info:
        zoo.fetch_pack(spec, model_dir=model_dir, base_url=server.url, progress=False)
    assert server.url in str(info.value)
    assert _entries(model_dir) == []


def test_fetch_unpinned_garbage_zip(server, tmp_path):
    # With no zip pin, a body that is not a zip is caught when it is opened.
    server.routes["/fakepack.zip"] = b"<html>rate limited</html>"
    model_dir = tmp_path / "models"
    with pytest.raises(zoo.ModelIntegrityError, match="not a readable zip"):
        zoo.fetch_pack(_spec(None), model_dir=model_dir, base_url=server.url, progress=False)
    assert _entries(model_dir) == []


def test_fetch_http_404(server, tmp_path):
    with pytest.raises(zoo.DownloadError, match="HTTP 404"):
        zoo.fetch_pack(_spec(None), model_dir=tmp_path / "m", base_url=server.url, progress=False)
    assert _entries(tmp_path / "m") == []


def test_fetch_offline_message_then_hand_placed_zip(tmp_path):
    url = _refused_url()
    data = _zip_bytes({f"{n}.onnx": d for n, d in PAYLOADS.items()})
    model_dir = tmp_path / "models"
    with pytest.raises(zoo.DownloadError) as info:
        zoo.fetch_pack(_spec(data), model_dir=model_dir, base_url=url, progress=False)
    message = str(info.value)
    assert f"{url}/fakepack.zip" in message
    assert "failed" in message and "by hand" in message
    assert str(model_dir / "fakepack.zip") in message
    assert _entries(model_dir) == []
    # Following the message: the zip saved by hand is verified and installed with no network.
    (model_dir / "fakepack.zip").write_bytes(data)
    target = zoo.fetch_pack(_spec(data), model_dir=model_dir, base_url=url, progress=False)
    assert (target / "lmk_fake.onnx").read_bytes() == PAYLOADS["lmk_fake"]
    assert _entries(model_dir) == ["fakepack"]


def test_fetch_replaces_corrupt_pack_folder(server, tmp_path):
    data = _zip_bytes({f"{n}.onnx": d for n, d in PAYLOADS.items()})
    server.routes["/fakepack.zip"] = data
    model_dir = tmp_path / "models"
    (model_dir / "fakepack").mkdir(parents=True)
    (model_dir / "fakepack" / "det_fake.onnx").write_bytes(b"truncated")
    target = zoo.fetch_pack(_spec(data), model_dir=model_dir, base_url=server.url, progress=False)
    assert (target / "det_fake.onnx").read_bytes() == PAYLOADS["det_fake"]
    assert _entries(model_dir) == ["fakepack"]


def test_fetch_unknown_pack():
    with pytest.raises(ValueError, match="unknown pack 'buffalo_xl'.*buffalo_l"):
        zoo.fetch_pack("buffalo_xl")


def test_cli_fetch_rejects_forged_official_pack(server, tmp_path, monkeypatch, capsys):
    # A zip that is not the official buffalo_sc (its pinned hash) must not be installed.
    server.routes["/buffalo_sc.zip"] = _zip_bytes({"det_500m.onnx": b"x", "w600k_mbf.onnx": b"y"})
    monkeypatch.setenv(zoo.ZOO_URL_ENV, server.url)
    model_dir = tmp_path / "models"
    assert cli.main(["models", "fetch", "buffalo_sc", "--model-dir", str(model_dir)]) == 1
    err = capsys.readouterr().err
    assert "facecrop: error:" in err and zoo.PACKS["buffalo_sc"].sha256 in err
    assert _entries(model_dir) == []


def test_cli_fetch_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(zoo.ZOO_URL_ENV, _refused_url())
    assert cli.main(["models", "fetch", "buffalo_l", "--model-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "buffalo_l.zip failed" in err and "by hand" in err


# ---------------------------------------------------------------------------
# resolve_model


@needs_shared
@pytest.mark.parametrize("name", ["det_500m", "det_2.5g", "scrfd_500m_bnkps_640"])
def test_resolve_real_models_by_name(name):
    path = zoo.resolve_model(name, model_dir=SHARED_MODELS)
    assert path == (SHARED_MODELS / f"{name}.onnx").absolute()
    assert zoo.sha256_file(path) == zoo.pinned_sha256(name)


@needs_shared
def test_resolve_by_path_and_env(monkeypatch):
    path = SHARED_MODELS / "det_500m.onnx"
    assert zoo.resolve_model(path) == path.absolute()
    assert zoo.resolve_model(str(path)) == path.absolute()
    monkeypatch.setenv(zoo.MODEL_DIR_ENV, str(SHARED_MODELS))
    assert zoo.resolve_model("det_2.5g") == (SHARED_MODELS / "det_2.5g.onnx").absolute()


@needs_shared
def test_resolve_finds_pack_and_insightface_layouts(tmp_path, isolated_home):
    # <model_dir>/<pack>/<name>.onnx
    (tmp_path / "m" / "buffalo_m").mkdir(parents=True)
    shutil.copy(SHARED_MODELS / "det_2.5g.onnx", tmp_path / "m" / "buffalo_m")
    assert zoo.resolve_model("det_2.5g", tmp_path / "m") == tmp_path / "m" / "buffalo_m" / "det_2.5g.onnx"
    # ~/.insightface/models/<pack>/<name>.onnx
    insight = isolated_home / ".insightface" / "models" / "buffalo_sc"
    insight.mkdir(parents=True)
    shutil.copy(SHARED_MODELS / "det_500m.onnx", insight)
    assert zoo.resolve_model("det_500m", tmp_path / "empty") == insight / "det_500m.onnx"


@needs_shared
def test_resolve_tampered_copy(tmp_path):
    copy = tmp_path / "det_500m.onnx"
    shutil.copy(SHARED_MODELS / "det_500m.onnx", copy)
    copy.chmod(0o644)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(zoo.ModelIntegrityError) as info:
        zoo.resolve_model("det_500m", model_dir=tmp_path)
    message = str(info.value)
    assert str(copy) in message and "corrupt" in message
    assert zoo.pinned_sha256("det_500m") in message
    assert "facecrop models fetch buffalo_s" in message
    assert isinstance(info.value, ValueError)


@needs_shared
def test_resolve_truncated_copy(tmp_path):
    data = (SHARED_MODELS / "det_500m.onnx").read_bytes()
    (tmp_path / "det_500m.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(zoo.ModelIntegrityError, match="truncated"):
        zoo.resolve_model("det_500m", model_dir=tmp_path)


def test_resolve_verification_is_cached_and_invalidated(tmp_path, monkeypatch):
    calls = []
    real = zoo.sha256_file
    monkeypatch.setattr(zoo, "sha256_file", lambda p: calls.append(p) or real(p))
    payload = b"a stand-in det_10g"
    path = tmp_path / "det_10g.onnx"
    path.write_bytes(payload)
    monkeypatch.setattr(zoo, "MODELS", {**zoo.MODELS, "det_10g": zoo.ModelSpec("det_10g", _sha(payload), "")})
    assert zoo.resolve_model("det_10g", tmp_path) == path
    assert zoo.resolve_model("det_10g", tmp_path) == path
    assert len(calls) == 1
    # Rewriting the file (new mtime) must trigger a fresh check, which now fails.
    path.write_bytes(b"b stand-in det_10g")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(zoo.ModelIntegrityError):
        zoo.resolve_model("det_10g", tmp_path)
    assert len(calls) == 2


def test_resolve_missing_name(tmp_path):
    with pytest.raises(zoo.ModelNotFoundError) as info:
        zoo.resolve_model("det_10g", model_dir=tmp_path)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path / "det_10g.onnx") in message
    assert str(tmp_path / "buffalo_l" / "det_10g.onnx") in message
    assert ".insightface" in message
    assert "facecrop models fetch buffalo_l" in message and zoo.MODEL_DIR_ENV in message


def test_resolve_missing_path(tmp_path):
    with pytest.raises(zoo.ModelNotFoundError, match="nope.onnx"):
        zoo.resolve_model(tmp_path / "nope.onnx")
    with pytest.raises(zoo.ModelNotFoundError, match="neither a known model name"):
        zoo.resolve_model("det_1000g")
    with pytest.raises(zoo.ModelIntegrityError, match="not a file"):
        zoo.resolve_model(tmp_path)
    with pytest.raises(TypeError, match="name_or_path"):
        zoo.resolve_model(3)


def test_default_model_dir(monkeypatch, tmp_path, isolated_home):
    assert zoo.default_model_dir() == isolated_home / ".facecrop" / "models"
    monkeypatch.setenv(zoo.MODEL_DIR_ENV, str(tmp_path))
    assert zoo.default_model_dir() == tmp_path
    assert zoo.default_model_dir(tmp_path / "x") == tmp_path / "x"


def test_pins():
    assert zoo.pinned_sha256("det_10g") == "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91"
    assert zoo.pinned_sha256("w600k_r50") is None
    assert zoo.pinned_sha256("no_such_model") is None
    assert zoo.PACKS["buffalo_l"].files["det_10g"] == zoo.pinned_sha256("det_10g")
    assert set(zoo.PACKS["buffalo_sc"].files) == {"det_500m", "w600k_mbf"}


# ---------------------------------------------------------------------------
# facecrop models list


@needs_shared
def test_cli_list_shared_models(capsys):
    assert cli.main(["models", "list", "--model-dir", str(SHARED_MODELS)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    for name in ("det_500m", "det_2.5g", "scrfd_500m_bnkps_640"):
        assert rows[name].split()[1] == "verified"
        assert str(SHARED_MODELS / f"{name}.onnx") in rows[name]
    assert rows["det_10g"].split()[1] == "missing"
    assert rows["buffalo_l"].split()[1] == "pinned" and "not fetched" in rows["buffalo_l"]
    assert rows["buffalo_s"].split()[1] == "unpinned"


@needs_shared
def test_cli_list_corrupt_and_unpinned(tmp_path, capsys):
    data = bytearray((SHARED_MODELS / "det_500m.onnx").read_bytes())
    data[100] ^= 1
    (tmp_path / "buffalo_sc").mkdir()
    (tmp_path / "buffalo_sc" / "det_500m.onnx").write_bytes(bytes(data))
    (tmp_path / "buffalo_sc" / "w600k_mbf.onnx").write_bytes(b"recognition stand-in")
    assert cli.main(["models", "list", "--model-dir", str(tmp_path)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert rows["det_500m"].split()[1] == "corrupt"
    assert rows["w600k_mbf"].split()[1] == "unpinned"
    assert "incomplete (det_500m corrupt)" in rows["buffalo_sc"]
