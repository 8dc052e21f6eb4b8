//! Data-parallel training across processes and machines.
//!
//! `N` processes (ranks `0..N`, one per machine or per device) train one model together. Every rank builds the
//! same starting model (the same seed or `--init-from` checkpoint) and reads the same text; at global step `s`
//! the combined batch is the `N · b` windows the single-process loader would draw with batch size `N · b`, and
//! rank `r` takes windows `r·b .. (r+1)·b` of it ([`Shard`]). After the backward pass every parameter gradient
//! `g_r` is replaced by the mean over ranks `(g_0 + g_1 + … + g_{N-1}) / N`, computed once by rank 0 in rank
//! order and sent back, so every rank's optimizer sees the same bits. Each rank's loss is a mean over its `b · T`
//! target tokens, so that mean of gradients is the gradient of the mean loss over the combined `N · b · T`
//! tokens: the run follows the single-process run with batch size `N · b` step for step, up to the rounding of
//! the summation order. Clipping, AdamW and the schedule then run unchanged on each rank; the ranks' models stay
//! bit-identical, and each validates and checkpoints its own copy; rank 0 exports.
//!
//! The transport (the `link` module) is a star over TCP: rank 0 listens on the coordinator address, the other ranks
//! connect to it, and each step every rank sends its gradients as one frame of little-endian f32 and receives
//! the mean. A handshake refuses ranks whose run differs (architecture, options, data, starting weights,
//! checkpoint) before any step.
//!
//! Why not burn-collective: burn 0.21's multi-node collective (an orchestrator over WebSocket, a peer-to-peer
//! tensor service) ends every global all-reduce with a barrier whose list of arrived peers is never emptied
//! (`global/node/sync.rs` clears a copy of it), so the second all-reduce of a process waits forever; and burn-
//! train 0.21's `DistributedDataParallel` strategy covers the devices of one process on backends with in-process
//! collectives (CubeCL) only.

mod gradients;
mod link;

use crate::error::{Result, TrainError};
use std::sync::{Mutex, OnceLock};

pub(crate) use gradients::{all_reduce_gradients, weights_digest};
use link::Link;

/// Where this process sits in a data-parallel run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataParallel {
    /// Processes in the run (2 to [`MAX_NODES`]).
    pub nodes: u32,
    /// This process's rank, `0..nodes`; rank 0 coordinates.
    pub rank: u32,
    /// `host:port` of rank 0, the same for every rank (rank 0 listens on that port on every interface).
    pub coordinator: String,
}

/// Most processes in a data-parallel run.
pub const MAX_NODES: u32 = 1024;

impl DataParallel {
    /// Checks the settings; the error names the flag.
    pub fn check(&self) -> Result<()> {
        if !(2..=MAX_NODES).contains(&self.nodes) {
            return Err(TrainError::Config(format!("--nodes must be in 2..={MAX_NODES}, got {}", self.nodes)));
        }
        if self.rank >= self.nodes {
            return Err(TrainError::Config(format!(
                "--rank must be in 0..{} (below --nodes), got {}",
                self.nodes, self.rank
            )));
        }
        link::port_of(&self.coordinator)?;
        Ok(())
    }

    /// This rank's share of each combined batch.
    pub fn shard(&self) -> Shard {
        Shard { index: self.rank as usize, count: self.nodes as usize }
    }
}

/// One rank's share of the combined batch: windows `index·b .. (index+1)·b` of every `count · b` windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This rank.
    pub index: usize,
    /// Ranks in the run.
    pub count: usize,
}

impl Shard {
    /// The whole batch (a single-process run).
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };
}

/// The link of this process's run, once joined (a process takes part in at most one run).
static LINK: OnceLock<Mutex<Link>> = OnceLock::new();

/// The interrupter of this process's training loop, set when it joins a run: a failed gradient exchange stops
/// the loop through it (burn-train's step has no error channel).
static INTERRUPTER: OnceLock<burn::train::Interrupter> = OnceLock::new();

/// The first failed exchange of this process's run.
static FAILURE: OnceLock<String> = OnceLock::new();

/// Records the first failure of the run and stops the training loop; the step that failed applies no update,
/// and [`failure`] says why.
fn fail(cause: String) {
    if FAILURE.set(cause.clone()).is_ok() {
        if let Some(interrupter) = INTERRUPTER.get() {
            interrupter.stop(Some(&cause));
        }
    }
}

/// Why this process's run stopped, if a gradient exchange failed (a rank died, the network broke).
pub(crate) fn failure() -> Option<&'static str> {
    FAILURE.get().map(String::as_str)
}

/// Joins the run: rank 0 waits until every other rank has connected with the same `fingerprint` (a digest of
/// everything that must agree: architecture, options, data, starting weights); the others connect to rank 0.
/// A failed exchange later stops the training loop through `interrupter`.
pub(crate) fn join(run: &DataParallel, fingerprint: u64, interrupter: burn::train::Interrupter) -> Result<()> {
    run.check()?;
    let taken = || TrainError::Config("this process already takes part in a data-parallel run".into());
    if LINK.get().is_some() {
        return Err(taken());
    }
    let link = Link::connect(run, fingerprint)?;
    LINK.set(Mutex::new(link)).map_err(|_| taken())?;
    INTERRUPTER.set(interrupter).map_err(|_| taken())
}

/// Replaces `values` by their mean over the ranks (unchanged outside a run); every rank must call it with as
/// many values, as often.
pub(crate) fn mean_over_ranks(values: &mut [f32]) -> Result<()> {
    let Some(link) = LINK.get() else { return Ok(()) };
    let mut link = link.lock().map_err(|_| TrainError::Io("the data-parallel link failed earlier".into()))?;
    link.mean(values)
}

/// Whether this process has joined a run.
pub(crate) fn joined() -> bool {
    LINK.get().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_with_the_flag_named() {
        let run = |nodes, rank, coordinator: &str| DataParallel { nodes, rank, coordinator: coordinator.into() };
        assert!(run(2, 1, "10.0.0.1:29500").check().is_ok());
        for (bad, flag) in [
            (run(1, 0, "127.0.0.1:1"), "--nodes"),
            (run(MAX_NODES + 1, 0, "127.0.0.1:1"), "--nodes"),
            (run(2, 2, "127.0.0.1:1"), "--rank"),
            (run(2, 0, "127.0.0.1"), "--coordinator"),
            (run(2, 0, "127.0.0.1:0"), "--coordinator"),
            (run(2, 0, "127.0.0.1:65536"), "--coordinator"),
            (run(2, 0, ":80"), "--coordinator"),
        ] {
            let message = bad.check().unwrap_err().to_string();
            assert!(message.contains(flag), "{bad:?}: {message}");
        }
    }
}
