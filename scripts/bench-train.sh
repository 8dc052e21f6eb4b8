#!/usr/bin/env bash
# Training speed side by side with PyTorch on this machine: `bitnet train --bench` and the same model, batch
# shape and optimizer as an eager PyTorch loop (scripts/bench_train_torch.py), QAT and full precision, one run
# after the other; ours both as one process and as `--processes <threads>` (local data-parallel ranks of one
# thread each, the same combined batch). Not part of CI (it installs torch).
#
#   scripts/bench-train.sh [--arch small] [--context 129] [--batch-size 16] [--steps 10] [--threads 2]
#
# TORCH_PYTHON=/path/to/python uses an interpreter that already has torch and tokenizers; otherwise they are
# pip-installed into target/torch-venv. BITNET_BIN overrides the binary (default: a release build).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=small context=129 batch=16 steps=10 threads=2
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=$2; shift 2 ;;
    --context) context=$2; shift 2 ;;
    --batch-size) batch=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) echo "bench-train: unknown option $1" >&2; exit 2 ;;
  esac
done
bitnet=${BITNET_BIN:-}
if [ -z "$bitnet" ]; then
  cargo build --release -p bitnet-cli >&2
  bitnet=target/release/bitnet
fi
python=${TORCH_PYTHON:-}
if [ -z "$python" ]; then
  venv=target/torch-venv
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import torch, tokenizers' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check torch tokenizers
  fi
  python=$venv/bin/python
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tokenizer=bitnet-models/default-model/tokenizer.json
# (zcat ends on SIGPIPE when head has read enough.)
{ zcat data/shakespeare/train.txt.gz || true; } | head -c 2000000 > "$work/train.txt"
# The architecture as `bitnet train` builds it (the zoo's config with the tokenizer's vocabulary).
"$bitnet" init --random --arch "$arch" --out "$work/arch" >/dev/null 2>&1
"$python" - "$work" "$tokenizer" <<'PY'
import json, sys
from tokenizers import Tokenizer
work, tokenizer = sys.argv[1], sys.argv[2]
tok = Tokenizer.from_file(tokenizer)
config = json.load(open(f"{work}/arch/config.json"))
config["vocab_size"] = tok.get_vocab_size()
json.dump(config, open(f"{work}/config.json", "w"))
json.dump(tok.encode(open(f"{work}/train.txt").read()).ids, open(f"{work}/tokens.json", "w"))
PY
echo "== bitnet ($bitnet, one process, $threads threads)" >&2
ours=$(BITNET_THREADS=$threads "$bitnet" train --bench "$steps" --arch "$arch" --context "$context" \
  --batch-size "$batch" --tokenizer "$tokenizer" --train "$work/train.txt" 2>/dev/null)
echo "== bitnet ($bitnet, --processes $threads: one thread each)" >&2
ranks=$(BITNET_THREADS=$threads "$bitnet" train --bench "$steps" --arch "$arch" --context "$context" \
  --batch-size "$batch" --tokenizer "$tokenizer" --train "$work/train.txt" --processes "$threads" 2>/dev/null)
echo "== PyTorch ($python, $threads threads)" >&2
theirs=$("$python" scripts/bench_train_torch.py --config "$work/config.json" --tokens "$work/tokens.json" \
  --context "$context" --batch-size "$batch" --steps "$steps" --threads "$threads")
"$python" - "$ours" "$ranks" "$theirs" "$threads" <<'PY'
import json, sys
ours, ranks, theirs = (json.loads(a) for a in sys.argv[1:4])
print(f"tokens per step: {ours['tokens_per_step']:.0f} (PyTorch {theirs['torch']})")
print(f"{'':22} {'QAT ms/step':>12} {'QAT tok/s':>10} {'FP ms/step':>11} {'FP tok/s':>9} {'QAT/FP':>7}")
rows = (("bitnet", ours), (f"bitnet --processes {sys.argv[4]}", ranks), ("PyTorch", theirs))
for name, r in rows:
    print(f"{name:22} {r['qat_ms_per_step']:12.1f} {r['qat_tokens_per_s']:10.0f} {r['fp_ms_per_step']:11.1f} "
          f"{r['fp_tokens_per_s']:9.0f} {r['ratio']:7.2f}")
for name, r in rows[:2]:
    print(f"QAT tokens/s, {name} / PyTorch: {r['qat_tokens_per_s'] / theirs['qat_tokens_per_s']:.2f}x")
PY
