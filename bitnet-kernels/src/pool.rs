//! A small persistent thread pool for the kernels, built to keep going when other processes compete for the
//! cores.
//!
//! Decode calls the kernels hundreds of times per token, each call a few tens of microseconds of work, so the
//! pool keeps its workers alive across calls. A job is cut into chunks (`ThreadPool::run(chunks, job)`), and the
//! chunks into one contiguous run per thread (the caller's first). Each thread takes the chunks of its own run
//! in order, then those left in the others' runs: so each thread reads one contiguous stretch of memory while
//! all are busy (its prefetches are not wasted on another thread's rows), work a descheduled worker has not
//! started is done by whoever is free, and the caller never waits for a worker that has not joined the job (it
//! waits only for chunks in progress). Idle workers spin briefly (a new job usually follows within microseconds),
//! yield, and then park on a condition variable. Each chunk computes its outputs alone, in a fixed order, so results
//! are identical for any thread count and any assignment of chunks to threads.

use crate::error::{KernelError, Result};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;

/// Environment variable with the default thread count of [`global_pool`].
pub const THREADS_ENV: &str = "BITNET_THREADS";

/// How long an idle worker spins before it yields (iterations of `spin_loop`, a few microseconds).
const SPIN_ITERATIONS: u32 = 1 << 12;
/// How many times an idle worker yields its core before it parks.
const YIELDS: u32 = 16;

type Job = dyn Fn(usize) + Sync;

/// A job pointer whose lifetime `run` guarantees by waiting for every worker inside the job.
#[derive(Clone, Copy)]
struct JobRef(*const Job);
// SAFETY: the pointee is `Sync` and outlives every use (see `ThreadPool::run`).
unsafe impl Send for JobRef {}

struct State {
    job: Option<JobRef>,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Generation of the latest job (workers watch it).
    generation: AtomicU64,
    /// The generation whose job may still be joined, 0 once the caller closed it.
    open: AtomicU64,
    /// Workers inside the current job.
    active: AtomicUsize,
    /// Workers parked on `wake`.
    sleepers: AtomicUsize,
    /// The current job's chunks, one contiguous run per thread (index 0 the caller's, `i` worker `i`'s).
    runs: Box<[ChunkRun]>,
    /// Chunks finished.
    done: AtomicUsize,
    worker_panicked: AtomicBool,
}

/// One thread's share of a job's chunks: `next..end`, taken in order by its owner and, once their own runs
/// are empty, by the other threads. On its own cache line, so that an owner taking its chunks does not
/// contend with the others' counters.
#[repr(align(128))]
struct ChunkRun {
    next: AtomicUsize,
    end: AtomicUsize,
}

