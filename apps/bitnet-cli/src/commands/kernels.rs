//! `bitnet kernels`: what the compute core detected on this machine.

use crate::output;
use anyhow::Result;
use bitnet_models::backend::kernels::dispatch::KERNEL_ENV;
use bitnet_models::backend::kernels::pool::{default_threads, THREADS_ENV};
use bitnet_models::backend::kernels::Kernel;

/// Prints the available and selected kernels and the thread count.
pub fn run() -> Result<()> {
    let forced = Kernel::from_env()?;
    let names: Vec<&str> = Kernel::available().iter().map(|k| k.name()).collect();
    let mut text = format!("available kernels (fastest first): {}\n", names.join(", "));
    text += &format!("selected kernel: {}\n", forced.unwrap_or_else(Kernel::best));
    if forced.is_some() {
        text += &format!("  (forced by {KERNEL_ENV})\n");
    }
    text += &format!("threads: {} (--threads, {THREADS_ENV}, else the CPUs this process may use)\n", default_threads());
    output::print(&text)
}
