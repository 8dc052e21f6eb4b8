//! `bitnet train --processes N`: a data-parallel run of N processes on this machine.
//!
//! This process only supervises: it starts N copies of the same command line as ranks `0..N` of a loopback run
//! (`--nodes N --rank r --coordinator 127.0.0.1:PORT`, a per-rank `--batch-size`, ranks 1.. with their own
//! `--out`), each with its share of the CPU threads, and ends as they end. Rank 0 speaks for the run (its stdout
//! and stderr are this process's); the other ranks' error lines are relayed with their rank. When one rank
//! fails the others are stopped and the run exits with that rank's status; when this process ends, so do the
//! ranks (Linux: `PR_SET_PDEATHSIG`).

use super::device::Device;
use super::train::TrainArgs;
use super::UsageError;
use anyhow::{Context, Result};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Runs `args` as `args.processes` local ranks.
pub fn run_local_ranks(args: &TrainArgs) -> Result<()> {
    let n = args.processes;
    if args.nodes > 1 || args.coordinator.is_some() {
        return Err(
            UsageError("--processes starts its own ranks: drop --nodes, --rank and --coordinator".into()).into()
        );
    }
    if args.device != Device::Cpu {
        return Err(UsageError("--processes splits the CPU: use it with --device cpu".into()).into());
    }
    if n > 256 {
        return Err(UsageError(format!("--processes must be at most 256, got {n}")).into());
    }
    if args.batch_size == 0 || !args.batch_size.is_multiple_of(n as usize) {
        return Err(UsageError(format!(
            "--batch-size {} must be a multiple of --processes {n} (each process trains on its share)",
            args.batch_size
        ))
        .into());
    }
    let threads = bitnet_models::backend::kernels::pool::default_threads();
    let per_rank = (threads / n as usize).max(1).to_string();
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .context("finding a free loopback port for the ranks")?
        .port();
    let exe = std::env::current_exe().context("finding this program to start the ranks")?;
    let command_line: Vec<_> = std::env::args_os().skip(1).collect();
    let (nodes, batch, coordinator) =
        (n.to_string(), (args.batch_size / n as usize).to_string(), format!("127.0.0.1:{port}"));
    let mut ranks: Vec<Child> = Vec::new();
    for rank in 0..n {
        let mut command = Command::new(&exe);
        // Later flags override earlier ones: the user's command line, then this rank's place in the run.
        command.args(&command_line).args(["--processes", "1", "--nodes", &nodes, "--coordinator", &coordinator]);
        command.args(["--rank", &rank.to_string(), "--batch-size", &batch]);
        command.env(bitnet_models::backend::kernels::pool::THREADS_ENV, &per_rank).env("RAYON_NUM_THREADS", &per_rank);
        end_with_this_process(&mut command);
        if rank > 0 {
            if let Some(out) = &args.out {
                command.arg("--out").arg(out.join("ranks").join(rank.to_string()));
            }
            command.stdout(Stdio::null()).stderr(Stdio::piped());
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                stop(&mut ranks);
                return Err(e).context(format!("starting rank {rank}"));
            }
        };
        if let Some(stderr) = child.stderr.take() {
            // Relay the rank's errors (its progress is rank 0's too).
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                    if line.starts_with("error") || line.contains("panicked") {
                        eprintln!("rank {rank}: {line}");
                    }
                }
            });
        }
        ranks.push(child);
    }
    loop {
        let mut running = false;
        for (rank, child) in ranks.iter_mut().enumerate() {
            match child.try_wait().with_context(|| format!("waiting for rank {rank}"))? {
                None => running = true,
                Some(status) if status.success() => {}
                Some(status) => {
                    stop(&mut ranks);
                    eprintln!("error: rank {rank} of the local data-parallel run failed ({status})");
                    std::process::exit(status.code().unwrap_or(1).max(1));
                }
            }
        }
        if !running {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Makes the kernel kill the rank when this process ends, however it ends (SIGKILL included), so that no rank
/// trains on alone.
#[cfg(target_os = "linux")]
fn end_with_this_process(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the child between fork and exec and only calls prctl, which is async-signal-safe
    // and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Elsewhere a rank ends when it loses its peers (its next gradient exchange fails).
#[cfg(not(target_os = "linux"))]
fn end_with_this_process(_: &mut Command) {}

/// Stops every rank still running.
fn stop(ranks: &mut [Child]) {
    for child in ranks.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
