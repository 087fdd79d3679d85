#!/usr/bin/env bash
# Headless Chromium for the browser test (tests/report_browser.rs), from Debian's `chromium`
# package: installed with apt-get when no `chromium` is on PATH (needs root or sudo; the
# package index is refreshed once, on the first install). Prints the browser's path.
# CRAMBENCH_CHROMIUM names another binary (e.g. a Chrome already installed) and skips this.
set -euo pipefail
if [ -n "${CRAMBENCH_CHROMIUM:-}" ]; then
  command -v "$CRAMBENCH_CHROMIUM"
  exit 0
fi
if command -v chromium >/dev/null 2>&1; then
  command -v chromium
  exit 0
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
    echo "chromium is not installed and this user cannot run apt-get: install Debian's chromium package (apt-get install chromium) or set CRAMBENCH_CHROMIUM" >&2
    exit 3
  fi
fi
echo "installing Debian's chromium package (headless browser for the report test)" >&2
"${SUDO[@]}" apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium >&2
command -v chromium
