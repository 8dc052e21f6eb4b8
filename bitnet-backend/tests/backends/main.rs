//! The extension on every backend CI runs (Flex, wgpu on lavapipe, candle's CPU device), one test binary: each
//! binary links burn and its backends again, which costs CI disk and link time. The CUDA tests keep a binary of
//! their own (`cuda.rs`), built here and run on a GPU host.

#[path = "../common/mod.rs"]
mod common;

mod candle;
mod cpu;
mod wgpu;
