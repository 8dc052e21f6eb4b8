#!/usr/bin/env bash
# The GPU check: the CubeCL kernels and the whole model on burn-cuda, for a machine with an NVIDIA GPU, a driver
# and NVRTC but no Rust toolchain (the `device` machines). Two steps:
#
#   bash scripts/gpu-check.sh build   # here, with Rust: builds stripped binaries into .gpu-check/ (git-ignored)
#   bash scripts/gpu-check.sh run     # on the GPU host, from the repository root, with .gpu-check/ carried over
#
# `run` prints, in under 5 minutes on an H100/H200:
#   1. the backend's CUDA op tests (every op against the CPU reference of bitnet-kernels);
#   2. for every transformers fixture, greedy tokens and logits on --device cuda against --device cpu (same
#      binary), within the fixture tolerance (0.05 on logits, identical greedy tokens);
#   3. `bitnet bench --device cuda` on a random 2B-4T model, its ternary weights packed in 2 bits and then five
#      to a byte (BITNET_TERNARY_LAYOUT=trits5): prefill and decode tokens/s, weight bytes per token, and decode
#      as a fraction of the device read probe and of the GPU's rated memory bandwidth.
#
# With the device tool: `bash scripts/gpu-check.sh build` here, then
#   run(command="bash scripts/gpu-check.sh run", carry=[".gpu-check"], timeout_s=420)
#
# Environment: CUDARC_CUDA_VERSION (build step; default 13000 = CUDA 13.0, the device machines' driver level,
# format MM0m0), GPU_CHECK_DEVICE (run step; default cuda; `cpu` dry-runs steps 2-3 on the CPU to check this
# script without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
out=.gpu-check

