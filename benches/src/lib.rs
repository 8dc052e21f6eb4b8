//! Criterion benchmarks of BitNet-Rust; see `benches/` and README.md.
