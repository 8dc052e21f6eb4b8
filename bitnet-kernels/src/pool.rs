//! A small persistent thread pool for the kernels.
//!
//! Decode calls the kernels hundreds of times per token, each call a few tens of microseconds of work, so
//! the pool keeps its workers alive across calls: after a job they spin briefly (a new job usually follows
//! within microseconds) and then sleep on a condition variable. [`ThreadPool::run`] hands worker `t` of
//! `T` the index `t` (the caller runs index 0) and returns when all are done; kernels split rows statically
//! by that index, so each output element is computed by exactly one thread in a fixed order and results
//! are identical for any thread count.

use crate::error::{KernelError, Result};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;

/// Environment variable with the default thread count of [`global_pool`].
pub const THREADS_ENV: &str = "BITNET_THREADS";

/// How long an idle worker spins before it sleeps (iterations of `spin_loop`, roughly 50-100 µs).
const SPIN_ITERATIONS: u32 = 1 << 16;

type Job = dyn Fn(usize) + Sync;

/// A job pointer whose lifetime `run` guarantees by waiting for every worker.
#[derive(Clone, Copy)]
struct JobRef(*const Job);
// SAFETY: the pointee is `Sync` and outlives every use (see `ThreadPool::run`).
unsafe impl Send for JobRef {}

struct State {
    generation: u64,
    job: Option<JobRef>,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    generation: AtomicU64,
    pending: AtomicUsize,
    worker_panicked: AtomicBool,
}

/// A fixed-size pool of `threads - 1` workers plus the calling thread.
pub struct ThreadPool {
    threads: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    run_lock: Mutex<()>,
}

impl ThreadPool {
    /// A pool that runs jobs on `threads` threads (the caller included). `threads` must be at least 1.
    pub fn new(threads: usize) -> Result<Self> {
        if threads == 0 {
            return Err(KernelError::ThreadPool("thread count must be at least 1".into()));
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State { generation: 0, job: None, shutdown: false }),
            wake: Condvar::new(),
            generation: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            worker_panicked: AtomicBool::new(false),
        });
        let mut workers = Vec::with_capacity(threads - 1);
        for index in 1..threads {
            let shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("bitnet-kernel-{index}"))
                .spawn(move || worker_loop(&shared, index))
                .map_err(|e| KernelError::ThreadPool(format!("cannot spawn worker: {e}")))?;
            workers.push(handle);
        }
        Ok(Self { threads, shared, workers, run_lock: Mutex::new(()) })
    }

    /// Number of threads a job runs on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `job(t)` for every `t` in `0..threads()` in parallel and waits for all of them.
    /// A panic in any of them is re-raised here after all have finished.
    pub fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        if self.threads == 1 {
            job(0);
            return;
        }
        let _serial = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: erases the borrow's lifetime; we do not return before every worker has finished with
        // the job (the `pending` wait below), and the slot is cleared before returning.
        let job_ref = JobRef(unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Job>(job) });
        self.shared.pending.store(self.threads - 1, Ordering::SeqCst);
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.job = Some(job_ref);
            state.generation += 1;
            self.shared.generation.store(state.generation, Ordering::SeqCst);
        }
        self.shared.wake.notify_all();
        let own = catch_unwind(AssertUnwindSafe(|| job(0)));
        let mut spins = 0u32;
        while self.shared.pending.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < SPIN_ITERATIONS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).job = None;
        if let Err(payload) = own {
            resume_unwind(payload);
        }
        if self.shared.worker_panicked.swap(false, Ordering::SeqCst) {
            panic!("a bitnet-kernels worker thread panicked");
        }
    }
}

fn worker_loop(shared: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        while shared.generation.load(Ordering::Acquire) == seen && spins < SPIN_ITERATIONS {
            std::hint::spin_loop();
            spins += 1;
        }
        let job = {
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            while state.generation == seen && !state.shutdown {
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.shutdown {
                return;
            }
            seen = state.generation;
            state.job
        };
        if let Some(JobRef(ptr)) = job {
            // SAFETY: `run` keeps the job alive until `pending` reaches zero, which happens after this call.
            let job = unsafe { &*ptr };
            if catch_unwind(AssertUnwindSafe(|| job(index))).is_err() {
                shared.worker_panicked.store(true, Ordering::SeqCst);
            }
        }
        shared.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.shutdown = true;
        }
        self.shared.wake.notify_all();
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool").field("threads", &self.threads).finish()
    }
}