build() {
  local target=target/gpu-check
  export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
  mkdir -p "$out"
  cargo build --release -j"${CARGO_BUILD_JOBS:-2}" --target-dir "$target" -p bitnet-cli --features cuda
  local tests
  tests=$(cargo test --release -j"${CARGO_BUILD_JOBS:-2}" --target-dir "$target" -p bitnet-backend --features cuda \
    --test cuda --no-run --message-format json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "cuda" and m.get("executable"):
        print(m["executable"])')
  rm -f "$out"/*
  cp "$target/release/bitnet" "$out/bitnet"
  cp "$tests" "$out/backend-cuda-tests"
  strip "$out/bitnet" "$out/backend-cuda-tests"
  # The device tool carries at most 64 MiB: xz the binaries (run unpacks them).
  xz -9 -T0 "$out/bitnet" "$out/backend-cuda-tests"
  ls -la "$out"
  du -sh "$out"
}

# Unpacks the xz-compressed binaries (with xz, or Python's lzma where xz is missing).
unpack() {
  local f
  for f in "$out"/*.xz; do
    [ -e "$f" ] || continue
    if command -v xz >/dev/null; then
      xz -dkf "$f"
    else
      python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[1][:-3], "wb"))' "$f"
    fi
    chmod +x "${f%.xz}"
  done
}

# Rated memory bandwidth (GB/s) of common data-center GPUs, by nvidia-smi name.
rated_bandwidth() {
  case "$1" in
    *H200*) echo 4800 ;;
    *H100*SXM* | *H100\ 80GB\ HBM3*) echo 3350 ;;
    *H100*NVL*) echo 3900 ;;
    *H100*) echo 2000 ;;
    *A100*80GB*) echo 2039 ;;
    *A100*) echo 1555 ;;
    *L40S*) echo 864 ;;
    *) echo 0 ;;
  esac
}

run() {
  local device="${GPU_CHECK_DEVICE:-cuda}"
  local bitnet="$out/bitnet"
  local work
  unpack
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: `work` is local to this function
  trap "rm -rf '$work'" EXIT
  [ -x "$bitnet" ] || { echo "error: $bitnet is missing: run 'bash scripts/gpu-check.sh build' first" >&2; exit 1; }
  local gpu="none"
  if command -v nvidia-smi >/dev/null; then
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  fi
  echo "== device $device ($gpu)"

  if [ "$device" = cuda ]; then
    echo "== 1. backend op tests on CUDA"
    "$out/backend-cuda-tests" --ignored --test-threads 1
  fi

  echo "== 2. fixtures: --device $device against --device cpu"
  local fixtures=bitnet-models/tests/fixtures failed=0
  for name in tiny-bitlinear tiny-autobitlinear tiny-bf16-master tiny-bitlinear-256 tiny-llama-bitnet-rmsnorm \
    tiny-llama-bitnet-online tiny-1bitllm tiny-tq2_0.gguf tiny-tq1_0.gguf tiny-i2_s.gguf; do
    local model="$fixtures/$name" reference="$fixtures/$name/expected.json"
    case "$name" in *.gguf) reference="$fixtures/tiny-bitlinear-256/expected.json" ;; esac
    local prompt
    prompt=$(python3 -c 'import json,sys; print(",".join(map(str, json.load(open(sys.argv[1]))["prompt"])))' "$reference")
    for d in cpu "$device"; do
      "$bitnet" generate --model "$model" --device "$d" --prompt-ids "$prompt" --temperature 0 \
        --max-new-tokens 8 --json >"$work/$d.json" 2>"$work/$d.err" || { cat "$work/$d.err"; failed=1; }
      "$bitnet" logits --model "$model" --device "$d" --prompt-ids "$prompt" --out "$work/$d.npy" \
        2>>"$work/$d.err" || { cat "$work/$d.err"; failed=1; }
    done
    python3 - "$work" "$device" "$name" <<'EOF' || failed=1
import array, json, sys
work, device, name = sys.argv[1:]

def npy(path):  # float32 .npy, version 1.0, as `bitnet logits` writes it
    data = open(path, "rb").read()
    header = int.from_bytes(data[8:10], "little")
    return array.array("f", data[10 + header:])

cpu, gpu = (json.load(open(f"{work}/{d}.json")) for d in ("cpu", device))
diff = max(abs(a - b) for a, b in zip(npy(f"{work}/cpu.npy"), npy(f"{work}/{device}.npy")))
same = cpu["tokens"] == gpu["tokens"]
print(f"{name:28s} greedy {'identical' if same else 'DIFFERENT'}  max |logit diff| {diff:.2e}  "
      f"decode {gpu['decode_tokens_per_s']:.0f} tokens/s on {device}")
sys.exit(0 if same and diff <= 0.05 else 1)
EOF
  done
  [ "$failed" = 0 ] || { echo "error: a fixture differs between cpu and $device" >&2; exit 1; }

  echo "== 3. bench: random 2B-4T shapes on $device, ternary weights in 2 bits (the default) and five to a byte"
  "$bitnet" init --random --arch 2b-4t --out "$work/rand2b"
  local layout
  for layout in 2bit trits5; do
    BITNET_TERNARY_LAYOUT=$layout "$bitnet" bench --model "$work/rand2b" --device "$device" --prompt-tokens 128 \
      --decode-tokens 65 --runs 3 --json >"$work/bench.json"
    summarize_bench "$work/bench.json" "$(rated_bandwidth "$gpu")"
  done
}

# Prints one `bitnet bench --json` result: speeds, bytes, and decode against the probe and the rated bandwidth.
summarize_bench() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
b = json.load(open(sys.argv[1]))
rated = float(sys.argv[2]) * 1e9
print(f"ternary weights {' and '.join(b['ternary_layouts'])}:")
print(f"prefill {b['prefill_tokens_per_s']:.1f} tokens/s, decode {b['decode_tokens_per_s']:.1f} tokens/s, "
      f"{b['weight_bytes_per_token'] / 1e9:.3f} GB of weights per token = {b['decode_bytes_per_s'] / 1e9:.1f} GB/s")
if b.get("probe_bytes_per_s"):
    print(f"device read probe {b['probe_bytes_per_s'] / 1e9:.0f} GB/s: decode at {100 * b['roofline_fraction']:.1f}% of it")
if rated > 0:
    print(f"rated bandwidth {rated / 1e9:.0f} GB/s: decode at {100 * b['decode_bytes_per_s'] / rated:.1f}% of it")
EOF
}

case "${1:-}" in
  build) build ;;
  run) run ;;
  *) echo "usage: bash scripts/gpu-check.sh build|run" >&2; exit 2 ;;
esac
