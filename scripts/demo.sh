#!/usr/bin/env bash
# `make demo`: the pipeline on the embedded demo data, and the proof of what ran.
#   fingerprint → data (State of the Union corpus → tokenizer → shards) → pretrain a tiny
#   crammed BERT for a short budget → fine-tune on the demo tasks → manifest of every artifact
#   → sign → verify → a tampered copy fails.
# Output goes to demo-out/ (recreated on every run; nothing else is touched). `crambench run`
# (one command for all of this) is the next step; this script strings the stages together.
# DEMO_BUDGET (default 90s) sets the pretraining budget; DEMO_TRIALS (default 1) the fine-tuning
# trials per demo task.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=demo-out
BUDGET=${DEMO_BUDGET:-90s}
TRIALS=${DEMO_TRIALS:-1}
SEED=20221228
if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B='' N=''; fi
step() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

cargo build --release --quiet
CB=target/release/crambench
rm -rf "$OUT"; mkdir -p "$OUT"

step "1. fingerprint of this machine (no host identifiers)"
$CB fingerprint --out "$OUT/fingerprint.json"

step "2. data: embedded State of the Union corpus -> WordPiece tokenizer -> packed, hashed shards"
$CB data prepare baselines/demo-cpu.toml --out "$OUT/data" --json > "$OUT/data.json"
DATA=$(field "$OUT/data.json" dir)
$CB data prepare baselines/demo-cpu.toml --out "$OUT/data"   # the table; reuses the dataset

step "3. pretrain crammed-bert-tiny for $BUDGET of device time (CPU)"
$CB pretrain baselines/demo-cpu.toml --data "$DATA" --budget "$BUDGET" --seed "$SEED" \
  --out "$OUT/pretrain" --json > "$OUT/pretrain.json"
CKPT=$(field "$OUT/pretrain.json" checkpoint)
python3 - "$OUT/pretrain.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"stopped by {s['stop_reason']} after {s['steps']} optimizer steps, {s['tokens_seen']} tokens")
print(f"MLM loss {s['initial_mlm_loss']:.3f} -> {s['final_mlm_loss']:.3f} (mean of last {s['final_loss_window']}), "
      f"{s['tokens_per_second']:.0f} tokens/s")
print(f"checkpoint {s['checkpoint']}")
PY

step "4. fine-tune and evaluate on the demo tasks (demo-*, never reported as GLUE)"
$CB glue run --checkpoint "$CKPT" --tasks demo --trials "$TRIALS" --seed "$SEED" --out "$OUT/glue"

step "5. a signing key (private key mode 0600, never overwritten)"
$CB keygen --out "$OUT/keys" --name demo

step "6. a manifest: fingerprint, seeds, and the digests of every artifact and input"
$CB manifest new --seed "$SEED" \
  --label init --label data-order --label masking --label finetune/demo-sentiment/0 \
  --subject "$CKPT" --subject "$DATA" --subject "$OUT/glue" \
  --material baselines/demo-cpu.toml --material baselines/crammed-bert-tiny.toml \
  --material baselines/crammed-bert.toml --material harness/assets/sotu.jsonl.zst \
  --out "$OUT/manifest.json"
$CB hash "$CKPT" "$DATA" "$OUT/glue"

step "7. validate against the published JSON Schema"
$CB manifest validate "$OUT/manifest.json"

step "8. sign (DSSE envelope, Ed25519)"
$CB sign --key "$OUT/keys/demo.key" "$OUT/manifest.json"

step "9. verify offline with the public key"
$CB verify "$OUT/manifest.dsse.json" --key "$OUT/keys/demo.pub"

step "10. a tampered copy must fail (exit 1)"
python3 - "$OUT/manifest.dsse.json" "$OUT/tampered.dsse.json" "$SEED" <<'PY'
import base64, json, sys
env = json.load(open(sys.argv[1]))
seed = sys.argv[3].encode()
body = base64.b64decode(env["payload"]).replace(b'"master":' + seed, b'"master":' + str(int(seed) + 1).encode())
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
echo "dataset:    $DATA"
echo "checkpoint: $CKPT"
echo "GLUE demo:  $OUT/glue/glue.json"
echo "manifest:   $OUT/manifest.json"
echo "envelope:   $OUT/manifest.dsse.json"
echo "verify it:  $CB verify $OUT/manifest.dsse.json --key $OUT/keys/demo.pub"
