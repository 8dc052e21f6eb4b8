#!/usr/bin/env bash
# Fuzzes the parsers of untrusted input with cargo-fuzz (libFuzzer): GGUF files (container, metadata, whole
# model build), Hugging Face checkpoints (config.json + safetensors, whole model build), GGUF tokenizers, and
# chat templates. Installs the nightly toolchain and cargo-fuzz when missing.
#
#   scripts/fuzz.sh                 # every target for FUZZ_SECONDS (default 30) each: the short run of CI
#   FUZZ_RUNS=10000000 scripts/fuzz.sh gguf_model    # a long run: 10 million executions of one target
#
# Seeds are fuzz/corpus/<target> (committed); new inputs go to target/fuzz-corpus/<target>. A crash, a panic,
# a timeout (10 s per input) or an input whose process exceeds FUZZ_RSS_MB (default 2048) of memory fails the
# run and leaves the input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(gguf_model hf_model gguf_tokenizer chat_template)
seconds=${FUZZ_SECONDS:-30}
rss=${FUZZ_RSS_MB:-2048}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# -s none: no sanitizer (the targets' unsafe code is the kernels', tested bit-exact elsewhere); 3x the speed.
(cd fuzz && cargo +nightly fuzz build -O -s none)
for target in "${targets[@]}"; do
  work=target/fuzz-corpus/$target
  mkdir -p "$work"
  limit=(-max_total_time="$seconds")
  [ -n "${FUZZ_RUNS:-}" ] && limit=(-runs="$FUZZ_RUNS")
  echo "==> fuzz $target (${FUZZ_RUNS:-${seconds} s})"
  log=target/fuzz-$target.log
  status=0
  (cd fuzz && cargo +nightly fuzz run -O -s none "$target" "../$work" "corpus/$target" -- \
    "${limit[@]}" -rss_limit_mb="$rss" -malloc_limit_mb="$rss" -timeout=10 -max_len=131072 -print_final_stats=1) \
    >"$log" 2>&1 || status=$?
  grep -E '^(#[0-9]+\s+(INITED|DONE)|Done [0-9]+ runs|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb))' "$log" || true
  if [ "$status" != 0 ] || [ -n "$(ls -A "fuzz/artifacts/$target" 2>/dev/null)" ]; then
    tail -40 "$log" >&2
    echo "fuzz: $target failed (exit $status); inputs in fuzz/artifacts/$target, log in $log" >&2
    exit 1
  fi
done
