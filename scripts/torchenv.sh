#!/usr/bin/env bash
# Create .venv-torch: a full PyTorch (torch==2.11.0, same version as the libtorch tch links) with
# safetensors and numpy, for reference/pytorch/ (regenerating tests/golden/ with make_goldens.py
# and the side-by-side `crambench bench train-step --compare-python`). About 4.6 GB; CPU use is
# enough. `make test` installs it for tests/model_checkpoint.rs (Python loads crambench's
# checkpoints into the reference); the goldens themselves are committed. Idempotent.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/.venv-torch"
PKGS="torch==2.11.0 safetensors==0.8.0 numpy==2.4.6"
STAMP="$VENV/.packages"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$PKGS" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi
echo "torchenv: creating $VENV ($PKGS)" >&2
rm -rf "$VENV"
"${PYTHON:-python3}" -m venv "$VENV"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -q --disable-pip-version-check $PKGS
echo "$PKGS" > "$STAMP"
