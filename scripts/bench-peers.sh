#!/usr/bin/env bash
# Side-by-side CPU benchmark of `bitnet` against llama.cpp (and bitnet.cpp when given) on the same GGUF files,
# in one run on one machine: prefill (128-token prompt) and decode (64 tokens) at 1 and 2 threads, and the peak
# resident memory of each engine. Not part of CI (it builds llama.cpp, writes 2 GB of model files, and takes
# about 25 minutes on a 2-core VM); the README's speed table comes from its output. The engines take turns
# within each round, and the table reports medians over rounds, with each round's ratios on the same file.
#
#   scripts/bench-peers.sh                      # llama.cpp from the PyPI sdist of llama-cpp-python
#   BITNET_CPP_BENCH=/path/to/llama-bench scripts/bench-peers.sh   # also a built bitnet.cpp (I2_S file)
#
# Environment:
#   PEERS_DIR       where llama.cpp is built and the model files are written (default ~/.cache/bitnet-peers)
#   LLAMA_CPP_PYTHON_VERSION   the sdist whose vendored llama.cpp is built (default 0.3.36)
#   THREADS         thread counts (default "1 2")
#   ROUNDS          rounds of every measurement, the engines taking turns (default 3)
#   REPS            timed repetitions within one measurement (default 1)
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
rounds=${ROUNDS:-3}
reps=${REPS:-1}
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

# llama-bench: "<pp128 t/s> <tg64 t/s>" for a file and a thread count. Decode runs at a context depth of 128
# (`-d 128`: the prompt is evaluated first, untimed), as `bitnet bench` decodes after its 128-token prompt;
# a llama-bench without `--n-depth` (bitnet.cpp's 2024 fork) decodes from an empty context, which favours it.
llama_speeds() {
  local pp tg help depth=(-d 128)
  help=$("$1" --help 2>&1 || true)
  if [[ $help != *--n-depth* ]]; then
    depth=()
    note "$1 has no --n-depth: its decode runs from an empty context"
  fi
  pp=$("$1" -m "$2" -t "$3" -p 128 -n 0 -r "$reps" -o json 2>/dev/null |
    python3 -c 'import json, sys; print("%.1f" % json.load(sys.stdin)[0]["avg_ts"])')
  tg=$("$1" -m "$2" -t "$3" -p 0 -n 64 "${depth[@]}" -r "$reps" -o json 2>/dev/null |
    python3 -c 'import json, sys; print("%.2f" % json.load(sys.stdin)[0]["avg_ts"])')
  echo "$pp $tg"
}

# bitnet bench: "<prefill t/s> <decode t/s> <read probe GiB/s>" (65 decoded tokens: decode is timed over the last
# 64; the probe is bench's plain read of a 1 GiB buffer on the same threads, the median of one read before the
# timed runs and one after each).
bitnet_speeds() {
  "$bitnet" bench --model "$1" --threads "$2" --prompt-tokens 128 --decode-tokens 65 --runs "$reps" --json \
    "${@:3}" 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)
pp, tg, probe = r["prefill_tokens_per_s"], r["decode_tokens_per_s"], r.get("probe_bytes_per_s") or 0
print(f"{pp:.1f} {tg:.2f} {probe / 2**30:.1f}")'
}

# The rows: label, engine (a llama-bench binary or `bitnet`), file, the label of the row it is compared with
# (the other engine on the same file, or -), and bitnet's extra arguments (`--head int8` reads the same file
# and converts its f16 head when it loads).
declare -a labels engines files compared extras
row() { labels+=("$1"); engines+=("$2"); files+=("$3"); compared+=("$4"); extras+=("${*:5}"); }
row "llama.cpp, TQ2_0 (f16 head)" "$llama_bench" "$tq2_f16" -
row "llama.cpp, TQ2_0 (Q6_K head)" "$llama_bench" "$tq2_q6k" -
row "llama.cpp, TQ2_0 (Q4_0 head)" "$llama_bench" "$tq2_q4" -
if [ -n "${BITNET_CPP_BENCH:-}" ]; then
  row "bitnet.cpp, I2_S (f16 head)" "$BITNET_CPP_BENCH" "$(model 2b-4t i2s f16)" -
fi
row "bitnet, the TQ2_0 file (f16 head)" bitnet "$tq2_f16" "llama.cpp, TQ2_0 (f16 head)"
row "bitnet, the TQ2_0 file (Q6_K head)" bitnet "$tq2_q6k" "llama.cpp, TQ2_0 (Q6_K head)"
row "bitnet, the TQ2_0 file (Q4_0 head)" bitnet "$tq2_q4" "llama.cpp, TQ2_0 (Q4_0 head)"
row "bitnet, the TQ2_0 file, --head int8" bitnet "$tq2_f16" "llama.cpp, TQ2_0 (f16 head)" --head int8

