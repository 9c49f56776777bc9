"""``pip install .`` (not only ``-e``) gives both packages of the design card's layout."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_regular_install_has_both_packages(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(REPO)], check=True)
    assert (target / "facecrop" / "detection.py").is_file()
    assert (target / "facecrop" / "runtime" / "bundle.py").is_file()
    code = ("import sys, facecrop.runtime, facecrop; print(facecrop.__file__); "
            "print(sorted(m for m in ('onnx', 'onnx2torch', 'onnxruntime', 'kornia', 'insightface') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith(str(target))
    assert out[1] == "[]"
