//! `bitnet bench`: prefill and decode speed of a model, and decode against the memory-bandwidth roofline.
//!
//! Decode streams every weight once per token, so `tokens/s x weight bytes per token` is the bandwidth it
//! draws; a streaming-read probe run between the timed runs measures what the device gives at that moment (on
//! shared or virtual machines it varies from minute to minute). On the CPU the probe reads a buffer on the
//! kernels' thread pool; on a GPU it sums a buffer on the device. The ratio of the two is the fraction of the
//! roofline decode reaches: each run's decode speed against the mean of the probes either side of it (one
//! before the runs, one after each), and the median of those ratios. Pairing each run with the probes next to it
//! keeps a drift of the machine's bandwidth between runs (tens of percent within minutes on a shared VM) out
//! of the ratio, which the median speed over the median probe did not.
//!
//! Each step's attention also reads the key/value cache of every position so far; the report gives those bytes
//! (the mean over the timed steps) and the fraction with them counted, which is what falls short at long
//! contexts even when every byte streams at the probe's rate. The headline fraction counts weights alone.

use super::device::{on_device, Device, OnDevice};
use super::{ModelArgs, UsageError};
use crate::output;
use anyhow::Result;
use bitnet_models::backend::kernels::probe::{probe_buffer, read_rate};
use bitnet_models::backend::kernels::{global_pool, Kernel};
use bitnet_models::backend::BitNetBackend;
use bitnet_models::bench::{bench_decode, median, DecodeBenchConfig};
use bitnet_models::Checkpoint;
use burn::tensor::Tensor;
use clap::Args;
use std::time::Instant;

/// Below this many weight bytes per token a model may live in the caches (L2 + L3 reach tens of MB).
const CACHE_SIZED_BYTES: u64 = 64 << 20;
/// The largest probe buffer (MiB).
const MAX_PROBE_MIB: usize = 64 << 10;
/// The most tokens a run may take (prompt + decode), and the most runs.
const MAX_TOKENS: usize = 1 << 20;
const MAX_RUNS: usize = 10_000;

/// Arguments of `bitnet bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt length of each run (a fixed synthetic prompt; prefill speed is measured on it).
    #[arg(long, default_value_t = 32, value_name = "N")]
    prompt_tokens: usize,
    /// Tokens generated per run (greedy, no stop token); decode speed is measured over the last N - 1.
    #[arg(long, default_value_t = 64, value_name = "N")]
    decode_tokens: usize,
    /// Timed runs; the report gives medians.
    #[arg(long, default_value_t = 3, value_name = "N")]
    runs: usize,
    /// Untimed runs first (page the weights in, warm the caches).
    #[arg(long, default_value_t = 1, value_name = "N")]
    warmup_runs: usize,
    /// Size of the memory-read probe's buffer in MiB (far larger than the caches); 0 skips the probe.
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    probe_mib: usize,
    /// Print the results as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.runs == 0 || args.prompt_tokens == 0 || args.decode_tokens < 2 {
        return Err(
            UsageError("--runs and --prompt-tokens must be at least 1, --decode-tokens at least 2".into()).into()
        );
    }
    if args.runs > MAX_RUNS || args.warmup_runs > MAX_RUNS {
        return Err(UsageError(format!("--runs and --warmup-runs must be at most {MAX_RUNS}")).into());
    }
    if args.prompt_tokens > MAX_TOKENS || args.decode_tokens > MAX_TOKENS {
        return Err(UsageError(format!("--prompt-tokens and --decode-tokens must be at most {MAX_TOKENS}")).into());
    }
    if args.probe_mib > 0 && !(64..=MAX_PROBE_MIB).contains(&args.probe_mib) {
        return Err(UsageError(format!(
            "--probe-mib must be 0 (no probe) or 64 to {MAX_PROBE_MIB}: smaller buffers fit the caches"
        ))
        .into());
    }
    let checkpoint = args.model.open()?;
    let device = args.model.device.device;
    on_device(device, Bench { args, checkpoint, device })
}

struct Bench {
    args: BenchArgs,
    checkpoint: Checkpoint,
    device: Device,
}

/// A streaming-read probe of the device the model runs on.
enum Probe<B: BitNetBackend> {
    None,
    Cpu(Vec<u64>),
    Device(Tensor<B, 1>),
}

impl<B: BitNetBackend> Probe<B> {
    fn new(device: Device, mib: usize, on: &B::Device) -> Self {
        match (mib, device) {
            (0, _) => Self::None,
            (_, Device::Cpu) => Self::Cpu(probe_buffer(mib << 20)),
            _ => Self::Device(Tensor::ones([(mib << 20) / 4], on)),
        }
    }

    /// Bytes per second read, the median of three passes.
    fn rate(&self) -> Option<f64> {
        match self {
            Self::None => None,
            Self::Cpu(buffer) => Some(read_rate(buffer, global_pool(), 3)),
            Self::Device(buffer) => {
                let bytes = buffer.dims()[0] as f64 * 4.0;
                let rates = (0..3)
                    .map(|_| {
                        let started = Instant::now();
                        // Reading the scalar back waits for the reduction.
                        let _ = buffer.clone().sum().into_scalar();
                        bytes / started.elapsed().as_secs_f64().max(1e-9)
                    })
                    .collect();
                Some(median(rates))
            }
        }
    }
}

impl OnDevice for Bench {
    type Output = ();