# Every round measures every row at every thread count, so each engine sees the same minutes of this machine's
# memory bandwidth (which can move by a third from one minute to the next); the table gives each cell's median
# over the rounds, and the ratios are medians of the ratios within a round.
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for round in $(seq "$rounds"); do
  for i in "${!labels[@]}"; do
    for t in $threads; do
      read -r -a args <<<"${extras[$i]}"
      # An assignment, so that a failed measurement stops the run (`set -e`), then split.
      if [ "${engines[$i]}" = bitnet ]; then
        s=$(bitnet_speeds "${files[$i]}" "$t" "${args[@]}")
        read -r pp tg probe <<<"$s"
        printf 'probe\t%s\t%s\t%s\n' "$round" "$t" "$probe" >>"$results"
      else
        s=$(llama_speeds "${engines[$i]}" "${files[$i]}" "$t")
        read -r pp tg <<<"$s"
      fi
      note "round $round/$rounds, ${labels[$i]}, $t thread(s): prefill $pp t/s, decode $tg t/s"
      printf 'speed\t%s\t%s\t%s\t%s\t%s\n' "${labels[$i]}" "$round" "$t" "$pp" "$tg" >>"$results"
    done
  done
done
prompt_ids=$(python3 -c "print(','.join(str(i * 37 % 5000 + 100) for i in range(128)))")
for i in "${!labels[@]}"; do
  read -r -a args <<<"${extras[$i]}"
  if [ "${engines[$i]}" = bitnet ]; then
    # `generate`, not `bench`: bench's memory-read probe holds a 1 GiB buffer of its own.
    rss=$(peak_rss "$bitnet" generate --model "${files[$i]}" --prompt-ids "$prompt_ids" --max-new-tokens 64 \
      --temperature 0 --json "${args[@]}")
  else
    rss=$(peak_rss "${engines[$i]}" -m "${files[$i]}" -p 128 -n 64 -r 1)
  fi
  printf 'rss\t%s\t%s\n' "${labels[$i]}" "$rss" >>"$results"
done
for i in "${!labels[@]}"; do
  printf 'row\t%s\t%s\n' "${labels[$i]}" "${compared[$i]}" >>"$results"
done

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
printf '\n%s, %s cores, %s; llama.cpp from llama-cpp-python %s; %s rounds of %s repetitions; tokens/s, medians\n\n' \
  "$cpu" "$(nproc)" "$(date -u +%Y-%m-%d)" "$version" "$rounds" "$reps"
THREADS="$threads" python3 - "$results" <<'PY'
import os, statistics, sys
threads = os.environ["THREADS"].split()
speed, rss, rows, probes = {}, {}, [], {}
for line in open(sys.argv[1]):
    kind, *f = line.rstrip("\n").split("\t")
    if kind == "speed":
        label, rnd, t, pp, tg = f
        speed[(label, rnd, t)] = (float(pp), float(tg))
    elif kind == "probe":
        probes.setdefault((f[0], f[1]), []).append(float(f[2]))
    elif kind == "rss":
        rss[f[0]] = f[1]
    else:
        rows.append((f[0], f[1]))
rounds = sorted({r for (_, r, _) in speed})
def median(values):
    return statistics.median(values) if values else float("nan")
def cells(label, which):
    return [median([speed[(label, r, t)][which] for r in rounds if (label, r, t) in speed]) for t in threads]
print("| engine, file (head) |" + "".join(f" prefill {t}t |" for t in threads)
      + "".join(f" decode {t}t |" for t in threads) + " peak RSS (MiB) |")
print("|---|" + "---:|" * (2 * len(threads) + 1))
for label, _ in rows:
    pp, tg = cells(label, 0), cells(label, 1)
    print(f"| {label} |" + "".join(f" {v:.1f} |" for v in pp) + "".join(f" {v:.2f} |" for v in tg)
          + f" {rss.get(label, '?')} |")
pairs = [(label, peer) for label, peer in rows if peer != "-"]
if pairs:
    print("\nRatios to the other engine on the same file (the median of the rounds' ratios; each round's in"
          " brackets):\n")
    for label, peer in pairs:
        parts = []
        for which, name in ((0, "prefill"), (1, "decode")):
            for t in threads:
                per = [speed[(label, r, t)][which] / speed[(peer, r, t)][which] for r in rounds
                       if (label, r, t) in speed and (peer, r, t) in speed and speed[(peer, r, t)][which] > 0]
                parts.append(f"{name} {t}t {median(per):.2f}x [" + " ".join(f"{v:.2f}" for v in per) + "]")
        print(f"- {label} / {peer}: " + "; ".join(parts))
if probes:
    # Decode reads every weight once per token, so its speed follows this machine's memory bandwidth, which a
    # virtual machine's neighbours move: each round's read rate, to set its ratios against.
    print("\nMemory read probe (bitnet bench's plain read of 1 GiB around each of its measurements), GiB/s, each"
          " round's range:\n")
    for t in threads:
        per = [f"{min(probes[(r, t)]):.1f}-{max(probes[(r, t)]):.1f}" for r in rounds if (r, t) in probes]
        print(f"- {t} thread(s): " + ", ".join(per))
PY
