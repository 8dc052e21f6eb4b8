//! Continuous batching: many independent generations decoded together, one forward pass per step.
//!
//! A [`BatchEngine`] holds `slots` sequences, each with its own KV cache of `context` positions. Every
//! [`BatchEngine::step`] runs one [`BitNetModel::forward_sequences`] over every active sequence: a decoding
//! sequence adds its last token, a sequence still reading its prompt adds the next chunk of it (the prompt
//! tokens of a step are capped at `prefill_chunk`, shared first come first served, so a long prompt does not
//! stall the sequences already decoding). Decode is memory-bound, so a step of M sequences reads every weight
//! once for all of them.
//!
//! New sequences are admitted between steps into free slots; a sequence that finishes (stop token, length,
//! full context) or whose [`SequenceSink`] reports it closed (the client went away) frees its slot at once.
//! Each sequence samples with its own [`Sampler`]; greedy sequences take the on-device argmax of their row, as
//! [`crate::generate()`] does, so a batched greedy run produces exactly the tokens of a lone one.

use crate::error::{ModelError, Result};
use crate::generate::FinishReason;
use crate::model::{BitNetModel, KvCache, SequenceStep};
use crate::sampling::{Sampler, SamplingConfig};
use bitnet_backend::BitNetBackend;
use std::time::{Duration, Instant};

/// The engine's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Sequences decoded together (KV slots).
    pub slots: usize,
    /// Positions of each slot's cache: prompt + generated tokens of one sequence.
    pub context: usize,
    /// Most prompt tokens one step processes (over all sequences).
    pub prefill_chunk: usize,
}

/// A generation to run.
#[derive(Debug, Clone)]
pub struct SequenceRequest {
    /// The prompt's token ids (not empty, shorter than the context).
    pub prompt: Vec<u32>,
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// How tokens are chosen.
    pub sampling: SamplingConfig,
    /// Tokens that end the generation (not reported as tokens).
    pub stop_tokens: Vec<u32>,
}

/// What a sequence reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceEvent {
    /// A generated token.
    Token(u32),
    /// The generation ended.
    Finished(SequenceEnd),
}

/// How a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceEnd {
    /// Why: [`FinishReason::StopToken`], [`FinishReason::Length`] or [`FinishReason::ContextFull`].
    pub finish: FinishReason,
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated, the stop token included.
    pub completion_tokens: usize,
    /// From admission to the first generated token.
    pub time_to_first_token: Duration,
}

/// Where a sequence's events go (e.g. a channel to an HTTP response).
pub trait SequenceSink: Send {
    /// Delivers an event; `false` means nobody listens any more and the sequence is dropped.
    fn send(&mut self, event: SequenceEvent) -> bool;
    /// Whether the listener has gone (checked before every step, so a cancelled sequence frees its slot even
    /// while it is still reading its prompt).
    fn is_closed(&self) -> bool {
        false
    }
}

impl<F: FnMut(SequenceEvent) -> bool + Send> SequenceSink for F {
    fn send(&mut self, event: SequenceEvent) -> bool {
        self(event)
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Sequences in the forward pass.
    pub sequences: usize,
    /// Prompt tokens processed.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Sequences that ended (finished or cancelled).
    pub ended: usize,
}

/// A sequence in a slot.
struct Active {
    request: SequenceRequest,
    sink: Box<dyn SequenceSink>,
    sampler: Sampler,
    /// Prompt tokens already in the cache.
    fed: usize,
    /// The prompt and every generated token (the repetition penalty's context).
    context: Vec<u32>,
    generated: usize,
    admitted: Instant,
    first_token: Option<Duration>,
}

/// A KV slot and the sequence it holds.
struct Slot<B: BitNetBackend> {
    cache: KvCache<B>,
    sequence: Option<Active>,
}

/// The continuous-batching engine (see the module docs).
pub struct BatchEngine<'m, B: BitNetBackend> {
    model: &'m BitNetModel<B>,
    config: BatchConfig,
    slots: Vec<Slot<B>>,
}

