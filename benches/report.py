"""Prints the kernels benchmark as a markdown table from criterion's saved results.

    cargo bench -p bitnet-benches --bench kernels
    python3 benches/report.py [target/criterion]

Columns: median time per call, throughput in GiB/s of weights read (criterion's Throughput::Bytes), and the
ratio to the memory-read probe with the same number of threads (bandwidth/read/<N>t).
"""

import json
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "criterion")
rows = []
for dirpath, _dirs, files in os.walk(root):
    if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
        continue
    with open(os.path.join(dirpath, "benchmark.json")) as f:
        bench = json.load(f)
    with open(os.path.join(dirpath, "estimates.json")) as f:
        median_ns = json.load(f)["median"]["point_estimate"]
    nbytes = (bench.get("throughput") or {}).get("Bytes")
    rows.append((bench["full_id"], median_ns, nbytes / median_ns * 1e9 / 2**30 if nbytes else None))

probe = {}
for full_id, _, gib in rows:
    if full_id.startswith("bandwidth/read/"):
        probe[full_id.rsplit("/", 1)[1]] = gib


def fmt_time(ns):
    return f"{ns / 1e6:.2f} ms" if ns >= 1e6 else f"{ns / 1e3:.1f} µs"


print("| benchmark | median | GiB/s | vs probe |")
print("|---|---:|---:|---:|")
order = ["bandwidth", "ternary_gemv", "ternary_gemv_cached", "f32_gemv", "lm_head"]
rows.sort(key=lambda r: (order.index(r[0].split("/")[0]) if r[0].split("/")[0] in order else 99, r[0]))
for full_id, ns, gib in rows:
    threads = full_id.rsplit("/", 1)[1]
    cached = full_id.startswith("ternary_gemv_cached/")
    ratio = f"{gib / probe[threads]:.0%}" if gib and threads in probe and not cached else ""
    print(f"| {full_id} | {fmt_time(ns)} | {gib:.1f} | {ratio} |" if gib else f"| {full_id} | {fmt_time(ns)} | | |")
