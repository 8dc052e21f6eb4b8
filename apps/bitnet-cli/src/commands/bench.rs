//! `bitnet bench`: prefill and decode speed of a model, and decode against the memory-bandwidth roofline.
//!
//! Decode streams every weight once per token, so `tokens/s x weight bytes per token` is the bandwidth it
//! draws; a streaming-read probe on the same thread pool, run between the timed runs, measures what the machine
//! gives at that moment (on shared or virtual machines it varies from minute to minute). The ratio of the two is
//! the fraction of the roofline decode reaches.

use super::{ModelArgs, UsageError};
use anyhow::Result;
use bitnet_train::models::backend::kernels::probe::{probe_buffer, read_rate};
use bitnet_train::models::backend::kernels::{global_pool, Kernel};
use bitnet_train::models::bench::{bench_decode, median, DecodeBenchConfig};
use clap::Args;

/// Below this many weight bytes per token a model may live in the caches (L2 + L3 reach tens of MB).
const CACHE_SIZED_BYTES: u64 = 64 << 20;

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
    if args.probe_mib > 0 && args.probe_mib < 64 {
        return Err(
            UsageError("--probe-mib must be 0 (no probe) or at least 64: the caches would hold it".into()).into()
        );
    }
    let model = args.model.load()?;
    let pool = global_pool();
    let c = &model.config;
    eprintln!(
        "model: {} ({} layers, hidden {}, vocab {}); {} threads, kernel {}",
        args.model.path()?.display(),
        c.num_hidden_layers,
        c.hidden_size,
        c.vocab_size,
        pool.threads(),
        Kernel::selected().name()
    );
    let buffer = (args.probe_mib > 0).then(|| probe_buffer(args.probe_mib << 20));
    let probe = || buffer.as_ref().map(|b| read_rate(b, pool, 3));
    let mut probes: Vec<f64> = probe().into_iter().collect();
    let config = DecodeBenchConfig {
        prompt_tokens: args.prompt_tokens,
        decode_tokens: args.decode_tokens,
        runs: args.runs,
        warmup_runs: args.warmup_runs,
    };
    let bench = bench_decode(&model, config, |i, run| {
        let rate = probe();
        probes.extend(rate);
        eprintln!(
            "run {}/{}: prefill {} tokens at {:.1} tokens/s, decode {} steps at {:.2} tokens/s{}",
            i + 1,
            args.runs,
            args.prompt_tokens,
            run.prefill_tokens_per_s,
            args.decode_tokens - 1,
            run.decode_tokens_per_s,
            rate.map(|r| format!("; memory read probe {:.1} GB/s", r / 1e9)).unwrap_or_default()
        );
    })?;
    let probe_rate = (!probes.is_empty()).then(|| median(probes.clone()));
    let roofline = probe_rate.map(|p| p / bench.weight_bytes_per_token as f64);
    let fraction = roofline.map(|r| bench.decode_tokens_per_s() / r);
    if args.json {
        let json = serde_json::json!({
            "model": args.model.path()?.display().to_string(),
            "threads": pool.threads(),
            "kernel": Kernel::selected().name(),
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
        });
        println!("{json}");
        return Ok(());
    }
    println!("weights streamed per decoded token: {:.3} GB", bench.weight_bytes_per_token as f64 / 1e9);
    println!("prefill: {:.1} tokens/s (median of {})", bench.prefill_tokens_per_s(), args.runs);
    println!(
        "decode: {:.2} tokens/s (median of {}) = {:.1} GB/s of weights",
        bench.decode_tokens_per_s(),
        args.runs,
        bench.decode_bytes_per_s() / 1e9
    );
    if let (Some(p), Some(r), Some(f)) = (probe_rate, roofline, fraction) {
        println!(
            "memory read probe: {:.1} GB/s (median of {}) -> roofline {:.2} tokens/s; decode reaches {:.0}% of it",
            p / 1e9,
            probes.len(),
            r,
            f * 100.0
        );
        if bench.weight_bytes_per_token < CACHE_SIZED_BYTES {
            println!("(the weights fit in the CPU caches, so memory bandwidth does not bound this model's decode)");
        }
    }
    Ok(())
}
