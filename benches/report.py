"""Prints the kernels benchmark as a markdown table from criterion's saved results.

    cargo bench -p bitnet-benches --bench kernels
    python3 benches/report.py [target/criterion]

Columns: median time per call, throughput in GiB/s of weights read (criterion's Throughput::Bytes), the
ratio to the memory-read probe with the same number of threads (bandwidth/read/<N>t), and for the compute
benchmarks (Throughput::Elements: ternary_gemm, avx2_peak) multiply-accumulates per second.
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
    throughput = bench.get("throughput") or {}
    nbytes, elements = throughput.get("Bytes"), throughput.get("Elements")
    gmacs = elements / median_ns if elements else None
    rows.append((bench["full_id"], median_ns, nbytes / median_ns * 1e9 / 2**30 if nbytes else None, gmacs))

probe = {}
for full_id, _, gib, _ in rows:
    if full_id.startswith("bandwidth/read/"):
        probe[full_id.rsplit("/", 1)[1]] = gib


def fmt_time(ns):
    return f"{ns / 1e6:.2f} ms" if ns >= 1e6 else f"{ns / 1e3:.1f} µs"


print("| benchmark | median | GiB/s | vs probe | GMAC/s |")
print("|---|---:|---:|---:|---:|")
order = ["bandwidth", "ternary_gemv", "ternary_gemv_cached", "f32_gemv", "lm_head"]
rows.sort(key=lambda r: (order.index(r[0].split("/")[0]) if r[0].split("/")[0] in order else 99, r[0]))
for full_id, ns, gib, gmacs in rows:
    threads = full_id.rsplit("/", 1)[1]
    cached = full_id.startswith("ternary_gemv_cached/")
    ratio = f"{gib / probe[threads]:.0%}" if gib and threads in probe and not cached else ""
    gib_cell = f"{gib:.1f}" if gib else ""
    gmacs_cell = f"{gmacs:.1f}" if gmacs else ""
    print(f"| {full_id} | {fmt_time(ns)} | {gib_cell} | {ratio} | {gmacs_cell} |")
