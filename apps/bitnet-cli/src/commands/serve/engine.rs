//! The engine thread: loads the model, then runs the continuous-batching loop
//! ([`bitnet_models::batch::BatchEngine`]): admits queued jobs into free slots between steps and runs one
//! batched forward pass per step. HTTP handlers talk to it through a bounded queue of [`Work`] and get each
//! sequence's events back on a channel of their own; dropping that channel's receiver cancels the sequence.
//! Embedding requests ([`EmbedJob`]) are answered between steps, one forward pass per input.

use super::metrics::Metrics;
use crate::commands::device::{on_device, Device, OnDevice};
use crate::commands::ModelArgs;
use anyhow::Result;
use bitnet_models::backend::BitNetBackend;
use bitnet_models::batch::{BatchConfig, BatchEngine, SequenceEvent, SequenceRequest, SequenceSink};
use bitnet_models::chat::ChatTemplate;
use bitnet_models::embed::{embed, Pooling};
use bitnet_models::tokenizer::Tokenizer;
use bitnet_models::Checkpoint;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// What the HTTP side queues for the engine.
pub enum Work {
    /// A generation.
    Generate(Job),
    /// Embeddings.
    Embed(EmbedJob),
}

/// Texts (as ids) to embed, and where the embeddings (or the reason there are none) go.
pub struct EmbedJob {
    /// One id sequence per input, checked against the vocabulary and the context by the handler.
    pub inputs: Vec<Vec<u32>>,
    /// The reply.
    pub reply: tokio::sync::oneshot::Sender<std::result::Result<Vec<Vec<f32>>, String>>,
}

/// A generation waiting for a slot.
pub struct Job {
    /// What to generate.
    pub request: SequenceRequest,
    /// Where its events go.
    pub events: UnboundedSender<SequenceEvent>,
}

/// A channel as a sequence's sink: closed when the HTTP side drops its receiver (the client went away).
struct ChannelSink(UnboundedSender<SequenceEvent>);

