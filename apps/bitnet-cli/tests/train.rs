//! `bitnet train-tokenizer` and `bitnet train` as a user runs them: a run killed with SIGKILL in the middle of
//! a checkpoint interval resumes from its last checkpoint and ends exactly where an uninterrupted run ends; no
//! checkpoint file is ever half-written; the exported model scores the validation text as training did; and the
//! embedded default model runs with no --model.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bitnet() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bitnet"));
    c.env("BITNET_THREADS", "2");
    c
}

fn run(args: &[&str]) -> Output {
    bitnet().args(args).output().unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bitnet-cli-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/shakespeare/valid.txt.gz")
}

/// A tokenizer and a small train/valid split in `dir`.
fn prepare(dir: &Path) -> (String, String, String) {
    let text = bitnet_train::data::read_text(&corpus()).unwrap();
    let train = dir.join("train.txt");
    let valid = dir.join("valid.txt");
    std::fs::write(&train, &text[..40_000]).unwrap();
    std::fs::write(&valid, &text[40_000..43_000]).unwrap();
    let tok = dir.join("tokenizer.json");
    let out = run(&[
        "train-tokenizer",
        "--file",
        train.to_str().unwrap(),
        "--vocab-size",
        "300",
        "--out",
        tok.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    (s(&tok), s(&train), s(&valid))
}

fn train_args<'a>(tok: &'a str, train: &'a str, valid: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--train",
        train,
        "--valid",
        valid,
        "--tokenizer",
        tok,
        "--out",
        out,
        "--arch",
        "tiny",
        "--context",
        "33",
        "--batch-size",
        "4",
        "--steps",
        "24",
        "--checkpoint-every",
        "6",
        "--warmup-steps",
        "3",
        "--lr",
        "5e-3",
        "--seed",
        "3",
    ]
}

fn summary(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn assert_no_partial_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir.join("checkpoint")) else { return };
    for e in entries {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        // Temporary files are hidden and never carry the record extension; finished records are complete.
        assert!(name.ends_with(".mpk") || (name.starts_with('.') && name.contains(".tmp-")), "{name}");
    }
}

#[test]
fn runs_that_did_not_do_their_work_fail_and_export_nothing() {
    let dir = tmp("lies");
    let (tok, train, valid) = prepare(&dir);
    // A checkpoint directory that cannot be created (a file stands in its place).
    let out = dir.join("blocked");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("checkpoint"), b"not a directory").unwrap();
    let o = out.to_str().unwrap();
    let result = run(&train_args(&tok, &train, &valid, o));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("could not be written"), "{stderr}");
    assert!(!out.join("model").exists(), "nothing is exported");
    // A diverging learning rate: the loss is not finite, nothing is exported.
    let out = dir.join("diverged");
    let o = out.to_str().unwrap();
    let mut a = train_args(&tok, &train, &valid, o);
    let i = a.iter().position(|x| *x == "--lr").unwrap();
    a[i + 1] = "1e30";
    let result = run(&a);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("diverged"), "{stderr}");
    assert!(!out.join("model").exists(), "nothing is exported");
    // An --out that cannot be created is a one-line error, not a panic.
    let result = run(&train_args(&tok, &train, &valid, "/dev/null/out"));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/dev/null/out") && !stderr.contains("panicked"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// [`train_args`] with 96 steps (16 checkpoint intervals): long enough that a SIGKILL sent just after the first
/// checkpoint lands before the last one on any machine (24 steps were over within 150 ms on a fast one).
fn killable_args<'a>(tok: &'a str, train: &'a str, valid: &'a str, out: &'a str) -> Vec<&'a str> {
    args_with(train_args(tok, train, valid, out), &[("--steps", "96")])
}