/// The largest thread count a pool accepts (far beyond any machine this runs on; a typo such as `--threads 10000`
/// is an error, not ten thousand threads).
pub const MAX_THREADS: usize = 1024;

static GLOBAL_POOL: OnceLock<ThreadPool> = OnceLock::new();

/// The default thread count: `BITNET_THREADS` if set to a positive integer, else the CPUs this process may run on
/// (its affinity mask and cgroup CPU quota, as `std::thread::available_parallelism` reports them).
pub fn default_threads() -> usize {
    std::env::var(THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
        .min(MAX_THREADS)
}

/// Creates the process-wide pool with `threads` threads. It must run before anything uses [`global_pool`]: a pool
/// that already exists with another thread count is an error (the pool is created once per process).
pub fn init_global_pool(threads: usize) -> Result<&'static ThreadPool> {
    if threads == 0 || threads > MAX_THREADS {
        return Err(KernelError::ThreadPool(format!("the thread count must be 1 to {MAX_THREADS}, got {threads}")));
    }
    let mut created = None;
    let pool = GLOBAL_POOL.get_or_init(|| match ThreadPool::new(threads) {
        Ok(pool) => pool,
        Err(e) => {
            created = Some(e);
            ThreadPool::new(1).expect("a one-thread pool spawns nothing")
        }
    });
    if let Some(e) = created {
        return Err(e);
    }
    if pool.threads() != threads {
        return Err(KernelError::ThreadPool(format!(
            "the thread pool already runs {} threads and cannot be resized to {threads}",
            pool.threads()
        )));
    }
    Ok(pool)
}

/// The process-wide pool, created on first use with [`default_threads`] threads (or as [`init_global_pool`] set).
pub fn global_pool() -> &'static ThreadPool {
    GLOBAL_POOL.get_or_init(|| {
        ThreadPool::new(default_threads())
            .unwrap_or_else(|_| ThreadPool::new(1).expect("a one-thread pool spawns nothing"))
    })
}

/// The range of `total` items that part `index` of `parts` takes, each part a multiple of `align` items
/// (the last part takes the remainder). Ranges are contiguous, disjoint and cover `0..total`.
pub fn split_range(total: usize, parts: usize, index: usize, align: usize) -> std::ops::Range<usize> {
    let parts = parts.max(1);
    let align = align.max(1);
    let chunk = total.div_ceil(parts).div_ceil(align) * align;
    let start = (index * chunk).min(total);
    let end = ((index + 1) * chunk).min(total);
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_runs_once_per_call() {
        for threads in 1..=4 {
            let pool = ThreadPool::new(threads).unwrap();
            for _ in 0..200 {
                let hits: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
                pool.run(&|t| {
                    hits[t].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn zero_threads_is_an_error() {
        assert!(ThreadPool::new(0).is_err());
    }

    #[test]
    fn worker_panic_reaches_the_caller_and_pool_survives() {
        let pool = ThreadPool::new(2).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|t| {
                if t == 1 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        pool.run(&|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn global_pool_takes_its_size_once() {
        assert!(init_global_pool(0).is_err() && init_global_pool(MAX_THREADS + 1).is_err());
        let threads = global_pool().threads();
        assert!(init_global_pool(threads).is_ok(), "the same count is accepted");
        assert!(init_global_pool(threads + 1).is_err(), "a second, different count is refused");
    }

    #[test]
    fn split_covers_everything() {
        for total in [0, 1, 5, 64, 641, 6912] {
            for parts in 1..=5 {
                let mut next = 0;
                for i in 0..parts {
                    let r = split_range(total, parts, i, 4);
                    assert_eq!(r.start, next.min(total));
                    next = r.end;
                }
                assert_eq!(next, total);
            }
        }
    }
}