impl<B: BitNetBackend> std::fmt::Debug for BatchEngine<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchEngine").field("config", &self.config).field("active", &self.active()).finish()
    }
}

impl<'m, B: BitNetBackend> BatchEngine<'m, B> {
    /// An engine of `config.slots` empty slots over `model`. The caches are allocated now (zeroed memory that
    /// the OS maps as it is first written).
    pub fn new(model: &'m BitNetModel<B>, config: BatchConfig) -> Result<Self> {
        if config.slots == 0 || config.prefill_chunk == 0 {
            return Err(ModelError::Request(format!(
                "a batch engine needs at least one slot and a prefill chunk of at least one token (got {} and {})",
                config.slots, config.prefill_chunk
            )));
        }
        let slots = (0..config.slots)
            .map(|_| Ok(Slot { cache: model.new_cache(1, config.context)?, sequence: None }))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { model, config, slots })
    }

    /// The engine's limits.
    pub fn config(&self) -> BatchConfig {
        self.config
    }

    /// Sequences in slots.
    pub fn active(&self) -> usize {
        self.slots.iter().filter(|s| s.sequence.is_some()).count()
    }

    /// Free slots.
    pub fn free_slots(&self) -> usize {
        self.config.slots - self.active()
    }

    /// Whether no sequence is active.
    pub fn is_idle(&self) -> bool {
        self.active() == 0
    }

    /// Checks a request against the model and the slots' context (what [`BatchEngine::admit`] refuses).
    pub fn check(&self, request: &SequenceRequest) -> Result<()> {
        let vocab = self.model.config().vocab_size;
        if request.prompt.is_empty() {
            return Err(ModelError::Request("the prompt is empty".into()));
        }
        if request.max_new_tokens == 0 {
            return Err(ModelError::Request("a request must allow at least one new token".into()));
        }
        if request.prompt.len() >= self.config.context {
            return Err(ModelError::Request(format!(
                "the prompt has {} tokens; the context is {} positions (the prompt must leave room for a token)",
                request.prompt.len(),
                self.config.context
            )));
        }
        if let Some(&bad) = request.prompt.iter().find(|&&id| id as usize >= vocab) {
            return Err(ModelError::Request(format!("token id {bad} is outside the vocabulary (size {vocab})")));
        }
        request.sampling.validate().map_err(ModelError::Request)
    }

    /// Puts a request into a free slot; it starts with the next step. Gives the request and its sink back when
    /// no slot is free, and fails (dropping them) on a request [`BatchEngine::check`] refuses.
    #[allow(clippy::type_complexity)]
    pub fn admit(
        &mut self,
        request: SequenceRequest,
        sink: Box<dyn SequenceSink>,
    ) -> Result<std::result::Result<(), (SequenceRequest, Box<dyn SequenceSink>)>> {
        self.check(&request)?;
        let Some(slot) = self.slots.iter_mut().find(|s| s.sequence.is_none()) else {
            return Ok(Err((request, sink)));
        };
        slot.cache.clear();
        slot.sequence = Some(Active {
            sampler: Sampler::new(request.sampling.clone()),
            context: request.prompt.clone(),
            request,
            sink,
            fed: 0,
            generated: 0,
            admitted: Instant::now(),
            first_token: None,
        });
        Ok(Ok(()))
    }

    /// One forward pass over every active sequence, then one token for every sequence whose prompt is read.
    /// Sequences whose sink is closed are dropped first. Does nothing when idle.
    pub fn step(&mut self) -> Result<StepReport> {
        let mut report = StepReport::default();
        for slot in &mut self.slots {
            if slot.sequence.as_ref().is_some_and(|s| s.sink.is_closed()) {
                slot.sequence = None;
                report.ended += 1;
            }
        }
        // What each active slot adds this step: prompt chunks first come first served, or its last token.
        let mut budget = self.config.prefill_chunk;
        let mut plan: Vec<(usize, Vec<u32>, bool)> = Vec::new(); // (slot, tokens, samples a token after)
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(seq) = &slot.sequence else { continue };
            let prompt = &seq.request.prompt;
            if seq.fed < prompt.len() {
                if budget == 0 {
                    continue;
                }
                let end = prompt.len().min(seq.fed + budget);
                budget -= end - seq.fed;
                plan.push((i, prompt[seq.fed..end].to_vec(), end == prompt.len()));
            } else {
                let last = *seq.context.last().expect("a sequence holds its prompt");
                plan.push((i, vec![last], true));
            }
        }
        if plan.is_empty() {
            return Ok(report);
        }
        let logits = {
            let mut caches: Vec<Option<&mut KvCache<B>>> = self.slots.iter_mut().map(|s| Some(&mut s.cache)).collect();
            let mut steps: Vec<SequenceStep<'_, B>> = plan
                .iter()
                .map(|(i, tokens, _)| SequenceStep {
                    tokens,
                    cache: caches[*i].take().expect("a slot appears once in a step"),
                })
                .collect();
            self.model.forward_sequences(&mut steps)?
        };
        report.sequences = plan.len();
        // Greedy rows from the on-device argmax (as `generate`), sampled rows from the logits read back.
        let read = |e: burn::tensor::DataError| ModelError::Request(format!("reading logits: {e:?}"));
        let sampling = plan.iter().any(|(i, _, samples)| {
            *samples && !self.slots[*i].sequence.as_ref().is_some_and(|s| s.sampler.is_greedy())
        });
        let rows = if sampling {
            let rows = logits.clone().into_data().convert::<f32>().into_vec::<f32>().map_err(read)?;
            if rows.iter().any(|v| v.is_nan()) {
                return Err(crate::generate::non_finite_logits());
            }
            Some(rows)
        } else {
            None
        };
        let argmax = crate::generate::greedy_tokens(logits)?;
        let vocab = self.model.config().vocab_size;
        for (row, (i, tokens, samples)) in plan.into_iter().enumerate() {
            let slot = &mut self.slots[i];
            let seq = slot.sequence.as_mut().expect("planned slots are active");
            if seq.fed < seq.request.prompt.len() {
                seq.fed += tokens.len();
                report.prompt_tokens += tokens.len();
            }
            if !samples {
                continue;
            }
            let token = match (&rows, seq.sampler.is_greedy()) {
                (Some(rows), false) => seq.sampler.sample(&rows[row * vocab..(row + 1) * vocab], &seq.context),
                _ => argmax[row],
            };
            seq.context.push(token);
            seq.generated += 1;
            report.generated_tokens += 1;
            let ttft = *seq.first_token.get_or_insert_with(|| seq.admitted.elapsed());
            let finish = if seq.request.stop_tokens.contains(&token) {
                Some(FinishReason::StopToken)
            } else if !seq.sink.send(SequenceEvent::Token(token)) {
                slot.sequence = None;
                report.ended += 1;
                continue;
            } else if seq.generated >= seq.request.max_new_tokens {
                Some(FinishReason::Length)
            } else if slot.cache.len() >= slot.cache.capacity() {
                Some(FinishReason::ContextFull)
            } else {
                None
            };
            if let Some(finish) = finish {
                let end = SequenceEnd {
                    finish,
                    prompt_tokens: seq.request.prompt.len(),
                    completion_tokens: seq.generated,
                    time_to_first_token: ttft,
                };
                seq.sink.send(SequenceEvent::Finished(end));
                slot.sequence = None;
                report.ended += 1;
            }
        }
        Ok(report)
    }

    /// Runs steps until every admitted sequence has ended.
    pub fn run_to_completion(&mut self) -> Result<()> {
        while !self.is_idle() {
            self.step()?;
        }
        Ok(())
    }
}
