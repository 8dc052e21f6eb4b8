//! The integration tests of bitnet-train, one test binary (each binary links burn and its backends again, which
//! costs CI disk and link time).

mod init_from;
mod train_export;
mod wgpu;
