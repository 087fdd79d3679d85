#!/usr/bin/env bash
# `make demo`: the whole pipeline on the embedded demo data with one command, and the proof.
#   crambench run baselines/demo-cpu.toml:
#     fingerprint → data (State of the Union corpus → WordPiece tokenizer → packed, hashed
#     shards) → pretrain crammed-bert-tiny for 3 minutes of device time (CPU) → fine-tune and
#     evaluate on the demo tasks (3 trials each, and the no-pretraining control) → manifest →
#     DSSE signature → report; then the pretraining effect per task (run − control with its
#     95% interval), printed again at the end
#   then: verify the signature and every artifact offline, and show that a tampered envelope
#   and a run directory with edited predictions both fail.
# Output: demo-out/demo-cpu/ (recreated on every run); the dataset is cached in data-cache/.
# The manifest is signed with your crambench key (~/.config/crambench/keys/default.key, created
# on first use; set CRAMBENCH_CONFIG_DIR to keep it elsewhere). DEMO_BUDGET overrides the
# pretraining budget (e.g. DEMO_BUDGET=30s for a quicker look).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=demo-out
SEED=20221228
if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B='' N=''; fi
step() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }

cargo build --release --quiet
CB=target/release/crambench
rm -rf "$OUT"; mkdir -p "$OUT"

step "1. crambench run baselines/demo-cpu.toml (fingerprint, data, pretrain, GLUE demo tasks, manifest, signature, report)"
BUDGET_ARGS=()
if [ -n "${DEMO_BUDGET:-}" ]; then BUDGET_ARGS=(--budget "$DEMO_BUDGET"); fi
$CB run baselines/demo-cpu.toml --out "$OUT" --seed "$SEED" "${BUDGET_ARGS[@]}" --json > "$OUT/run.json"
RUN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["dir"])' "$OUT/run.json")
PUB=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["public_key"] or "")' "$OUT/run.json")
python3 - "$OUT/run.json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
for s in o["stages"]:
    print(f'{s["stage"]:<12} {s["status"]:<7} {s["seconds"]:8.1f}s  {s["detail"]}')
a = o["aggregate"]
print(f'\ndemo aggregate {a["value"]:.2f} ({a["rule"]} rule: mean accuracy of the two demo tasks; not GLUE)')
print(f'final MLM loss {o["final_mlm_loss"]:.3f}, {o["tokens_per_second"]:.0f} tokens/s, '
      f'{o["used_device_hours"]:.4f} device-hours')
PY
# The pretraining effect, per task and for the aggregate, from the signed manifest; repeated at
# the end. Exit status 0 either way: the effect is a measurement, and the README says how much
# it varies.
effect() {
  python3 - "$RUN/manifest.json" <<'PY'
import json, sys
g = json.load(open(sys.argv[1]))["predicate"]["glue"]
ctl = (g.get("controls") or {}).get("no_pretraining")
if not ctl:
    print("no no-pretraining control in this run: nothing to compare against")
    sys.exit(0)
def fmt(d):
    lo, hi = d["ci95"]["lo"], d["ci95"]["hi"]
    verdict = "yes" if lo > 0 else "NO (the interval includes 0: not distinguishable)"
    diff = f'{d["delta"]:+.2f} [{lo:+.2f}, {hi:+.2f}]'
    return f'{diff:<28} {verdict}'
print("pretraining effect: run - no-pretraining control, percent points, 95% bootstrap interval over dev examples")
print(f'{"":<20} {"run":>6} {"control":>8}   {"run - control [95% interval]":<28} above by more than the interval?')
for s, t in sorted(g["tasks"].items()):
    c = ctl["tasks"].get(s)
    if not c:
        continue
    for m, v in sorted(t["metrics"].items()):
        if m in c.get("above", {}):
            print(f'{s:<20} {100 * v:6.2f} {100 * c["metrics"][m]:8.2f}   {fmt(c["above"][m])}')
if ctl.get("above") and ctl.get("aggregate"):
    print(f'{"aggregate (" + g["aggregate"]["rule"] + ")":<20} {g["aggregate"]["value"]:6.2f} '
          f'{ctl["aggregate"]["value"]:8.2f}   {fmt(ctl["above"])}')
PY
}
echo
effect

