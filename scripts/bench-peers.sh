#!/usr/bin/env bash
# Side-by-side CPU benchmark of `bitnet` against llama.cpp (and bitnet.cpp when given) on the same GGUF files,
# in one run on one machine: prefill (128-token prompt) and decode (64 tokens) at 1 and 2 threads, and the peak
# resident memory of each engine. Not part of CI (it builds llama.cpp, writes 2 GB of model files, and takes
# about 25 minutes on a 2-core VM); the README's speed table comes from its output.
#
#   scripts/bench-peers.sh                      # llama.cpp from the PyPI sdist of llama-cpp-python
#   BITNET_CPP_BENCH=/path/to/llama-bench scripts/bench-peers.sh   # also a built bitnet.cpp (I2_S file)
#
# Environment:
#   PEERS_DIR       where llama.cpp is built and the model files are written (default ~/.cache/bitnet-peers)
#   LLAMA_CPP_PYTHON_VERSION   the sdist whose vendored llama.cpp is built (default 0.3.36)
#   THREADS         thread counts (default "1 2"); REPS: timed repetitions per measurement (default 3)
#   BITNET_CPP_BENCH   a bitnet.cpp llama-bench binary (microsoft/BitNet, built with its setup_env.py)
#   BITNET_BIN      a bitnet binary to measure instead of building this checkout's (release)
#
# The model: microsoft/bitnet-b1.58-2B-4T's shapes with random ternary weights, written by `bitnet init` in
# the block upstream llama.cpp runs (architecture `bitnet`, arch 2b-4t-silu: the speed of the SiLU and relu²
# FFNs is the same), as TQ2_0 with an f16 token embedding, and again with a Q6_K one and a Q4_0 one (tied
# heads); bitnet.cpp gets the I2_S file of the 2B-4T block. Every engine reads the same bytes per token from
# the same file.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
peers=${PEERS_DIR:-$HOME/.cache/bitnet-peers}
version=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
threads=${THREADS:-1 2}
reps=${REPS:-3}
mkdir -p "$peers"
note() { printf '>> %s\n' "$*" >&2; }

for tool in curl python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench-peers: needs $tool" >&2; exit 1; }
done

if [ -n "${BITNET_BIN:-}" ]; then
  bitnet=$BITNET_BIN
else
  note "building bitnet (release)"
  (cd "$repo" && cargo build --release -p bitnet-cli -q)
  bitnet=$repo/target/release/bitnet
fi

# llama.cpp as vendored in the llama-cpp-python sdist, built outside the repository.
llama_src=$peers/llama_cpp_python-$version/vendor/llama.cpp
llama_bench=$llama_src/build/bin/llama-bench
if [ ! -x "$llama_bench" ]; then
  if [ ! -d "$llama_src" ]; then
    note "downloading llama-cpp-python $version (sdist) from PyPI"
    url=$(curl -fsS -H 'Accept: application/vnd.pypi.simple.v1+json' https://pypi.org/simple/llama-cpp-python/ |
      python3 -c "import json,sys; n='llama_cpp_python-$version.tar.gz'; print(next(f['url'] for f in json.load(sys.stdin)['files'] if f['filename']==n))")
    curl -fsSL -o "$peers/sdist.tar.gz" "$url"
    tar xzf "$peers/sdist.tar.gz" -C "$peers"
    rm "$peers/sdist.tar.gz"
  fi
  cmake=$(command -v cmake || true)
  if [ -z "$cmake" ]; then
    note "installing cmake into $peers/venv"
    python3 -m venv "$peers/venv"
    "$peers/venv/bin/pip" install -q cmake
    cmake=$peers/venv/bin/cmake
  fi
  note "building llama.cpp (llama-bench, native CPU flags)"
  "$cmake" -S "$llama_src" -B "$llama_src/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF >/dev/null
  "$cmake" --build "$llama_src/build" -j"$(nproc)" --target llama-bench >/dev/null
fi

model() { # arch format embedding -> path
  local path=$peers/$1-$2-$3.gguf
  if [ ! -s "$path" ]; then
    note "writing $path"
    "$bitnet" init --random --arch "$1" --format "$2" --embedding "$3" --out "$path" 2>/dev/null
  fi
  echo "$path"
}
tq2_f16=$(model 2b-4t-silu tq2_0 f16)
tq2_q6k=$(model 2b-4t-silu tq2_0 q6k)
tq2_q4=$(model 2b-4t-silu tq2_0 q4)