impl SequenceSink for ChannelSink {
    fn send(&mut self, event: SequenceEvent) -> bool {
        self.0.send(event).is_ok()
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// What the HTTP handlers need of the loaded model.
pub struct ModelInfo {
    /// The id `/v1/models` lists and requests may name.
    pub id: String,
    /// The tokenizer, if the model has one (text endpoints need it).
    pub tokenizer: std::result::Result<Tokenizer, String>,
    /// The chat template.
    pub template: ChatTemplate,
    /// The BOS token prepended to completion prompts.
    pub bos: Option<u32>,
    /// Tokens that end a generation.
    pub stop_ids: Vec<u32>,
    /// Positions of one slot (prompt + completion).
    pub context: usize,
    /// The vocabulary size.
    pub vocab: usize,
    /// How `/v1/embeddings` pools (what the model declares, else the last token).
    pub pooling: Pooling,
}

impl ModelInfo {
    /// The ids of a completion prompt: tokenized, BOS prepended when the model has one and the text lacks it.
    pub fn encode_prompt(&self, text: &str) -> std::result::Result<Vec<u32>, String> {
        let tokenizer = self.tokenizer.as_ref().map_err(|why| format!("the model has no tokenizer: {why}"))?;
        let mut ids = tokenizer.encode(text).map_err(|e| e.to_string())?;
        if let Some(bos) = self.bos {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }
}

/// State shared by the HTTP side and the engine thread.
pub struct Shared {
    /// Set once the model is loaded.
    pub info: OnceLock<Arc<ModelInfo>>,
    /// Counters.
    pub metrics: Metrics,
    /// Set when the server stops accepting requests: the engine finishes what it holds and returns.
    pub stopping: AtomicBool,
    /// Woken when the engine thread ends (a failed load or step): the server shuts down.
    pub engine_ended: tokio::sync::Notify,
}

/// The engine's settings.
pub struct EngineSettings {
    /// How to load the model.
    pub model: ModelArgs,
    /// The opened checkpoint.
    pub checkpoint: Checkpoint,
    /// The id the server announces.
    pub id: String,
    /// Slots, context per slot (None: the model's, capped), prefill chunk.
    pub slots: usize,
    /// Positions per slot, if given.
    pub context: Option<usize>,
    /// Prompt tokens per step.
    pub prefill_chunk: usize,
}

/// The context a slot gets when `--context` is not given: the model's, capped so that the default `serve` of a
/// large model does not reserve gigabytes of cache per slot.
const DEFAULT_CONTEXT_CAP: usize = 4096;

/// Runs the engine until the queue's senders are gone or the server stops and nothing is left to do.
pub fn run(device: Device, settings: EngineSettings, shared: Arc<Shared>, jobs: Receiver<Work>) -> Result<()> {
    let result = on_device(device, EngineLoop { settings, shared: shared.clone(), jobs });
    shared.engine_ended.notify_one();
    result
}

struct EngineLoop {
    settings: EngineSettings,
    shared: Arc<Shared>,
    jobs: Receiver<Work>,
}

impl OnDevice for EngineLoop {
    type Output = ();

    fn run<B: BitNetBackend>(self, device: &B::Device) -> Result<()> {
        let Self { settings, shared, jobs } = self;
        let started = Instant::now();
        let bundle = settings.model.load::<B>(&settings.checkpoint, device)?;
        let model = bundle.model();
        let max = model.config().max_position_embeddings;
        let context = match settings.context {
            Some(n) if n > max => {
                return Err(crate::commands::UsageError(format!(
                    "--context {n} exceeds the model's max_position_embeddings {max}"
                ))
                .into())
            }
            Some(n) => n,
            None => max.min(DEFAULT_CONTEXT_CAP),
        };
        let config = BatchConfig { slots: settings.slots, context, prefill_chunk: settings.prefill_chunk };
        let mut engine = BatchEngine::new(model, config)?;
        let info = ModelInfo {
            id: settings.id,
            tokenizer: bundle.tokenizer().cloned().map_err(|e| e.to_string()),
            template: bundle.chat_template().clone(),
            bos: bundle.bos_token(),
            stop_ids: bundle.stop_ids().to_vec(),
            context,
            vocab: model.config().vocab_size,
            pooling: Pooling::declared(&settings.checkpoint)?.unwrap_or_default(),
        };
        shared.metrics.set_slots(config.slots);
        let pooling = info.pooling;
        let _ = shared.info.set(Arc::new(info));
        crate::output::note(&format!(
            "model loaded in {:.1} s: {} slots x {context} positions, prefill chunk {}",
            started.elapsed().as_secs_f64(),
            config.slots,
            config.prefill_chunk
        ));
        let admit = |engine: &mut BatchEngine<'_, B>, work: Work| {
            shared.metrics.dequeued();
            let job = match work {
                Work::Generate(job) => job,
                Work::Embed(job) => {
                    let result = job.inputs.iter().map(|ids| embed(model, ids, pooling)).collect::<Result<Vec<_>, _>>();
                    let _ = job.reply.send(result.map_err(|e| e.to_string()));
                    return;
                }
            };
            if job.events.is_closed() {
                return;
            }
            // Handlers check requests first; one the engine still refuses ends with its channel dropped.
            if let Err(e) = engine.admit(job.request, Box::new(ChannelSink(job.events))) {
                crate::output::note(&format!("serve: request refused by the engine: {e}"));
            }
        };
        loop {
            if engine.is_idle() {
                if shared.stopping.load(Ordering::Relaxed) {
                    // Anything still queued was accepted before the stop: serve it, then return.
                    match jobs.try_recv() {
                        Ok(job) => admit(&mut engine, job),
                        Err(_) => return Ok(()),
                    }
                } else {
                    match jobs.recv_timeout(Duration::from_millis(100)) {
                        Ok(job) => admit(&mut engine, job),
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => return Ok(()),
                    }
                }
            }
            while engine.free_slots() > 0 {
                match jobs.try_recv() {
                    Ok(job) => admit(&mut engine, job),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            shared.metrics.set_active(engine.active());
            if engine.is_idle() {
                continue;
            }
            let step_start = Instant::now();
            let report = engine.step()?;
            shared.metrics.step(&report, step_start.elapsed());
            shared.metrics.set_active(engine.active());
        }
    }
}
