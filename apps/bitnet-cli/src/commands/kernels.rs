//! `bitnet kernels`: what the compute core detected on this machine.

use anyhow::Result;
use bitnet_train::models::backend::kernels::dispatch::KERNEL_ENV;
use bitnet_train::models::backend::kernels::pool::THREADS_ENV;
use bitnet_train::models::backend::kernels::Kernel;

/// Prints the available and selected kernels and the thread count.
pub fn run() -> Result<()> {
    let forced = Kernel::from_env()?;
    let names: Vec<&str> = Kernel::available().iter().map(|k| k.name()).collect();
    println!("available kernels (fastest first): {}", names.join(", "));
    println!("selected kernel: {}", forced.unwrap_or_else(Kernel::best));
    if forced.is_some() {
        println!("  (forced by {KERNEL_ENV})");
    }
    let threads = std::env::var(THREADS_ENV)
        .unwrap_or_else(|_| std::thread::available_parallelism().map_or(1, |n| n.get()).to_string());
    println!("threads: {threads}");
    Ok(())
}