impl Shared {
    /// Takes and runs chunks of the current job until none is left, starting with the run of thread `me`;
    /// `true` if one of them panicked.
    fn work(&self, me: usize, job: &(dyn Fn(usize) + Sync + '_)) -> bool {
        let mut panicked = false;
        let mut finished = 0;
        let threads = self.runs.len();
        for k in 0..threads {
            let run = &self.runs[(me + k) % threads];
            let end = run.end.load(Ordering::Acquire);
            loop {
                let chunk = run.next.fetch_add(1, Ordering::AcqRel);
                if chunk >= end {
                    break;
                }
                panicked |= catch_unwind(AssertUnwindSafe(|| job(chunk))).is_err();
                finished += 1;
            }
        }
        // One update per thread and job, not per chunk: the caller waits for the total.
        self.done.fetch_add(finished, Ordering::AcqRel);
        panicked
    }
}

/// Waits for `ready()` without holding the core: spins briefly, then yields.
fn wait_until(ready: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !ready() {
        spins = spins.saturating_add(1);
        if spins < SPIN_ITERATIONS {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
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
            state: Mutex::new(State { job: None, shutdown: false }),
            wake: Condvar::new(),
            generation: AtomicU64::new(0),
            open: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            runs: (0..threads).map(|_| ChunkRun { next: AtomicUsize::new(0), end: AtomicUsize::new(0) }).collect(),
            done: AtomicUsize::new(0),
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

    /// Number of threads a job may run on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// How many threads read memory at once in a job of `chunks` chunks (at most one per chunk): what sets a
    /// streaming kernel's prefetch distance (`crate::prefetch::ahead_avx512`).
    pub fn streams(&self, chunks: usize) -> usize {
        chunks.clamp(1, self.threads)
    }

    /// Runs `job(c)` for every chunk `c` in `0..chunks`, on the calling thread and whichever workers join, and
    /// returns when all chunks are done. Every chunk runs exactly once. A panic in any chunk is re-raised here
    /// after the others have finished.
    pub fn run(&self, chunks: usize, job: &(dyn Fn(usize) + Sync)) {
        if self.threads == 1 || chunks <= 1 {
            for chunk in 0..chunks {
                job(chunk);
            }
            return;
        }
        let _serial = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let shared = &*self.shared;
        // SAFETY: erases the borrow's lifetime; no worker uses the job after `run` returns: the job is closed
        // below and `run` then waits for every worker that joined it (`active`), and a worker that joins later
        // sees the job closed and leaves without touching it.
        let job_ref = JobRef(unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Job>(job) });
        for (t, run) in shared.runs.iter().enumerate() {
            let range = split_range(chunks, self.threads, t, 1);
            run.next.store(range.start, Ordering::SeqCst);
            run.end.store(range.end, Ordering::SeqCst);
        }
        shared.done.store(0, Ordering::SeqCst);
        let generation = {
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.job = Some(job_ref);
            let generation = shared.generation.load(Ordering::SeqCst) + 1;
            shared.open.store(generation, Ordering::SeqCst);
            shared.generation.store(generation, Ordering::SeqCst);
            generation
        };
        if shared.sleepers.load(Ordering::SeqCst) > 0 {
            shared.wake.notify_all();
        }
        let own_panic = shared.work(0, job);
        // Chunks other threads took may still run.
        wait_until(|| shared.done.load(Ordering::Acquire) >= chunks);
        // Close the job (Dekker-style with the workers' `active` increment, both SeqCst): a worker either
        // joined before this store and is waited for, or sees the job closed and leaves.
        let _ = shared.open.compare_exchange(generation, 0, Ordering::SeqCst, Ordering::SeqCst);
        wait_until(|| shared.active.load(Ordering::SeqCst) == 0);
        shared.state.lock().unwrap_or_else(|e| e.into_inner()).job = None;
        if own_panic || shared.worker_panicked.swap(false, Ordering::SeqCst) {
            resume_unwind(Box::new("a bitnet-kernels pool job panicked"));
        }
    }
}

/// The loop of worker `index` (1 to `threads - 1`): waits for a job, works on it from its own run of chunks.
fn worker_loop(shared: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for a new generation: spin, yield, then park.
        let mut spins = 0u32;
        while shared.generation.load(Ordering::Acquire) == seen {
            spins += 1;
            if spins < SPIN_ITERATIONS {
                std::hint::spin_loop();
            } else if spins < SPIN_ITERATIONS + YIELDS {
                std::thread::yield_now();
            } else {
                let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                shared.sleepers.fetch_add(1, Ordering::SeqCst);
                while shared.generation.load(Ordering::SeqCst) == seen && !state.shutdown {
                    state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                shared.sleepers.fetch_sub(1, Ordering::SeqCst);
                if state.shutdown {
                    return;
                }
                break;
            }
        }
        let generation = shared.generation.load(Ordering::SeqCst);
        seen = generation;
        shared.active.fetch_add(1, Ordering::SeqCst);
        if shared.open.load(Ordering::SeqCst) == generation {
            let job = shared.state.lock().unwrap_or_else(|e| e.into_inner()).job;
            if let Some(JobRef(ptr)) = job {
                // SAFETY: the job is open and this worker is counted in `active`, so `run` has not returned
                // and keeps the job alive until this worker leaves (see `ThreadPool::run`).
                if shared.work(index, unsafe { &*ptr }) {
                    shared.worker_panicked.store(true, Ordering::SeqCst);
                }
            }
        }
        shared.active.fetch_sub(1, Ordering::SeqCst);
        if shared.state.lock().unwrap_or_else(|e| e.into_inner()).shutdown {
            return;
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.shutdown = true;
            // Wake spinning workers too: a new generation with no open job.
            self.shared.generation.fetch_add(1, Ordering::SeqCst);
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

/// Chunks per thread of a dispatch that is split at all.
///
/// The threads finish a job together only if no chunk is left when the first of them runs dry, so the wait
/// at the end of each job is up to one chunk's time; with four per thread (as before) an output head's chunk
/// was an eighth of 650 MB on 2 threads. With 32, 2-thread prefill measured 6-13% faster on a 2-core Zen 3
/// (docs/PERFORMANCE.md, "Threads and load"). A chunk costs one atomic increment.
const CHUNKS_PER_THREAD: usize = 32;

/// How many chunks to cut `items` units of work into on `pool`: one when the work is below `min_items` (a tiny
/// matrix is not worth a dispatch: the caller does it alone), else `CHUNKS_PER_THREAD` per thread (so
/// neither a descheduled thread nor the last chunk leaves much behind), never more than `items`.
pub fn chunk_count(pool: &ThreadPool, items: usize, min_items: usize) -> usize {
    if pool.threads() == 1 || items < min_items {
        1
    } else {
        pool.threads().saturating_mul(CHUNKS_PER_THREAD).min(items).max(1)
    }
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

/// Runs `job(first_row, rows)` over `out` cut into whole rows of `row_len` elements: on the caller alone when
/// `out` holds fewer than `min_len` elements, else in chunks of consecutive rows spread over `pool`. Each call
/// gets its own disjoint, mutable run of rows; the function returns when all are done.
///
/// # Panics
/// If `row_len` is 0 or does not divide `out.len()`.
pub fn for_each_rows<T: Send>(
    pool: &ThreadPool,
    out: &mut [T],
    row_len: usize,
    min_len: usize,
    job: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    assert!(
        row_len > 0 && out.len().is_multiple_of(row_len),
        "for_each_rows: {} elements in rows of {row_len}",
        out.len()
    );
    let rows = out.len() / row_len;
    let chunks = if out.len() < min_len { 1 } else { chunk_count(pool, rows, 1) };
    if chunks <= 1 {
        return job(0, out);
    }
    let base = RowsPtr(out.as_mut_ptr());
    pool.run(chunks, &|chunk| {
        let range = split_range(rows, chunks, chunk, 1);
        if !range.is_empty() {
            // SAFETY: `split_range` gives disjoint ranges inside `0..rows`, so each chunk owns its rows of `out`,
            // which outlives `run` (it returns only after every chunk has finished).
            let rows = unsafe { std::slice::from_raw_parts_mut(base.at(range.start * row_len), range.len() * row_len) };
            job(range.start, rows);
        }
    });
}

/// The start of the buffer that [`for_each_rows`] hands out in disjoint runs.
struct RowsPtr<T>(*mut T);
// SAFETY: each chunk touches only its own rows (see `for_each_rows`).
unsafe impl<T: Send> Sync for RowsPtr<T> {}

impl<T> RowsPtr<T> {
    /// # Safety
    /// `offset` is within the buffer.
    unsafe fn at(&self, offset: usize) -> *mut T {
        unsafe { self.0.add(offset) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_each_rows_hands_every_row_to_one_call() {
        for threads in 1..=3 {
            let pool = ThreadPool::new(threads).unwrap();
            for (rows, row_len, min_len) in [(0, 3, 0), (1, 4, 0), (7, 3, 0), (50, 2, 0), (50, 2, 1000)] {
                let mut out = vec![0usize; rows * row_len];
                for_each_rows(&pool, &mut out, row_len, min_len, &|first, chunk| {
                    assert_eq!(chunk.len() % row_len, 0);
                    for (i, x) in chunk.iter_mut().enumerate() {
                        *x += first * row_len + i + 1;
                    }
                });
                let want: Vec<usize> = (1..=rows * row_len).collect();
                assert_eq!(out, want, "{threads} threads, {rows} rows of {row_len}");
            }
        }
    }

    #[test]
    fn every_chunk_runs_once_per_call() {
        for threads in 1..=4 {
            let pool = ThreadPool::new(threads).unwrap();
            for round in 0..300 {
                let chunks = round % 17;
                let hits: Vec<AtomicUsize> = (0..chunks).map(|_| AtomicUsize::new(0)).collect();
                pool.run(chunks, &|c| {
                    hits[c].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{threads} threads, {chunks} chunks");
            }
        }
    }

    #[test]
    fn a_stalled_worker_does_not_hold_the_caller() {
        // One worker is kept busy outside the pool's control by a chunk that blocks until the caller has done
        // every other chunk: the caller takes them all instead of waiting for a static share to be done.
        let pool = ThreadPool::new(2).unwrap();
        let others_done = AtomicUsize::new(0);
        let chunks = 64;
        let stalled = AtomicBool::new(false);
        pool.run(chunks, &|_| {
            if !stalled.swap(true, Ordering::SeqCst) {
                // The first chunk taken waits for the other 63.
                let started = std::time::Instant::now();
                while others_done.load(Ordering::SeqCst) < chunks - 1 {
                    assert!(started.elapsed().as_secs() < 10, "the other chunks were not taken");
                    std::thread::yield_now();
                }
            } else {
                others_done.fetch_add(1, Ordering::SeqCst);
            }
        });
        assert_eq!(others_done.load(Ordering::SeqCst), chunks - 1);
    }

    #[test]
    fn a_worker_starts_on_its_own_run_of_chunks() {
        // The caller holds its first chunk until the worker has finished one: the worker, alone, must have
        // started where its contiguous run begins (chunk 32 of 64), not next to the caller's chunk.
        let pool = ThreadPool::new(2).unwrap();
        let caller = std::thread::current().id();
        let worker_chunks = Mutex::new(Vec::new());
        pool.run(64, &|c| {
            if std::thread::current().id() == caller {
                if c == 0 {
                    let started = std::time::Instant::now();
                    while worker_chunks.lock().unwrap().is_empty() {
                        assert!(started.elapsed().as_secs() < 10, "the worker never took a chunk");
                        std::thread::yield_now();
                    }
                }
            } else {
                worker_chunks.lock().unwrap().push(c);
            }
        });
        let taken = worker_chunks.into_inner().unwrap();
        assert_eq!(taken.first(), Some(&32), "the worker's chunks: {taken:?}");
        assert!(taken.windows(2).all(|w| w[0] < w[1] || w[1] < 32), "in order within a run: {taken:?}");
    }

    #[test]
    fn zero_threads_is_an_error() {
        assert!(ThreadPool::new(0).is_err());
    }

    #[test]
    fn a_panicking_chunk_reaches_the_caller_and_the_pool_survives() {
        let pool = ThreadPool::new(2).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(8, &|c| {
                if c == 5 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        pool.run(8, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn global_pool_takes_its_size_once() {
        assert!(init_global_pool(0).is_err() && init_global_pool(MAX_THREADS + 1).is_err());
        let threads = global_pool().threads();
        assert!(init_global_pool(threads).is_ok(), "the same count is accepted");
        assert!(init_global_pool(threads + 1).is_err(), "a second, different count is refused");
    }

    #[test]
    fn streams_are_at_most_one_per_chunk_and_the_pool_size() {
        let pool = ThreadPool::new(3).unwrap();
        assert_eq!([0, 1, 2, 3, 64].map(|chunks| pool.streams(chunks)), [1, 1, 2, 3, 3]);
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
