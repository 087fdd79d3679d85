#!/usr/bin/env bash
# `make demo`: what crambench proves, end to end, on this machine.
#   fingerprint → keygen → manifest (hashes + seeds) → validate → sign → verify → tamper check
# Output goes to demo-out/ (recreated on every run; nothing else is touched).
# The end-to-end training run replaces this once `crambench run` exists.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=demo-out
if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B='' N=''; fi
step() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }

cargo build --quiet
CB=target/debug/crambench
rm -rf "$OUT"; mkdir -p "$OUT"

step "1. fingerprint of this machine (no host identifiers)"
$CB fingerprint --out "$OUT/fingerprint.json"

step "2. a signing key (private key mode 0600, never overwritten)"
$CB keygen --out "$OUT/keys" --name demo

step "3. a manifest: fingerprint, seeds derived from master seed 20221228, content hashes"
$CB manifest new --seed 20221228 \
  --label init --label data-order --label masking --label finetune/mnli/0 \
  --subject manifests/schema --subject README.md --material Cargo.lock \
  --out "$OUT/manifest.json"
$CB seeds --master 20221228 init data-order masking finetune/mnli/0
$CB hash --list manifests/schema README.md

step "4. validate against the published JSON Schema"
$CB manifest validate "$OUT/manifest.json"

step "5. sign (DSSE envelope, Ed25519)"
$CB sign --key "$OUT/keys/demo.key" "$OUT/manifest.json"

step "6. verify offline with the public key"
$CB verify "$OUT/manifest.dsse.json" --key "$OUT/keys/demo.pub"

step "7. a tampered copy must fail (exit 1)"
python3 - "$OUT/manifest.dsse.json" "$OUT/tampered.dsse.json" <<'PY'
import base64, json, sys
env = json.load(open(sys.argv[1]))
body = base64.b64decode(env["payload"]).replace(b'"master":20221228', b'"master":20221229')
env["payload"] = base64.b64encode(body).decode()
json.dump(env, open(sys.argv[2], "w"))
PY
set +e
$CB verify "$OUT/tampered.dsse.json" --key "$OUT/keys/demo.pub"
code=$?
set -e
if [ "$code" -ne 1 ]; then echo "expected exit 1 for a tampered envelope, got $code" >&2; exit 1; fi
echo "(exit $code, as expected)"

step "done"
echo "manifest:  $OUT/manifest.json"
echo "envelope:  $OUT/manifest.dsse.json"
echo "verify it: $CB verify $OUT/manifest.dsse.json --key $OUT/keys/demo.pub"
