#!/usr/bin/env bash
# Bring what benchmarks/gpu_check.py needs to a GPU machine that has no network.
#
#   bash benchmarks/gpu_wheels.sh [DEST]        # default DEST: .whl (git-ignored)
#
# The GPU machine has Python 3.12 with torch, torchvision, onnx, onnxruntime, numpy, pillow,
# scikit-image and tqdm, but not PyAV, onnx2torch, kornia or kornia-rs: their wheels for
# manylinux x86-64 go to DEST with the project's own wheel (no dependencies: each one the
# machine lacks is named here), and the detector the check runs on goes to DEST/models.
# PY_VERSION=3.11 downloads for another Python (the offline-install rehearsal on this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
py_version=${PY_VERSION:-3.12}
python=${PYTHON:-python3}
models=${FACECROP_MODEL_DIR:-../shared/models}
limit_mib=56  # the device copies at most 64 MiB with the repository

rm -rf "$dest" && mkdir -p "$dest/models"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$py_version" --implementation cp \
  "${platforms[@]}" -d "$dest" av==18.1.0 onnx2torch==1.5.15 kornia==0.9.0 kornia-rs==0.2.0
"$python" -m pip wheel -q --no-deps -w "$dest" .
for name in det_2.5g det_500m; do
  [ -f "$models/$name.onnx" ] && cp "$models/$name.onnx" "$dest/models/"
done

size_mib=$(du -sm "$dest" | cut -f1)
ls -l "$dest" "$dest/models"
echo "total: ${size_mib} MiB (limit ${limit_mib} MiB)"
if [ "$size_mib" -gt "$limit_mib" ]; then
  echo "gpu_wheels: $dest is over ${limit_mib} MiB and would not travel with the repository" >&2
  exit 1
fi
cat <<MSG

On the GPU machine, from the repository root (carry $dest):
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $dest/*.whl && export PYTHONPATH=/tmp/site
  FACECROP_MODEL_DIR=$dest/models python3 benchmarks/gpu_check.py --device cuda --out "\$OUT"
MSG