step "2. the run again: every stage is complete, its outputs are re-verified and reused"
$CB run baselines/demo-cpu.toml --out "$OUT" "${BUDGET_ARGS[@]}" | head -7

step "3. verify the run offline with the public key: the signature, then every artifact it vouches for"
$CB verify "$RUN" --trust "$PUB"

step "3b. the checkpoint's OpenSSF model signature (model.sig), checked by model_signing itself"
CKPT=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(next(s["name"] for s in m["subject"] if s["annotations"]["role"]=="checkpoint"))' "$RUN/manifest.json")
MS=.venv-interop/bin/model_signing
SIG_PUB=$PUB
SIG=$RUN/model.sig
if [ ! -f "$SIG" ]; then
  # Your key predates the ECDSA default (model_signing verifies only ECDSA keys): sign the
  # checkpoint with a demo P-256 key instead, so the step still shows the real tool's check.
  echo "your key is Ed25519, which model_signing cannot verify: signing the checkpoint with a demo ECDSA P-256 key"
  $CB keygen --algorithm ecdsa-p256 --out "$OUT/keys" --name demo > /dev/null
  SIG=$OUT/model.sig
  $CB checkpoint sign "$RUN/$CKPT" --key "$OUT/keys/demo.key" --signature "$SIG" > /dev/null
  SIG_PUB=$OUT/keys/demo.pub
fi
echo "model_signing verify key $RUN/$CKPT --signature $SIG --public_key $SIG_PUB"
if [ -x "$MS" ]; then
  "$MS" verify key "$RUN/$CKPT" --signature "$SIG" --public_key "$SIG_PUB"
else
  echo "(model_signing is not installed here; scripts/pyenv.sh installs it into .venv-interop)"
fi

step "4. a tampered copy must fail (exit 1)"
python3 - "$RUN/manifest.dsse.json" "$OUT/tampered.dsse.json" "$SEED" <<'PY'
import base64, json, sys
env = json.load(open(sys.argv[1]))
seed = sys.argv[3].encode()
body = base64.b64decode(env["payload"]).replace(b'"master":' + seed, b'"master":' + str(int(seed) + 1).encode())
env["payload"] = base64.b64encode(body).decode()
json.dump(env, open(sys.argv[2], "w"))
PY
set +e
$CB verify "$OUT/tampered.dsse.json" --trust "$PUB" > /dev/null
code=$?
set -e
if [ "$code" -ne 1 ]; then echo "expected exit 1 for a tampered envelope, got $code" >&2; exit 1; fi
echo "tampered copy rejected (exit $code), as expected"

step "5. predictions edited to 100% accuracy must fail too (the signature is still valid; exit 1)"
rm -rf "$OUT/edited"; cp -r "$RUN" "$OUT/edited"
python3 - "$OUT/edited/glue/predictions/demo-sentiment/trial-0.tsv" <<'PY'
import sys
p = sys.argv[1]
rows = open(p).read().splitlines()
out = [rows[0]] + ["\t".join([r.split("\t")[0], r.split("\t")[2], r.split("\t")[2]]) for r in rows[1:]]
open(p, "w").write("\n".join(out) + "\n")
PY
set +e
$CB verify "$OUT/edited" --trust "$PUB" | grep -E "mismatch|result"
code=${PIPESTATUS[0]}
set -e
if [ "$code" -ne 1 ]; then echo "expected exit 1 for edited predictions, got $code" >&2; exit 1; fi
echo "edited predictions rejected (exit $code), as expected"

step "done"
echo "run directory: $RUN"
echo "manifest:      $RUN/manifest.json"
echo "envelope:      $RUN/manifest.dsse.json"
echo "report:        $RUN/report.md"
echo "               $RUN/report.html"
echo "verify it:     $CB verify $RUN --trust $PUB"
if [ -f "$RUN/model.sig" ]; then
  echo "checkpoint:    model_signing verify key $RUN/$CKPT --signature $RUN/model.sig --public_key $PUB"
fi
echo
effect