    fn run<B: BitNetBackend>(self, on: &B::Device) -> Result<()> {
        let Self { args, checkpoint, device } = self;
        let bundle = args.model.load::<B>(&checkpoint, on)?;
        let model = bundle.model();
        let c = model.config();
        let engine = match device {
            Device::Cpu => format!("{} threads, kernel {}", global_pool().threads(), Kernel::selected().name()),
            other => format!("device {}", other.name()),
        };
        let layouts: Vec<&str> = model.ternary_layouts().iter().map(|l| l.name()).collect();
        output::note(&format!(
            "model: {} ({} layers, hidden {}, vocab {}); {engine}; ternary weights {}",
            bundle.path().display(),
            c.num_hidden_layers,
            c.hidden_size,
            c.vocab_size,
            if layouts.is_empty() { "latent".to_string() } else { layouts.join(" and ") },
        ));
        let probe = Probe::<B>::new(device, args.probe_mib, on);
        let mut probes: Vec<f64> = probe.rate().into_iter().collect();
        let config = DecodeBenchConfig {
            prompt_tokens: args.prompt_tokens,
            decode_tokens: args.decode_tokens,
            runs: args.runs,
            warmup_runs: args.warmup_runs,
        };
        let bench = bench_decode(model, config, |i, run| {
            let rate = probe.rate();
            probes.extend(rate);
            output::note(&format!(
                "run {}/{}: prefill {} tokens at {:.1} tokens/s, decode {} steps at {:.2} tokens/s{}",
                i + 1,
                args.runs,
                args.prompt_tokens,
                run.prefill_tokens_per_s,
                args.decode_tokens - 1,
                run.decode_tokens_per_s,
                rate.map(|r| format!("; memory read probe {:.1} GB/s", r / 1e9)).unwrap_or_default()
            ));
        })?;
        let probe_rate = (!probes.is_empty()).then(|| median(probes.clone()));
        let roofline = probe_rate.map(|p| p / bench.weight_bytes_per_token as f64);
        let bytes = bench.weight_bytes_per_token as f64;
        // Run `i` lies between probe `i` and probe `i + 1`.
        let run_fractions: Vec<f64> = bench
            .runs
            .iter()
            .zip(probes.windows(2))
            .map(|(run, pair)| run.decode_tokens_per_s * bytes / ((pair[0] + pair[1]) / 2.0))
            .collect();
        let fraction = (!run_fractions.is_empty()).then(|| median(run_fractions.clone()));
        // The same with the key/value cache's reads counted as well (what the attention streams each step).
        let with_cache = (bytes + bench.cache_bytes_per_token as f64) / bytes;
        let fraction_with_cache = fraction.map(|f| f * with_cache);
        if args.json {
            let json = serde_json::json!({
                "model": bundle.path().display().to_string(),
                "device": device.name(),
                "threads": global_pool().threads(),
                "kernel": Kernel::selected().name(),
                "ternary_layouts": layouts,
                "prompt_tokens": args.prompt_tokens,
                "decode_tokens": args.decode_tokens,
                "runs": bench.runs.iter().map(|r| serde_json::json!({
                    "prefill_tokens_per_s": r.prefill_tokens_per_s,
                    "decode_tokens_per_s": r.decode_tokens_per_s,
                })).collect::<Vec<_>>(),
                "prefill_tokens_per_s": bench.prefill_tokens_per_s(),
                "decode_tokens_per_s": bench.decode_tokens_per_s(),
                "weight_bytes_per_token": bench.weight_bytes_per_token,
                "decode_bytes_per_s": bench.decode_bytes_per_s(),
                "probe_bytes_per_s": probe_rate,
                "probe_samples_bytes_per_s": probes,
                "roofline_tokens_per_s": roofline,
                "roofline_fraction": fraction,
                "roofline_fraction_runs": run_fractions,
                "cache_bytes_per_token": bench.cache_bytes_per_token,
                "roofline_fraction_with_cache": fraction_with_cache,
            });
            return output::println(&json.to_string());
        }
        let mut text =
            format!("weights streamed per decoded token: {:.3} GB\n", bench.weight_bytes_per_token as f64 / 1e9);
        text += &format!(
            "key/value cache read per decoded token: {:.1} MB (mean over the steps)\n",
            bench.cache_bytes_per_token as f64 / 1e6
        );
        text += &format!("prefill: {:.1} tokens/s (median of {})\n", bench.prefill_tokens_per_s(), args.runs);
        text += &format!(
            "decode: {:.2} tokens/s (median of {}) = {:.1} GB/s of weights\n",
            bench.decode_tokens_per_s(),
            args.runs,
            bench.decode_bytes_per_s() / 1e9
        );
        if let (Some(p), Some(r), Some(f)) = (probe_rate, roofline, fraction) {
            text += &format!(
                "memory read probe: {:.1} GB/s (median of {}) -> roofline {:.2} tokens/s; decode reaches {:.0}% of \
                 the probe (median over the runs, each against the probes either side of it)\n",
                p / 1e9,
                probes.len(),
                r,
                f * 100.0
            );
            if let Some(fc) = fraction_with_cache {
                text += &format!("with the cache's reads counted too: {:.0}% of the probe\n", fc * 100.0);
            }
            if device == Device::Cpu && bench.weight_bytes_per_token < CACHE_SIZED_BYTES {
                text += "(the weights fit in the CPU caches, so memory bandwidth does not bound this model's decode)\n";
            }
        }
        output::print(&text)
    }
}
