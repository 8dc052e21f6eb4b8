//! Token windows for language-model training, and the burn data loaders over them.
//!
//! A text is tokenized once into one token stream and cut into consecutive, non-overlapping windows of
//! `context` tokens; a window `w` is the example `inputs = w[..C-1]`, `targets = w[1..]`.
//!
//! * Training ([`TrainLoader`]): full windows only, visited in a permutation drawn from the seed; pass `p` over the
//!   data uses the permutation of `(seed, p)`. One burn-train "epoch" is one checkpoint interval of
//!   `steps_per_epoch` batches, so the stream of batches is a pure function of (seed, global step) and a resumed
//!   run sees exactly the batches the interrupted one would have.
//! * Validation ([`ValidLoader`]): every window in order, the last (shorter, >= 2 tokens) one in a batch of its
//!   own. Scoring every target once makes the token-weighted mean loss the same number `bitnet perplexity
//!   --context C` computes on the same text.

use crate::ddp::Shard;
use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Reads a UTF-8 text file, gunzipping it first when its name ends in `.gz`.
pub fn read_text(path: &std::path::Path) -> crate::Result<String> {
    Ok(bitnet_models::io::read_text(path)?)
}

/// One batch: `inputs` and `targets`, both `[batch, T]`.
#[derive(Debug, Clone)]
pub struct LmBatch<B: Backend> {
    /// Input tokens.
    pub inputs: Tensor<B, 2, Int>,
    /// Next-token targets.
    pub targets: Tensor<B, 2, Int>,
}

/// A token stream cut into windows of `context` tokens.
#[derive(Debug)]
pub struct TokenWindows {
    tokens: Vec<u32>,
    context: usize,
}

impl TokenWindows {
    /// Windows of `context >= 2` tokens over `tokens`.
    pub fn new(tokens: Vec<u32>, context: usize) -> Self {
        assert!(context >= 2, "a window needs at least 2 tokens");
        Self { tokens, context }
    }

    /// Tokens in the stream.
    pub fn len_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Window length.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Full windows.
    pub fn full_windows(&self) -> usize {
        self.tokens.len() / self.context
    }

    /// The tail window (`2..context` tokens), if any.
    pub fn tail(&self) -> Option<&[u32]> {
        let start = self.full_windows() * self.context;
        (self.tokens.len() - start >= 2).then(|| &self.tokens[start..])
    }

    /// Window `i` (full).
    pub fn window(&self, i: usize) -> &[u32] {
        &self.tokens[i * self.context..(i + 1) * self.context]
    }

    /// A checksum of the token stream and the window length.
    pub fn digest(&self) -> u64 {
        let mut bytes: Vec<u8> = (self.context as u64).to_le_bytes().to_vec();
        bytes.extend(self.tokens.iter().flat_map(|t| t.to_le_bytes()));
        crate::checkpoint::checksum(&bytes)
    }

    /// Tokens scored by the validation definition: every token but the first of each window.
    pub fn scored_tokens(&self) -> usize {
        self.full_windows() * (self.context - 1) + self.tail().map_or(0, |t| t.len() - 1)
    }
}

/// Builds the batch of `windows` (all of one length).
pub fn batch_of<B: Backend>(windows: &[&[u32]], device: &B::Device) -> LmBatch<B> {
    let t = windows[0].len() - 1;
    let mut inputs = Vec::with_capacity(windows.len() * t);
    let mut targets = Vec::with_capacity(windows.len() * t);
    for w in windows {
        debug_assert_eq!(w.len(), t + 1);
        inputs.extend(w[..t].iter().map(|&x| x as i64));
        targets.extend(w[1..].iter().map(|&x| x as i64));
    }
    let shape = [windows.len(), t];
    LmBatch {
        inputs: Tensor::from_data(TensorData::new(inputs, shape), device),
        targets: Tensor::from_data(TensorData::new(targets, shape), device),
    }
}

