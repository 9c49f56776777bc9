"""Medusa's own test cases (v0.0.6) pass on facecrop with only their imports changed.

``tests/medusa/medusa_*.py`` are Medusa's ``tests/conftest.py``, ``test_detect.py``, ``test_crop.py``,
``test_landmark.py``, ``test_videoloader.py`` and ``test_tracking.py``, verbatim (BSD-3-Clause, (c) the
Medusa authors), kept under other names so that this suite does not collect them as they are. Here
they are copied into a temporary folder under their own names, ``medusa`` becomes ``facecrop`` in
their import lines (nothing else changes), and pytest runs them in a subprocess. As in the tutorial
test, the real det_500m stands in for det_10g (``$FACECROP_DETECTOR``) and stand-in landmark nets
for the absent real weights (``$FACECROP_MODEL_OVERRIDES``).

Left out: the CUDA cases (no GPU here) and ``YunetDetector``'s (OpenCV's YuNet is not part of
facecrop: making one raises). Medusa's ``test_data.py`` is left out whole: it imports FLAME and
4-D reconstruction data, which facecrop does not have, at module level.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from conftest import REPO, model_dir, real_model
from facecrop.testing import build_landmark_onnx

pytestmark = pytest.mark.slow

MEDUSA_TESTS = REPO / "tests" / "medusa"
FILES = ("conftest", "test_detect", "test_crop", "test_landmark", "test_videoloader", "test_tracking")


def as_facecrop(source: str) -> str:
    return re.sub(r"^(\s*(?:from|import)\s+)medusa\b", r"\1facecrop", source, flags=re.M)


def test_medusas_test_cases_pass(tmp_path):
    for name in FILES:
        (tmp_path / f"{name}.py").write_text(as_facecrop((MEDUSA_TESTS / f"medusa_{name}.py").read_text()))
    for folder in ("crop", "detection", "landmark"):  # where Medusa's tests write their pictures
        (tmp_path / "test_viz" / folder).mkdir(parents=True)
    stand_ins = {kind: build_landmark_onnx(tmp_path / f"standin_{kind}.onnx", kind=kind) for kind in ("2d106det", "1k3d68")}
    env = {**os.environ, "FACECROP_DETECTOR": str(real_model("det_500m").absolute()),
           "FACECROP_MODEL_DIR": str(model_dir().absolute()), "FACECROP_CACHE_DIR": str(tmp_path / "cache"),
           "FACECROP_MODEL_OVERRIDES": ",".join(f"{k}={v}" for k, v in stand_ins.items())}
    env.pop("GITHUB_ACTIONS", None)  # Medusa's tests return early there; every case must run here
    report = tmp_path / "report.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not cuda and not Yunet",
                           f"--junitxml={report}", *[f"{n}.py" for n in FILES[1:]]],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:]
    cases = ET.parse(report).getroot().iter("testcase")
    outcomes = {f"{c.get('classname')}::{c.get('name')}": [child.tag for child in c] for c in cases}
    assert all(not result for result in outcomes.values()), {k: v for k, v in outcomes.items() if v}
    by_file = {name: sum(key.startswith(name) for key in outcomes) for name in FILES[1:]}
    # Every module's CPU cases ran and passed (90 of Medusa's 140; the rest are CUDA's and YuNet's).
    assert by_file == {"test_detect": 16, "test_crop": 32, "test_landmark": 32, "test_videoloader": 6,
                       "test_tracking": 4}, by_file


def test_yunet_is_named_but_not_provided():
    from facecrop.detect import YunetDetector

    with pytest.raises(NotImplementedError, match="not part of facecrop.*SCRFDetector"):
        YunetDetector()
