#!/usr/bin/env bash
# The project's test command (README.md). Checks formatting, lints and the API docs, runs every test of the
# workspace with all backends (CPU, wgpu on the Vulkan software driver lavapipe, candle; cuda compiles and its
# GPU tests are ignored without a GPU), then the bitnet-kernels tests compiled for aarch64 and run under qemu-user (the NEON and dotprod kernels).
#
# Prerequisites it installs when missing (apt-get needs root):
#   mesa-vulkan-drivers (lavapipe, for the wgpu tests); python3-venv and curl (the openai client test);
#   gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user and the rustup target aarch64-unknown-linux-gnu
#   (skip that part with BITNET_SKIP_AARCH64=1); the nightly toolchain and cargo-fuzz for the short fuzz run
#   (skip it with BITNET_SKIP_FUZZ=1).
set -euo pipefail
cd "$(dirname "$0")/.."

jobs="${CARGO_BUILD_JOBS:-2}"
step() { printf '\n==> %s\n' "$*"; }
# A one-shot CI build gains nothing from incremental compilation data, which costs gigabytes of disk, nor from
# line tables in the test binaries (a quarter of their size; panic messages keep their file:line).
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=false
fi
disk() { printf 'disk: %s free; target/ %s\n' "$(df -h --output=avail . | tail -1 | tr -d ' ')" \
  "$(du -sh target 2>/dev/null | cut -f1)"; }
disk

missing=()
for pkg in mesa-vulkan-drivers python3-venv curl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${BITNET_SKIP_AARCH64:-0}" != 1 ]; then
  for pkg in gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
fi
if [ "${#missing[@]}" -gt 0 ]; then
  step "installing ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "error: missing Debian packages: ${missing[*]} (install them as root)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step "format check"
cargo fmt --all -- --check

step "lints (all features)"
cargo clippy -j"$jobs" --workspace --all-targets --all-features -- -D warnings

step "default features compile (the CLI's), benches and tests included"
cargo check -j"$jobs" --workspace --all-targets
disk

step "API docs (default features; rustdoc warnings, such as broken or private links, are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc -j"$jobs" --workspace --no-deps

step "tests (host: $(uname -m), all features: cpu, wgpu on lavapipe, candle; cuda tests need a GPU)"
cargo test -j"$jobs" --workspace --all-features
disk

# Where the default kernel is AVX-512 VNNI, the test run above packs five-trit weights; these run the record and
# five-trit tests again with a kernel that cannot read them (records then load repacked into 2 bits). Same binary.
if [ "$(uname -m)" = x86_64 ] && grep -qw avx2 /proc/cpuinfo; then
  step "packed records and five-trit ops with BITNET_KERNEL=avx2 (five-trit records load repacked into 2 bits)"
  BITNET_KERNEL=avx2 cargo test -j"$jobs" -p bitnet-backend --all-features --test backends -- packed_record five_trit
fi

step "bitnet serve against the official openai Python client (pip, into target/openai-venv)"
bash scripts/test-openai-client.sh target/debug/bitnet

# The fuzz build (fuzz/target) and the aarch64 build need nothing of the host test build: on CI, free its
# gigabytes before they start.
if [ "${CI:-}" = true ]; then
  rm -rf target/debug
  disk
fi

if [ "${BITNET_SKIP_FUZZ:-0}" = 1 ]; then
  step "fuzzing skipped (BITNET_SKIP_FUZZ=1)"
else
  step "fuzz: the parsers of untrusted input, 30 s per target (nightly + cargo-fuzz, installed when missing)"
  FUZZ_SECONDS=30 bash scripts/fuzz.sh
  disk
fi

if [ "${BITNET_SKIP_AARCH64:-0}" = 1 ]; then
  step "aarch64 tests skipped (BITNET_SKIP_AARCH64=1)"
  exit 0
fi

step "aarch64 rust target"
rustup target add aarch64-unknown-linux-gnu >/dev/null

# .cargo/config.toml sets the linker and `qemu-aarch64 -L /usr/aarch64-linux-gnu` as the runner.
step "tests (aarch64 under qemu: NEON with dotprod, the default qemu CPU)"
BITNET_EXPECT_KERNELS=neon-dotprod,neon-plain,scalar \
  cargo test -j"$jobs" -p bitnet-kernels --target aarch64-unknown-linux-gnu

step "tests (aarch64 under qemu, Cortex-A53: plain NEON only, checks run-time detection)"
QEMU_CPU=cortex-a53 BITNET_EXPECT_KERNELS=neon-plain,scalar \
  cargo test -j"$jobs" -p bitnet-kernels --target aarch64-unknown-linux-gnu --test simd_vs_scalar
disk