/// The index of the window at global position `g` of the training stream: position `g % n` of the permutation
/// of pass `g / n` (Fisher-Yates with splitmix64 seeded by `seed` and the pass).
fn permutation(n: usize, seed: u64, pass: u64) -> Vec<usize> {
    let mut state = seed ^ pass.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// The training loader: `steps_per_epoch` batches per burn-train epoch, deterministic by seed and step.
pub struct TrainLoader<B: Backend> {
    data: Arc<TokenWindows>,
    batch_size: usize,
    steps_per_epoch: usize,
    seed: u64,
    /// Epochs started so far (shared with copies made by `to_device`).
    epoch: Arc<AtomicUsize>,
    /// This process's share of each combined batch (data-parallel runs).
    shard: Shard,
    device: B::Device,
}

impl<B: Backend> TrainLoader<B> {
    /// A loader that starts at epoch `first_epoch` (0 for a fresh run; the checkpoint's epoch when resuming).
    pub fn new(
        data: Arc<TokenWindows>,
        batch_size: usize,
        steps_per_epoch: usize,
        seed: u64,
        first_epoch: usize,
        device: B::Device,
    ) -> Self {
        assert!(data.full_windows() > 0 && batch_size > 0 && steps_per_epoch > 0);
        let epoch = Arc::new(AtomicUsize::new(first_epoch));
        Self { data, batch_size, steps_per_epoch, seed, epoch, shard: Shard::WHOLE, device }
    }

    /// The loader of one rank of a data-parallel run: its `batch_size` windows are its share of the combined
    /// batch of `shard.count · batch_size` windows that a single-process loader with that batch size draws.
    pub fn with_shard(mut self, shard: Shard) -> Self {
        assert!(shard.index < shard.count);
        self.shard = shard;
        self
    }

    /// The window indices of global step `step` (this shard's part of the combined batch).
    pub fn step_windows(&self, step: usize) -> Vec<usize> {
        let n = self.data.full_windows();
        let combined = self.batch_size * self.shard.count;
        let mut out = Vec::with_capacity(self.batch_size);
        let mut cached: Option<(u64, Vec<usize>)> = None;
        for b in 0..self.batch_size {
            let g = step * combined + self.shard.index * self.batch_size + b;
            let pass = (g / n) as u64;
            if cached.as_ref().is_none_or(|(p, _)| *p != pass) {
                cached = Some((pass, permutation(n, self.seed, pass)));
            }
            out.push(cached.as_ref().map(|(_, order)| order[g % n]).unwrap_or(0));
        }
        out
    }
}

struct TrainIter<'a, B: Backend> {
    loader: &'a TrainLoader<B>,
    first_step: usize,
    done: usize,
}

impl<B: Backend> Iterator for TrainIter<'_, B> {
    type Item = LmBatch<B>;

    fn next(&mut self) -> Option<LmBatch<B>> {
        if self.done == self.loader.steps_per_epoch {
            return None;
        }
        let indices = self.loader.step_windows(self.first_step + self.done);
        let windows: Vec<&[u32]> = indices.iter().map(|&i| self.loader.data.window(i)).collect();
        self.done += 1;
        Some(batch_of(&windows, &self.loader.device))
    }
}

impl<B: Backend> DataLoaderIterator<LmBatch<B>> for TrainIter<'_, B> {
    fn progress(&self) -> Progress {
        let bs = self.loader.batch_size;
        Progress::new(self.done * bs, self.loader.steps_per_epoch * bs)
    }
}

impl<B: Backend> DataLoader<B, LmBatch<B>> for TrainLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<LmBatch<B>> + 'a> {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst);
        Box::new(TrainIter { loader: self, first_step: epoch * self.steps_per_epoch, done: 0 })
    }

    fn num_items(&self) -> usize {
        self.steps_per_epoch * self.batch_size
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, LmBatch<B>>> {
        Arc::new(Self {
            data: self.data.clone(),
            batch_size: self.batch_size,
            steps_per_epoch: self.steps_per_epoch,
            seed: self.seed,
            epoch: self.epoch.clone(),
            shard: self.shard,
            device: device.clone(),
        })
    }

    fn slice(&self, _start: usize, _end: usize) -> Arc<dyn DataLoader<B, LmBatch<B>>> {
        // Splitting across devices is not supported: the whole stream goes to one device.
        self.to_device(&self.device)
    }
}

