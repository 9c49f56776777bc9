"""One root for facecrop's own errors: the CLI says those in one line and shows anything else (a bug) whole."""

from __future__ import annotations

import pytest

from facecrop import zoo
from facecrop.cli import main
from facecrop.runtime import BundleError, VideoError
from facecrop.runtime.bundle import Bundle
from facecrop.runtime.errors import FacecropError, UsageError


@pytest.mark.parametrize("error, builtin", [(BundleError, ValueError), (VideoError, ValueError), (UsageError, ValueError),
                                            (zoo.ModelNotFoundError, FileNotFoundError),
                                            (zoo.ModelIntegrityError, ValueError), (zoo.DownloadError, RuntimeError)])
def test_every_project_error_has_one_root_and_stays_its_builtin(error, builtin):
    assert issubclass(error, FacecropError) and issubclass(error, builtin)


def test_a_bug_inside_the_run_is_shown_with_its_traceback(bundle_path, tmp_path, photo_frames, capfd, monkeypatch):
    from test_runtime import make_video

    video = make_video(tmp_path / "v.mp4", photo_frames[:4])

    def shape_error(self, frames):
        raise IndexError("index 32 is out of bounds for dimension 1 with size 32")  # as a bug deep in torch would

    monkeypatch.setattr(Bundle, "run_frames", shape_error)
    assert main(["run", str(bundle_path), str(video), "-o", str(tmp_path / "r.npz")]) == 1
    err = capfd.readouterr().err
    assert "Traceback (most recent call last)" in err and "in shape_error" in err, err
    assert "facecrop: internal error (IndexError): this is a bug in facecrop; please report it" in err


def test_users_errors_are_one_line_unless_traceback_is_asked_for(bundle_path, tmp_path, capfd):
    missing = str(tmp_path / "missing.mp4")
    assert main(["run", str(bundle_path), missing, "-o", str(tmp_path / "r.npz")]) == 1
    err = capfd.readouterr().err
    assert err.strip().splitlines() == [f"facecrop: error: input {missing} does not exist"]
    assert main(["--traceback", "run", str(bundle_path), missing, "-o", str(tmp_path / "r.npz")]) == 1
    err = capfd.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().endswith(f"input {missing} does not exist")


def test_warnings_are_said_by_whoever_warned(capfd):
    from facecrop.cli import _warn_in_one_line

    _warn_in_one_line("a warning of Ray's", UserWarning, "/v/lib/python3.11/site-packages/ray/data/context.py", 1)
    _warn_in_one_line("one of ours", UserWarning, "/work/main/runtime/video.py", 1)
    assert capfd.readouterr().err.splitlines() == ["ray: warning: a warning of Ray's", "facecrop: warning: one of ours"]
