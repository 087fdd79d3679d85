#!/usr/bin/env bash
# Create .venv-torch: a full PyTorch (torch==2.11.0, same version as the libtorch tch links) with
# safetensors and numpy, for reference/pytorch/ (regenerating tests/golden/ with make_goldens.py
# and the side-by-side `crambench bench train-step --compare-python`), and transformers,
# omegaconf, hydra-core and einops, which upstream cramming's architecture modules import
# (reference/upstream/: goldens and checkpoint fixtures from upstream's own code; transformers
# also loads `crambench checkpoint export` output in tests/checkpoint_transfer.rs). About 4.8 GB;
# CPU use is enough. `make test` installs it for tests/model_checkpoint.rs and
# tests/checkpoint_transfer.rs; the goldens and fixtures themselves are committed. Idempotent;
# an existing venv whose package list changed gets the new packages added in place.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/.venv-torch"
PKGS="torch==2.11.0 safetensors==0.8.0 numpy==2.4.6 transformers==4.57.6 omegaconf==2.3.0 hydra-core==1.3.2 einops==0.8.1"
STAMP="$VENV/.packages"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$PKGS" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "torchenv: creating $VENV ($PKGS)" >&2
  rm -rf "$VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
else
  echo "torchenv: updating $VENV ($PKGS)" >&2
fi
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -q --disable-pip-version-check $PKGS
echo "$PKGS" > "$STAMP"