/// The validation loader: every window once, in order.
pub struct ValidLoader<B: Backend> {
    data: Arc<TokenWindows>,
    batch_size: usize,
    device: B::Device,
}

impl<B: Backend> ValidLoader<B> {
    /// A loader over all windows of `data`.
    pub fn new(data: Arc<TokenWindows>, batch_size: usize, device: B::Device) -> Self {
        assert!(batch_size > 0);
        Self { data, batch_size, device }
    }

    /// The batches: groups of `batch_size` full windows, then the tail window alone.
    pub fn batches(&self) -> Vec<Vec<&[u32]>> {
        let n = self.data.full_windows();
        let mut out: Vec<Vec<&[u32]>> = (0..n)
            .collect::<Vec<_>>()
            .chunks(self.batch_size)
            .map(|c| c.iter().map(|&i| self.data.window(i)).collect())
            .collect();
        if let Some(tail) = self.data.tail() {
            out.push(vec![tail]);
        }
        out
    }
}

struct ValidIter<'a, B: Backend> {
    loader: &'a ValidLoader<B>,
    batches: Vec<Vec<&'a [u32]>>,
    next: usize,
    items: usize,
}

impl<B: Backend> Iterator for ValidIter<'_, B> {
    type Item = LmBatch<B>;

    fn next(&mut self) -> Option<LmBatch<B>> {
        let batch = self.batches.get(self.next)?;
        self.next += 1;
        self.items += batch.len();
        Some(batch_of(batch, &self.loader.device))
    }
}

impl<B: Backend> DataLoaderIterator<LmBatch<B>> for ValidIter<'_, B> {
    fn progress(&self) -> Progress {
        Progress::new(self.items, self.loader.num_items())
    }
}

impl<B: Backend> DataLoader<B, LmBatch<B>> for ValidLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<LmBatch<B>> + 'a> {
        Box::new(ValidIter { loader: self, batches: self.batches(), next: 0, items: 0 })
    }

    fn num_items(&self) -> usize {
        self.data.full_windows() + usize::from(self.data.tail().is_some())
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, LmBatch<B>>> {
        Arc::new(Self { data: self.data.clone(), batch_size: self.batch_size, device: device.clone() })
    }

    fn slice(&self, _start: usize, _end: usize) -> Arc<dyn DataLoader<B, LmBatch<B>>> {
        self.to_device(&self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_permutations_and_depend_on_seed_and_pass() {
        let a = permutation(100, 1, 0);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(a, permutation(100, 2, 0));
        assert_ne!(a, permutation(100, 1, 1));
        assert_eq!(a, permutation(100, 1, 0));
    }

    #[test]
    fn windows_and_tail_cover_every_scored_token_once() {
        let w = TokenWindows::new((0..23).collect(), 5);
        assert_eq!(w.full_windows(), 4);
        assert_eq!(w.tail(), Some(&[20u32, 21, 22][..]));
        assert_eq!(w.scored_tokens(), 4 * 4 + 2);
        let w = TokenWindows::new((0..21).collect(), 5);
        assert_eq!(w.tail(), None, "a 1-token tail scores nothing");
    }

    #[test]
    fn shards_of_a_step_are_the_combined_batch_in_rank_order() {
        type B = burn::backend::Flex;
        let data = Arc::new(TokenWindows::new((0..400).collect(), 4));
        let loader =
            |batch, shard| TrainLoader::<B>::new(data.clone(), batch, 3, 7, 0, Default::default()).with_shard(shard);
        let whole = loader(6, Shard::WHOLE);
        let ranks: Vec<_> = (0..3).map(|index| loader(2, Shard { index, count: 3 })).collect();
        // Across passes over the 100 windows too (step 20 starts pass 1).
        for step in [0, 1, 5, 16, 17, 40] {
            let joined: Vec<usize> = ranks.iter().flat_map(|r| r.step_windows(step)).collect();
            assert_eq!(joined, whole.step_windows(step), "step {step}");
        }
        assert_ne!(ranks[0].step_windows(0), ranks[1].step_windows(0));
    }
}