# Peak RSS (MiB) of a command, from GNU time.
peak_rss() {
  /usr/bin/time -v "$@" 2>&1 >/dev/null | awk '/Maximum resident/ {printf "%.0f", $NF / 1024}'
}

# llama-bench: "<pp128 t/s> <tg64 t/s>" for a file and a thread count.
llama_speeds() {
  "$1" -m "$2" -t "$3" -p 128 -n 64 -r "$reps" -o json 2>/dev/null | python3 -c '
import json, sys
rows = json.load(sys.stdin)
pp = next(r["avg_ts"] for r in rows if r["n_prompt"] > 0 and r["n_gen"] == 0)
tg = next(r["avg_ts"] for r in rows if r["n_gen"] > 0 and r["n_prompt"] == 0)
print(f"{pp:.1f} {tg:.2f}")'
}

# bitnet bench: "<prefill t/s> <decode t/s>" (65 decoded tokens: decode is timed over the last 64).
bitnet_speeds() {
  "$bitnet" bench --model "$1" --threads "$2" --prompt-tokens 128 --decode-tokens 65 --runs "$reps" --json \
    "${@:3}" 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)
pp, tg = r["prefill_tokens_per_s"], r["decode_tokens_per_s"]
print(f"{pp:.1f} {tg:.2f}")'
}

prompt_ids=$(python3 -c "print(','.join(str(i * 37 % 5000 + 100) for i in range(128)))")
declare -a rows
measure() { # label kind file [bitnet args...]
  local label=$1 kind=$2 file=$3; shift 3
  local pp=() tg=() rss
  for t in $threads; do
    local s
    if [ "$kind" = bitnet ]; then s=$(bitnet_speeds "$file" "$t" "$@"); else s=$(llama_speeds "$kind" "$file" "$t"); fi
    pp+=("${s% *}"); tg+=("${s#* }")
    note "$label, $t thread(s): prefill ${s% *} t/s, decode ${s#* } t/s"
  done
  if [ "$kind" = bitnet ]; then
    # `generate`, not `bench`: bench's memory-read probe holds a 1 GiB buffer of its own.
    rss=$(peak_rss "$bitnet" generate --model "$file" --prompt-ids "$prompt_ids" --max-new-tokens 64 \
      --temperature 0 --json "$@")
  else
    rss=$(peak_rss "$kind" -m "$file" -p 128 -n 64 -r 1)
  fi
  rows+=("$label|${pp[*]}|${tg[*]}|$rss")
}

measure "llama.cpp, TQ2_0 (f16 head)" "$llama_bench" "$tq2_f16"
measure "llama.cpp, TQ2_0 (Q6_K head)" "$llama_bench" "$tq2_q6k"
measure "llama.cpp, TQ2_0 (Q4_0 head)" "$llama_bench" "$tq2_q4"
if [ -n "${BITNET_CPP_BENCH:-}" ]; then
  i2s=$(model 2b-4t i2s f16)
  measure "bitnet.cpp, I2_S (f16 head)" "$BITNET_CPP_BENCH" "$i2s"
fi
measure "bitnet, the TQ2_0 file (f16 head)" bitnet "$tq2_f16"
measure "bitnet, the TQ2_0 file (Q6_K head)" bitnet "$tq2_q6k"
measure "bitnet, the TQ2_0 file (Q4_0 head)" bitnet "$tq2_q4"
measure "bitnet, the TQ2_0 file, --head int8" bitnet "$tq2_f16" --head int8

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
printf '\n%s, %s cores, %s; llama.cpp from llama-cpp-python %s; %s repetitions; tokens/s\n\n' \
  "$cpu" "$(nproc)" "$(date -u +%Y-%m-%d)" "$version" "$reps"
header="| engine, file (head) |"
sep="|---|"
for t in $threads; do header+=" prefill ${t}t |"; sep+="---:|"; done
for t in $threads; do header+=" decode ${t}t |"; sep+="---:|"; done
echo "$header peak RSS (MiB) |"
echo "$sep---:|"
for row in "${rows[@]}"; do
  IFS='|' read -r label pp tg rss <<<"$row"
  line="| $label |"
  for v in $pp; do line+=" $v |"; done
  for v in $tg; do line+=" $v |"; done
  echo "$line $rss |"
done