#[test]
fn sigkill_mid_interval_then_resume_ends_where_an_uninterrupted_run_ends() {
    let dir = tmp("resume");
    let (tok, train, valid) = prepare(&dir);
    let straight = dir.join("straight");
    let reference = summary(&run(&killable_args(&tok, &train, &valid, straight.to_str().unwrap())));

    let killed = dir.join("killed");
    let killed_s = killed.to_str().unwrap().to_string();
    let mut child = bitnet()
        .args(killable_args(&tok, &train, &valid, &killed_s))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the first complete checkpoint, then kill during the next interval (the run has 16 of them, so a
    // fast machine does not finish it first).
    let started = Instant::now();
    while bitnet_train::checkpoint::latest_complete_checkpoint(&killed).is_none() {
        assert!(started.elapsed() < Duration::from_secs(300), "no checkpoint appeared");
        assert!(child.try_wait().unwrap().is_none(), "training ended before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(20));
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let last = bitnet_train::checkpoint::latest_complete_checkpoint(&killed).unwrap();
    assert!(last < 16, "the run was killed before its end (last checkpoint {last})");
    assert_no_partial_files(&killed);

    // Without --resume the directory is protected.
    let out = run(&killable_args(&tok, &train, &valid, &killed_s));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));

    // Resuming with another architecture is a clear error, not a panic inside burn-train.
    let mut other = killable_args(&tok, &train, &valid, &killed_s);
    let i = other.iter().position(|x| *x == "tiny").unwrap();
    other[i] = "small";
    other.push("--resume");
    let out = run(&other);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && stderr.contains("another architecture"), "{stderr}");

    // A damaged record of the last checkpoint: the resume falls back to the previous complete one (or to the
    // start) and still ends exactly where the uninterrupted run ends.
    let record = killed.join("checkpoint").join(format!("optim-{last}.mpk"));
    let bytes = std::fs::read(&record).unwrap();
    std::fs::write(&record, &bytes[..bytes.len() / 2]).unwrap();
    let fallback = bitnet_train::checkpoint::latest_complete_checkpoint(&killed);
    assert!(fallback.is_none_or(|f| f < last), "the damaged checkpoint {last} is not complete");

    let mut args = killable_args(&tok, &train, &valid, &killed_s);
    args.extend(["--resume", "--gguf", "i2s"]);
    let out = run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    if let Some(f) = fallback {
        assert!(stderr.contains(&format!("resuming from checkpoint {f}")), "{stderr}");
    }
    // The interrupted run's checkpoints do not pile up: the two newest remain, as after an uninterrupted run.
    let models = std::fs::read_dir(killed.join("checkpoint"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("model-"))
        .count();
    assert_eq!(models, 2, "checkpoints left after the resumed run");

    // A run killed after its final checkpoint (during validation or export) is finished by --resume: the export
    // is redone from the final checkpoint and scores the same.
    let before = summary(&out)["valid_loss"].as_f64().unwrap();
    std::fs::remove_dir_all(killed.join("model")).unwrap();
    let mut again = killable_args(&tok, &train, &valid, &killed_s);
    again.push("--resume");
    let out = run(&again);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(killed.join("model").join("model.safetensors").is_file(), "the export is redone");
    let redone = summary(&out)["valid_loss"].as_f64().unwrap();
    assert!((redone - before).abs() < 1e-6, "redone validation loss {redone} vs {before}");
    // The exported model of the first resumed run is scored below: export it again as it was (with the GGUF).
    let mut args = killable_args(&tok, &train, &valid, &killed_s);
    args.extend(["--resume", "--gguf", "i2s"]);
    let out = run(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let resumed = summary(&out);
    assert_eq!(resumed["steps"], reference["steps"]);
    let (a, b) = (resumed["valid_loss"].as_f64().unwrap(), reference["valid_loss"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-5, "resumed run ends at validation loss {a}, the uninterrupted one at {b}");
    assert_no_partial_files(&killed);

    // The exported model, scored by `bitnet perplexity`, reproduces the training-time validation loss.
    let model = killed.join("model");
    let out = run(&["perplexity", "--model", model.to_str().unwrap(), "--file", &valid, "--context", "33", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let score: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nll = score["nll"].as_f64().unwrap();
    assert!((nll - a).abs() < 1e-3, "bitnet perplexity nll {nll} vs training validation loss {a}");
    assert_eq!(score["tokens"], resumed["valid_tokens"]);
    // The GGUF export (I2_S, same codes and f32 scales) scores the same.
    let gguf = model.join("model.gguf");
    let out = run(&["perplexity", "--model", gguf.to_str().unwrap(), "--file", &valid, "--context", "33", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let score: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let gguf_nll = score["nll"].as_f64().unwrap();
    assert!((gguf_nll - nll).abs() < 1e-4, "GGUF nll {gguf_nll} vs HF nll {nll}");
    // The GGUF file carries the tokenizer: alone in a directory it tokenizes and scores the same.
    let alone = dir.join("alone");
    std::fs::create_dir_all(&alone).unwrap();
    std::fs::copy(&gguf, alone.join("model.gguf")).unwrap();
    let gguf = alone.join("model.gguf");
    let out = run(&["perplexity", "--model", gguf.to_str().unwrap(), "--file", &valid, "--context", "33", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let alone_score: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(alone_score, score, "the embedded tokenizer gives the same tokens");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_training_input_is_a_one_line_error() {
    let dir = tmp("bad");
    let (tok, train, valid) = prepare(&dir);
    let out_dir = dir.join("o");
    let o = out_dir.to_str().unwrap();
    let mut cases = vec![
        (("--context", "1"), 2, "--context must be at least 2"),
        (("--context", "4096"), 2, "max_position_embeddings"),
        (("--arch", "huge"), 2, "unknown --arch"),
        (("--steps", "0"), 2, "--steps"),
        (("--gguf", "tq2_0"), 2, "multiples of 256"),
        (("--gguf", "q4_0"), 2, "q4_0"),
        (("--batch-size", "1000000000"), 2, "--batch-size"),
        (("--steps", "18446744073709551615"), 2, "--steps"),
        (("--weight-decay", "NaN"), 2, "--weight-decay"),
        (("--grad-clip", "NaN"), 2, "--grad-clip"),
        (("--grad-clip", "inf"), 2, "--grad-clip"),
        (("--nodes", "2"), 2, "--coordinator HOST:PORT"),
        (("--rank", "1"), 2, "need --nodes 2 or more"),
        (("--coordinator", "127.0.0.1:9"), 2, "need --nodes 2 or more"),
    ];
    if !cfg!(feature = "cuda") {
        cases.push((("--device", "cuda"), 2, "--features cuda"));
    }
    for ((flag, value), code, needle) in cases {
        let a = args_with(train_args(&tok, &train, &valid, o), &[(flag, value)]);
        let out = run(&a);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{a:?}: {stderr}");
        assert!(stderr.contains(needle), "{a:?}: {stderr}");
        if !stderr.contains("For more information") {
            // Our own errors are one line (clap's parse errors add a usage hint).
            assert_eq!(stderr.trim_end().lines().count(), 1, "{a:?}: {stderr}");
        }
    }
    // A configuration with a billion layers is refused before anything is allocated.
    let config_path = dir.join("huge.json");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bitnet-models/tests/fixtures/tiny-bitlinear");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("config.json")).unwrap()).unwrap();
    config["num_hidden_layers"] = 1_000_000_000.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let mut a = train_args(&tok, &train, &valid, o);
    let i = a.iter().position(|x| *x == "--arch").unwrap();
    let config_arg = config_path.to_str().unwrap();
    a[i] = "--config";
    a[i + 1] = config_arg;
    let out = run(&a);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("parameters"));
    let out = run(&train_args(&tok, "/nonexistent/train.txt", &valid, o));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/train.txt"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_embedded_default_model_generates_without_model() {
    let cache = tmp("default");
    let out = bitnet()
        .env("BITNET_CACHE", &cache)
        .args(["generate", "--prompt", "ROMEO:", "--max-new-tokens", "12", "--temperature", "0", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tokens"].as_array().unwrap().len(), 12);
    assert!(!json["text"].as_str().unwrap().is_empty());
    std::fs::remove_dir_all(&cache).unwrap();
}

#[cfg(feature = "wgpu")]
#[test]
fn trains_on_wgpu() {
    let dir = tmp("wgpu");
    let (tok, train, valid) = prepare(&dir);
    let out_dir = dir.join("o");
    let mut args = train_args(&tok, &train, &valid, out_dir.to_str().unwrap());
    let steps = args.iter().position(|x| *x == "--steps").unwrap();
    args[steps + 1] = "4";
    args.extend(["--device", "wgpu"]);
    let s = summary(&run(&args));
    assert!(s["valid_loss"].as_f64().unwrap().is_finite());
    assert!(out_dir.join("model/model.safetensors").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn without_valid_the_tail_of_the_training_text_is_held_out() {
    let dir = tmp("holdout");
    let (tok, train, _) = prepare(&dir);
    let out_dir = dir.join("o");
    let o = out_dir.to_str().unwrap();
    let mut args = vec!["train", "--train", &train, "--tokenizer", &tok, "--out", o, "--arch", "tiny"];
    args.extend([
        "--context",
        "33",
        "--batch-size",
        "2",
        "--steps",
        "2",
        "--checkpoint-every",
        "2",
        "--valid-fraction",
        "0.1",
    ]);
    let s = summary(&run(&args));
    let tokens = s["valid_tokens"].as_u64().unwrap();
    assert!(tokens > 100, "{tokens} validation tokens");
    let mut bad = args.clone();
    let i = bad.iter().position(|x| *x == "0.1").unwrap();
    bad[i] = "1.5";
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--valid-fraction"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--init-from default`: fine-tuning the embedded default model (packed ternary, started as latent weights that
/// quantize back to it) on other text. The starting validation loss the run reports is the packed model's own
/// loss on that text (`bitnet perplexity`, the same windows), and training lowers it.
#[test]
fn init_from_fine_tunes_the_default_model_on_other_text() {
    let dir = tmp("init-from");
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let text = std::fs::read_to_string(docs.join("ARCHITECTURE.md")).unwrap();
    let (train, valid) = (dir.join("train.txt"), dir.join("valid.txt"));
    std::fs::write(&train, &text[..12_000]).unwrap();
    std::fs::write(&valid, &text[12_000..15_000]).unwrap();
    let out = dir.join("run");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let args = [
        "train",
        "--init-from",
        "default",
        "--train",
        &s(&train),
        "--valid",
        &s(&valid),
        "--out",
        &s(&out),
        "--context",
        "33",
        "--batch-size",
        "4",
        "--steps",
        "12",
        "--checkpoint-every",
        "6",
        "--warmup-steps",
        "2",
        "--lr",
        "1e-3",
    ];
    let result = run(&args);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    let (initial, last) = (summary["initial_valid_loss"].as_f64().unwrap(), summary["valid_loss"].as_f64().unwrap());
    let scored = run(&["perplexity", "--file", &s(&valid), "--context", "33", "--json"]);
    assert!(scored.status.success(), "{}", String::from_utf8_lossy(&scored.stderr));
    let packed: serde_json::Value = serde_json::from_slice(&scored.stdout).unwrap();
    let packed = packed["nll"].as_f64().unwrap();
    assert!((initial - packed).abs() < 1e-3, "starting loss {initial} vs the packed model's {packed}");
    assert!(last < initial - 0.05, "fine-tuning lowered the loss from {initial} to {last}");
    // --init-from takes its architecture and tokenizer from the checkpoint: --arch is refused with it.
    let conflict =
        run(&["train", "--init-from", "default", "--arch", "tiny", "--train", &s(&train), "--out", &s(&out)]);
    assert_eq!(conflict.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}

/// A TCP port free on loopback right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `base` with each flag's value replaced where `base` sets it, else the flag appended.
fn args_with<'a>(base: Vec<&'a str>, set: &[(&'a str, &'a str)]) -> Vec<&'a str> {
    let mut args = base;
    for (flag, value) in set {
        match args.iter().position(|a| a == flag) {
            Some(i) => args[i + 1] = value,
            None => args.extend([*flag, *value]),
        }
    }
    args
}

fn owned(args: Vec<&str>) -> Vec<String> {
    args.into_iter().map(String::from).collect()
}

/// Starts the ranks of a data-parallel run (rank r gets `per_rank[r]` extra flags), waits for all of them.
fn run_ranks(per_rank: Vec<Vec<String>>) -> Vec<Output> {
    let children: Vec<_> = per_rank
        .into_iter()
        .map(|args| bitnet().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
}

#[test]
fn two_process_data_parallel_run_equals_one_process_with_the_combined_batch() {
    let dir = tmp("ddp");
    let (tok, train, valid) = prepare(&dir);
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    let (single, single_half) = (s(dir.join("single")), s(dir.join("single-half")));
    fn twelve_steps<'a>(tok: &'a str, train: &'a str, valid: &'a str, out: &'a str) -> Vec<&'a str> {
        args_with(train_args(tok, train, valid, out), &[("--steps", "12")])
    }
    // One process, the combined batch of 4 windows; and one process with a rank's batch of 2 (a different run).
    let combined = summary(&run(&twelve_steps(&tok, &train, &valid, &single)))["valid_loss"].as_f64().unwrap();
    let half = summary(&run(&args_with(twelve_steps(&tok, &train, &valid, &single_half), &[("--batch-size", "2")])))
        ["valid_loss"]
        .as_f64()
        .unwrap();

    let port = free_port().to_string();
    let coordinator = format!("127.0.0.1:{port}");
    let outs: Vec<String> = (0..2).map(|r| s(dir.join(format!("rank{r}")))).collect();
    let ranks: Vec<Vec<String>> = (0..2)
        .map(|r| {
            let rank = r.to_string();
            let set = [("--batch-size", "2"), ("--nodes", "2"), ("--rank", &rank), ("--coordinator", &coordinator)];
            let mut args = owned(args_with(twelve_steps(&tok, &train, &valid, &outs[r]), &set));
            if r == 1 {
                // A display option is not part of the run (and without a terminal the dashboard stays off).
                args.push("--dashboard".into());
            }
            args
        })
        .collect();
    let results = run_ranks(ranks);
    let losses: Vec<f64> = results.iter().map(|o| summary(o)["valid_loss"].as_f64().unwrap()).collect();
    // The ranks hold one model: the same bits, the same loss.
    assert_eq!(losses[0], losses[1]);
    // It is the combined-batch run, up to the rounding of the gradient sums (measured: 2e-5 .. 5e-5).
    assert!((losses[0] - combined).abs() < 1e-3, "data-parallel {} vs one process {combined}", losses[0]);
    assert!((half - combined).abs() > 1e-2, "the test separates the runs: batch 2 gives {half}, batch 4 {combined}");
    // Rank 0 exports; rank 1 says so and does not.
    assert!(Path::new(&outs[0]).join("model").join("model.safetensors").exists());
    assert!(!Path::new(&outs[1]).join("model").exists());
    assert!(String::from_utf8_lossy(&results[1].stderr).contains("rank 0 exports"));

    // A rank of another run (another seed: other starting weights and batches) is refused, and both ranks fail.
    let port = free_port().to_string();
    let coordinator = format!("127.0.0.1:{port}");
    let ranks: Vec<Vec<String>> = (0..2)
        .map(|r| {
            let (rank, out) = (r.to_string(), s(dir.join(format!("refused{r}"))));
            let seed = if r == 0 { "3" } else { "4" };
            let set = [("--seed", seed), ("--nodes", "2"), ("--rank", &rank), ("--coordinator", &coordinator)];
            owned(args_with(twelve_steps(&tok, &train, &valid, &out), &set))
        })
        .collect();
    let results = run_ranks(ranks);
    for (r, result) in results.iter().enumerate() {
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(1), "rank {r}: {stderr}");
        assert!(stderr.contains("another training run"), "rank {r}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_data_parallel_run_whose_peer_dies_fails() {
    let dir = tmp("ddp-dies");
    let (tok, train, valid) = prepare(&dir);
    let coordinator = format!("127.0.0.1:{}", free_port());
    let out: Vec<String> = (0..2).map(|r| dir.join(format!("rank{r}")).to_str().unwrap().to_string()).collect();
    let rank = |r: usize| {
        let rank = r.to_string();
        let set = [("--steps", "100000"), ("--checkpoint-every", "50000"), ("--batch-size", "2")];
        let mut args = args_with(train_args(&tok, &train, &valid, &out[r]), &set);
        args.extend(["--nodes", "2", "--rank", &rank, "--coordinator", &coordinator]);
        bitnet().args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
    };
    let zero = rank(0);
    let mut one = rank(1);
    // Let the ranks join and train a while, then kill rank 1.
    std::thread::sleep(Duration::from_secs(4));
    assert!(one.try_wait().unwrap().is_none(), "rank 1 is still training");
    one.kill().unwrap();
    one.wait().unwrap();
    let started = Instant::now();
    let result = zero.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    // A clean error (exit 1), not a panic (exit 101): the training loop stops and the run reports why.
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("all 2 ranks joined") && stderr.contains("rank 1: the connection closed"), "{stderr}");
    assert!(stderr.contains("data-parallel training stopped") && !stderr.contains("panicked"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(!Path::new(&out[0]).join("model").exists(), "nothing is exported");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_dashboard_runs_on_a_terminal() {
    // util-linux `script` gives the run a pseudo-terminal on stdout.
    let dir = tmp("dashboard");
    let (tok, train, valid) = prepare(&dir);
    let out = dir.join("run");
    let log = dir.join("terminal.log");
    let set = [("--steps", "40"), ("--checkpoint-every", "20"), ("--batch-size", "2")];
    let args = args_with(train_args(&tok, &train, &valid, out.to_str().unwrap()), &set);
    let command = format!("stty cols 160 rows 45; '{}' {} --dashboard", env!("CARGO_BIN_EXE_bitnet"), args.join(" "));
    let status = Command::new("script")
        .args(["-qfec", &command, log.to_str().unwrap()])
        .env("BITNET_THREADS", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("util-linux `script`");
    assert!(status.success());
    let screen = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).to_string();
    // burn-train's dashboard took the alternate screen, drew its panels, and gave the terminal back.
    assert!(screen.contains("\x1b[?1049h") && screen.contains("\x1b[?1049l"), "no dashboard: {screen}");
    for panel in ["Loss", "Perplexity", "Learning Rate", "Iteration"] {
        assert!(screen.contains(panel), "{panel} missing");
    }
    assert!(out.join("model").join("model.safetensors").exists() && out.join("training.svg").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn local_processes_train_the_one_process_run() {
    let dir = tmp("processes");
    let (tok, train, valid) = prepare(&dir);
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    let (single, split) = (s(dir.join("single")), s(dir.join("split")));
    let steps = [("--steps", "12")];
    let one = summary(&run(&args_with(train_args(&tok, &train, &valid, &single), &steps)));
    let result = run(&args_with(train_args(&tok, &train, &valid, &split), &[("--steps", "12"), ("--processes", "2")]));
    let two = summary(&result);
    let (a, b) = (one["valid_loss"].as_f64().unwrap(), two["valid_loss"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-3, "one process {a}, two {b}");
    assert!(Path::new(&split).join("model").join("model.safetensors").exists());
    assert!(Path::new(&split).join("ranks").join("1").join("checkpoint").exists());
    // A batch that does not split evenly is a usage error; --bench reports the run's combined batch.
    let uneven = run(&args_with(train_args(&tok, &train, &valid, &split), &[("--processes", "3")]));
    assert_eq!(uneven.status.code(), Some(2), "{}", String::from_utf8_lossy(&uneven.stderr));
    assert!(String::from_utf8_lossy(&uneven.stderr).contains("multiple of --processes 3"));
    let bench = summary(&run(&[
        "train",
        "--bench",
        "2",
        "--arch",
        "tiny",
        "--context",
        "33",
        "--batch-size",
        "4",
        "--tokenizer",
        &tok,
        "--train",
        &train,
        "--processes",
        "2",
    ]));
    assert_eq!(bench["processes"], 2);
    assert_eq!(bench["tokens_per_step"], 4.0 * 32.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The processes whose command line mentions `needle` (Linux `/proc`).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn local_ranks_end_with_their_supervisor() {
    let dir = tmp("supervisor");
    let (tok, train, valid) = prepare(&dir);
    let out = dir.join("run").to_str().unwrap().to_string();
    let set = [("--steps", "100000"), ("--checkpoint-every", "50000"), ("--processes", "2")];
    let mut supervisor = bitnet()
        .args(args_with(train_args(&tok, &train, &valid, &out), &set))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The supervisor and its two ranks.
    let started = Instant::now();
    while processes_mentioning(&out).len() < 3 {
        assert!(started.elapsed() < Duration::from_secs(60), "the ranks did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    supervisor.kill().unwrap(); // SIGKILL: no chance to stop the ranks itself
    supervisor.wait().unwrap();
    let killed = Instant::now();
    while !processes_mentioning(&out).is_empty() {
        assert!(killed.elapsed() < Duration::from_secs(10), "ranks outlived their supervisor");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
