#!/usr/bin/env bash
# The project's test command (README.md). Runs every test of the workspace on this machine, then the
# bitnet-kernels tests compiled for aarch64 and run under qemu-user (the NEON and dotprod kernels).
#
# Prerequisites it installs when missing (apt-get needs root; set BITNET_SKIP_AARCH64=1 to skip that part):
#   Debian packages gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user, rustup target aarch64-unknown-linux-gnu.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs="${CARGO_BUILD_JOBS:-2}"
step() { printf '\n==> %s\n' "$*"; }

step "format check"
cargo fmt --all -- --check

step "lints"
cargo clippy -j"$jobs" --workspace --all-targets -- -D warnings

step "tests (host: $(uname -m))"
cargo test -j"$jobs" --workspace

step "benchmarks compile"
cargo build -j"$jobs" --workspace --benches --examples

if [ "${BITNET_SKIP_AARCH64:-0}" = 1 ]; then
  step "aarch64 tests skipped (BITNET_SKIP_AARCH64=1)"
  exit 0
fi

step "aarch64 cross toolchain"
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null \
  || [ ! -d /usr/aarch64-linux-gnu/lib ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "error: the aarch64 tests need gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user;" >&2
    echo "       install them as root or set BITNET_SKIP_AARCH64=1" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null
fi
rustup target add aarch64-unknown-linux-gnu >/dev/null

# .cargo/config.toml sets the linker and `qemu-aarch64 -L /usr/aarch64-linux-gnu` as the runner.
step "tests (aarch64 under qemu: NEON with dotprod, the default qemu CPU)"
BITNET_EXPECT_KERNELS=neon-dotprod,neon-plain,scalar \
  cargo test -j"$jobs" -p bitnet-kernels --target aarch64-unknown-linux-gnu

step "tests (aarch64 under qemu, Cortex-A53: plain NEON only, checks run-time detection)"
QEMU_CPU=cortex-a53 BITNET_EXPECT_KERNELS=neon-plain,scalar \
  cargo test -j"$jobs" -p bitnet-kernels --target aarch64-unknown-linux-gnu --test simd_vs_scalar
