#!/usr/bin/env python3
"""Concurrent streaming clients against a running `bitnet serve` (not part of CI; standard library only).

    bitnet serve --model /path/to/model --parallel 8 &
    scripts/bench-serve.py --url http://127.0.0.1:8080 --clients 1 8 --max-tokens 64

For each client count N, N threads send the same kind of streaming text completion at once (greedy, a fixed
prompt of --prompt-tokens ids so every run does the same work) and the script prints, per N: aggregate decode
tokens/s (all tokens after each stream's first, over the wall time from the first first-token to the last
token), the median per-stream decode tokens/s, the median and worst time to first token, and the aggregate
speed-up over N = 1 when it was measured in the same run.
"""

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse


def stream_once(url, prompt_ids, max_tokens, results, index, barrier):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=600)
    body = json.dumps({"prompt": prompt_ids, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}})
    barrier.wait()
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        results[index] = {"error": f"HTTP {response.status}: {response.read()[:200]!r}"}
        return
    first = last = None
    tokens = 0
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
            continue
        now = time.perf_counter()
        if first is None:
            first = now
        last = now
    conn.close()
    results[index] = {"start": start, "first": first, "last": last, "tokens": tokens}


def run(url, clients, prompt_ids, max_tokens):
    results = [None] * clients
    barrier = threading.Barrier(clients)
    threads = [threading.Thread(target=stream_once, args=(url, prompt_ids, max_tokens, results, i, barrier))
               for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        sys.exit(f"bench-serve: {len(errors)} of {clients} requests failed: {errors[0]}")
    decoded = sum(r["tokens"] - 1 for r in results)
    span = max(r["last"] for r in results) - min(r["first"] for r in results)
    per_stream = [(r["tokens"] - 1) / (r["last"] - r["first"]) for r in results if r["last"] > r["first"]]
    ttft = [r["first"] - r["start"] for r in results]
    return {
        "clients": clients,
        "aggregate": decoded / span if span > 0 else float("nan"),
        "per_stream": statistics.median(per_stream) if per_stream else float("nan"),
        "ttft_median": statistics.median(ttft),
        "ttft_max": max(ttft),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--runs", type=int, default=2, help="runs per client count; the best is reported")
    args = parser.parse_args()
    prompt = [(i * 7919 + 13) % 1000 + 10 for i in range(args.prompt_tokens)]
    rows = []
    for n in args.clients:
        best = max((run(args.url, n, prompt, args.max_tokens) for _ in range(args.runs)), key=lambda r: r["aggregate"])
        rows.append(best)
        print(f"clients {n}: aggregate {best['aggregate']:.1f} tok/s, per stream {best['per_stream']:.1f} tok/s, "
              f"TTFT median {best['ttft_median'] * 1000:.0f} ms, max {best['ttft_max'] * 1000:.0f} ms",
              file=sys.stderr)
    base = next((r["aggregate"] for r in rows if r["clients"] == 1), None)
    print("| clients | aggregate tok/s | per-stream tok/s | TTFT median (ms) | TTFT max (ms) | vs 1 client |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['aggregate'] / base:.2f}x" if base else "-"
        print(f"| {r['clients']} | {r['aggregate']:.1f} | {r['per_stream']:.1f} | {r['ttft_median'] * 1000:.0f} | "
              f"{r['ttft_max'] * 1000:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
