#!/usr/bin/env bash
# Create .venv-interop with the Python reference implementations the interop tests use
# (securesystemslib for DSSE/Ed25519, rfc8785 for canonical JSON). Idempotent: reinstalls only
# when reference/interop/requirements.txt changes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/.venv-interop"
REQ="$ROOT/reference/interop/requirements.txt"
STAMP="$VENV/.requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi
echo "pyenv: creating $VENV" >&2
rm -rf "$VENV"
"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
echo "$want" > "$STAMP"
