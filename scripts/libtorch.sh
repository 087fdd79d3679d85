#!/usr/bin/env bash
# Provide libtorch 2.11.0 (the C++ libraries of PyPI's torch==2.11.0 cu130 wheel) at
# <repo>/.torch/libtorch, for `tch = "=0.24.0"`.
#
# Slim: only torch/lib (without the CUDA- and Python-only libraries), torch/include, and the two
# small CUDA wheels whose libraries libtorch_cpu.so NEEDS (libcudart.so.13, libcupti.so.13).
# Cached per machine in ${LIBTORCH_CACHE:-${XDG_CACHE_HOME:-~/.cache}/tch-libtorch}; idempotent:
# a second call only refreshes the symlink. See ../shared/spec/toolchain.md §2 option F.
set -euo pipefail
TORCH_VER=2.11.0
CUDART_VER=13.0.96
CUPTI_VER=13.0.85
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${LIBTORCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tch-libtorch}/$TORCH_VER-cu130
PY=${PYTHON:-python3}

if [ ! -f "$CACHE/.complete" ]; then
  echo "libtorch: fetching torch==$TORCH_VER wheel (C++ libraries only) into $CACHE" >&2
  rm -rf "$CACHE"
  mkdir -p "$CACHE/dl"
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$CACHE/dl" \
    "torch==$TORCH_VER" "nvidia-cuda-runtime==$CUDART_VER" "nvidia-cuda-cupti==$CUPTI_VER"
  "$PY" - "$CACHE" <<'PY'
import glob, os, sys, zipfile
dest = sys.argv[1]
# CUDA- and Python-only libraries: not needed on CPU; a GPU machine uses its own torch/lib.
skip = {"libtorch_cuda.so", "libtorch_cuda_linalg.so", "libc10_cuda.so", "libtorch_nvshmem.so",
        "libtorch_python.so", "libcaffe2_nvrtc.so"}
keep = ("torch/lib/", "torch/include/", "nvidia/cu13/lib/")
for whl in sorted(glob.glob(os.path.join(dest, "dl", "*.whl"))):
    with zipfile.ZipFile(whl) as z:
        for m in z.infolist():
            n = m.filename
            if not n.startswith(keep) or os.path.basename(n) in skip:
                continue
            z.extract(m, dest)
            if ".so" in n:
                os.chmod(os.path.join(dest, n), 0o755)
PY
  # torch-sys checks this file against tch's TORCH_VERSION; wheels ship none.
  echo "$TORCH_VER+cu130" > "$CACHE/torch/build-version"
  rm -rf "$CACHE/dl"
  touch "$CACHE/.complete"
fi
mkdir -p "$ROOT/.torch"
ln -sfn "$CACHE/torch" "$ROOT/.torch/libtorch"
echo "libtorch $TORCH_VER: $ROOT/.torch/libtorch -> $CACHE/torch" >&2
