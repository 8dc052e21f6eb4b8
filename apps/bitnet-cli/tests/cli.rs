//! The `bitnet` binary against its command-line contract, on the transformers-made fixtures of bitnet-models:
//! greedy `generate --json` reproduces the reference continuation, `logits` writes the reference logits as
//! .npy, and bad input exits 1 (or 2 for usage) with a one-line cause.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bitnet-models/tests/fixtures").join(name)
}

fn expected(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("expected.json")).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

fn bitnet(args: &[&str]) -> Output {
    bitnet_with(args, &[])
}

/// [`bitnet`] with more environment variables.
fn bitnet_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bitnet"));
    command.args(args).env("BITNET_THREADS", "2").envs(env.iter().copied());
    command.output().unwrap()
}

/// The `ternary_layouts` a `bitnet bench --json` run reports.
fn bench_layouts(out: &Output) -> Vec<String> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["ternary_layouts"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect()
}

fn join(ids: &[u64]) -> String {
    ids.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",")
}

fn one_line_error(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line on stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

#[test]
fn greedy_generate_json_matches_transformers() {
    for name in ["tiny-bitlinear", "tiny-autobitlinear"] {
        let e = expected(name);
        let dir = fixture(name);
        let greedy = ids(&e["greedy"]);
        let max_new = greedy.len().to_string();
        let out = bitnet(&[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--prompt-ids",
            &join(&ids(&e["prompt"])),
            "--temperature",
            "0",
            "--max-new-tokens",
            &max_new,
            "--json",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(ids(&json["tokens"]), greedy, "{name}");
        assert_eq!(ids(&json["prompt_tokens"]), ids(&e["prompt"]));
        assert!(json["prefill_tokens_per_s"].as_f64().unwrap() > 0.0);
        assert!(json["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("prefill:") && stderr.contains("decode:"), "speeds on stderr: {stderr}");
    }
}

#[test]
fn gguf_models_generate_like_their_hf_source() {
    let e = expected("tiny-bitlinear-256");
    let run = |model: PathBuf| {
        let out = bitnet(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt-ids",
            &join(&ids(&e["prompt"])),
            "--temperature",
            "0",
            "--max-new-tokens",
            "4",
            "--json",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ids(&json["tokens"])
    };
    let reference = ids(&e["greedy"])[..4].to_vec();
    assert_eq!(run(fixture("tiny-bitlinear-256")), reference);
    for kind in ["tq2_0", "tq1_0", "i2_s"] {
        let path = fixture(".").join(format!("tiny-{kind}.gguf"));
        assert_eq!(run(path), reference, "{kind}");
    }
}

#[test]
fn logits_npy_matches_transformers() {
    let e = expected("tiny-bitlinear");
    let out_file = std::env::temp_dir().join(format!("bitnet-cli-logits-{}.npy", std::process::id()));
    let out = bitnet(&[
        "logits",
        "--model",
        fixture("tiny-bitlinear").to_str().unwrap(),
        "--prompt-ids",
        &join(&ids(&e["prompt"])),
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&out_file).unwrap();
    std::fs::remove_file(&out_file).ok();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'") && header.contains("'shape': (7, 300)"), "{header}");
    let values: Vec<f32> =
        bytes[10 + header_len..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let reference: Vec<f64> = e["logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(values.len(), reference.len());
    let max_diff = values.iter().zip(&reference).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
    assert!(max_diff <= 0.05, "max |logit difference| {max_diff}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["generate", "--model", "x", "--prompt-ids", "1,a"],
        vec!["generate", "--model", "x", "--prompt-ids", "1", "--temperature", "-1"],
        vec!["generate", "--no-such-flag"],
    ] {
        let out = bitnet(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A scratch copy of a fixture whose files a test may corrupt.
fn scratch_copy(name: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bitnet-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture(name).join(file), dir.join(file)).unwrap();
    }
    dir
}

/// A named way to damage a model directory, and a word the error line must contain.
type Corruption = (&'static str, Box<dyn Fn(&Path)>, &'static str);

#[test]
fn corrupt_model_files_exit_1_with_a_one_line_cause() {
    let cases: Vec<Corruption> = vec![
        ("missing-dir", Box::new(|d: &Path| std::fs::remove_dir_all(d).unwrap()), "No such file"),
        (
            "truncated-weights",
            Box::new(|d: &Path| {
                let p = d.join("model.safetensors");
                let bytes = std::fs::read(&p).unwrap();
                std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
            }),
            "model.safetensors",
        ),
        (
            "absurd-header",
            Box::new(|d: &Path| {
                let p = d.join("model.safetensors");
                let mut bytes = std::fs::read(&p).unwrap();
                bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                std::fs::write(&p, bytes).unwrap();
            }),
            "model.safetensors",
        ),
        (
            "bad-config",
            Box::new(|d: &Path| std::fs::write(d.join("config.json"), "{\"hidden_size\": 64").unwrap()),
            "config.json",
        ),
        (
            "wrong-shape",
            Box::new(|d: &Path| {
                let p = d.join("config.json");
                let text = std::fs::read_to_string(&p)
                    .unwrap()
                    .replace("\"intermediate_size\": 160", "\"intermediate_size\": 192");
                std::fs::write(&p, text).unwrap();
            }),
            "shape",
        ),
    ];
    // A configuration field changed to `value` (a JSON literal).
    let set = |field: &'static str, value: &'static str| -> Box<dyn Fn(&Path)> {
        Box::new(move |d: &Path| {
            let p = d.join("config.json");
            let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            config[field] = serde_json::from_str(value).unwrap();
            std::fs::write(&p, config.to_string()).unwrap();
        })
    };
    // The first `weight_scale` tensor of the safetensors file set to +inf.
    let infinite_scale: Box<dyn Fn(&Path)> = Box::new(|d: &Path| {
        let p = d.join("model.safetensors");
        let mut bytes = std::fs::read(&p).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let (_, info) = header.as_object().unwrap().iter().find(|(k, _)| k.ends_with("weight_scale")).unwrap();
        let at = 8 + n + info["data_offsets"][0].as_u64().unwrap() as usize;
        bytes[at..at + 4].copy_from_slice(&f32::INFINITY.to_le_bytes());
        std::fs::write(&p, bytes).unwrap();
    });
    // The final norm's gains set to 3e38: finite weights whose activations overflow.
    let overflowing_norm: Box<dyn Fn(&Path)> = Box::new(|d: &Path| {
        let p = d.join("model.safetensors");
        let mut bytes = std::fs::read(&p).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let info = &header["model.norm.weight"];
        assert_eq!(info["dtype"], "F32");
        let (start, end) = (info["data_offsets"][0].as_u64().unwrap(), info["data_offsets"][1].as_u64().unwrap());
        for at in (8 + n + start as usize..8 + n + end as usize).step_by(4) {
            bytes[at..at + 4].copy_from_slice(&3e38f32.to_le_bytes());
        }
        std::fs::write(&p, bytes).unwrap();
    });
    let mut cases = cases;
    cases.push(("infinite-row-scale", infinite_scale, "weight_scale"));
    cases.push(("overflowing-activations", overflowing_norm, "non-finite logits"));
    cases.extend([
        ("fewer-layers-than-tensors", set("num_hidden_layers", "1"), "layer 1"),
        ("absurd-layer-count", set("num_hidden_layers", "1000000000"), "missing tensor"),
        (
            "vanishing-rope-theta",
            set("rope_parameters", r#"{"rope_type": "default", "rope_theta": 1e-300}"#),
            "rope_theta",
        ),
        (
            "infinite-f32-rope-theta",
            set("rope_parameters", r#"{"rope_type": "default", "rope_theta": 1e300}"#),
            "rope_theta",
        ),
        ("negative-eps", set("rms_norm_eps", "-1.0"), "rms_norm_eps"),
    ] as [Corruption; 5]);
    for (tag, corrupt, needle) in cases {
        let dir = scratch_copy("tiny-bitlinear", tag);
        corrupt(&dir);
        let out = bitnet(&["generate", "--model", dir.to_str().unwrap(), "--prompt-ids", "5,6", "--temperature", "0"]);
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(out.status.code(), Some(1), "{tag}: {}", String::from_utf8_lossy(&out.stderr));
        let line = one_line_error(&out);
        assert!(line.contains(needle), "{tag}: {line}");
        // Load-time faults name the model (a fault found while running it is about the run).
        if tag != "overflowing-activations" {
            assert!(line.contains(&format!("bitnet-cli-{tag}-")), "{tag}: the error names the model: {line}");
        }
    }
}

#[test]
fn init_random_tiny_model_loads_and_generates() {
    let dir = std::env::temp_dir().join(format!("bitnet-cli-init-{}", std::process::id()));
    let out = bitnet(&["init", "--random", "--arch", "tiny", "--out", dir.to_str().unwrap(), "--seed", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = || {
        let out = bitnet(&[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--prompt-ids",
            "5,6,7",
            "--max-new-tokens",
            "5",
            "--seed",
            "1",
            "--json",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ids(&json["tokens"])
    };
    let first = run();
    assert!(!first.is_empty() && first.len() <= 5);
    assert_eq!(run(), first, "the same seed gives the same tokens");
    std::fs::remove_dir_all(&dir).ok();
    let out = bitnet(&["init", "--random", "--arch", "13b", "--out", "/tmp/x"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A random tiny model with the LLaMA-3 vocabulary, so the shipped tokenizer fits; `with_tokenizer` adds it.
fn tiny_llama3_vocab_model(tag: &str, with_tokenizer: bool) -> PathBuf {
    use bitnet_models::export::{random_model, write_hf_checkpoint};
    use bitnet_models::tokenizer::{llama3_tokenizer_json, LLAMA3_TOKENIZER_CONFIG};
    use bitnet_models::zoo::arch_config;
    let mut config = arch_config("tiny").unwrap();
    config.vocab_size = 128_256;
    let dir = std::env::temp_dir().join(format!("bitnet-cli-{tag}-{}", std::process::id()));
    let model =
        random_model::<burn::backend::Flex>(&config, burn::tensor::DType::BF16, 5, &Default::default()).unwrap();
    write_hf_checkpoint(&model, &dir, None).unwrap();
    if with_tokenizer {
        std::fs::write(dir.join("tokenizer.json"), llama3_tokenizer_json()).unwrap();
        std::fs::write(dir.join("tokenizer_config.json"), LLAMA3_TOKENIZER_CONFIG).unwrap();
    }
    dir
}

#[test]
fn text_prompt_uses_the_model_tokenizer() {
    let gen = |dir: &Path| {
        bitnet(&[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--prompt",
            "Hello",
            "--max-new-tokens",
            "3",
            "--temperature",
            "0",
            "--json",
        ])
    };
    // Without a tokenizer.json, --prompt is a usage error.
    let bare = tiny_llama3_vocab_model("no-tok", false);
    assert_eq!(gen(&bare).status.code(), Some(2));
    std::fs::remove_dir_all(&bare).ok();
    let dir = tiny_llama3_vocab_model("tok", true);
    let out = gen(&dir);
    std::fs::remove_dir_all(&dir).ok();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // BOS (128000) is prepended; "Hello" is token 9906.
    assert_eq!(ids(&json["prompt_tokens"]), vec![128_000, 9906]);
    assert!(json["text"].is_string());
}

#[test]
fn perplexity_json_scores_a_text_file() {
    let dir = tiny_llama3_vocab_model("ppl", true);
    let text = dir.join("text.txt");
    std::fs::write(&text, "ROMEO: But, soft! what light through yonder window breaks? It is the east.").unwrap();
    let out = bitnet(&[
        "perplexity",
        "--model",
        dir.to_str().unwrap(),
        "--file",
        text.to_str().unwrap(),
        "--context",
        "8",
        "--json",
    ]);
    let missing = bitnet(&["perplexity", "--model", dir.to_str().unwrap(), "--file", "/no/such/file.txt"]);
    std::fs::remove_dir_all(&dir).ok();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (nll, ppl) = (json["nll"].as_f64().unwrap(), json["ppl"].as_f64().unwrap());
    assert!(json["tokens"].as_u64().unwrap() > 5);
    assert!(nll > 0.0 && (ppl - nll.exp()).abs() < 1e-6 * ppl);
    assert_eq!(missing.status.code(), Some(1));
    one_line_error(&missing);
}

#[test]
fn inspect_describes_hf_and_gguf_models() {
    for (model, format, dtype) in
        [("tiny-bitlinear", "huggingface-safetensors", "U8"), ("tiny-tq1_0.gguf", "gguf-v3 (bitnet-25)", "TQ1_0")]
    {
        let out = bitnet(&["inspect", "--model", fixture(model).to_str().unwrap(), "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["format"], format);
        assert_eq!(json["vocab_size"], 300);
        assert!(json["tensors_by_dtype"][dtype].as_u64().unwrap() >= 14, "{json}");
    }
}

#[test]
fn chat_answers_each_line_and_reuses_the_cache() {
    use std::io::Write;
    let dir = tiny_llama3_vocab_model("chat", true);
    let mut child = Command::new(env!("CARGO_BIN_EXE_bitnet"))
        .args([
            "chat",
            "--model",
            dir.to_str().unwrap(),
            "--max-new-tokens",
            "4",
            "--temperature",
            "0",
            "--system",
            "Be brief.",
        ])
        .env("BITNET_THREADS", "2")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Hello there\nAnd again\n/reset\nThird\n").unwrap();
    let out = child.wait_with_output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let turns: Vec<&str> = stderr.lines().filter(|l| l.contains("cached prompt tokens reused")).collect();
    assert_eq!(turns.len(), 3, "{stderr}");
    assert!(turns[0].starts_with("[0 cached"), "first turn starts cold: {}", turns[0]);
    let reused: usize = turns[1].trim_start_matches('[').split(' ').next().unwrap().parse().unwrap();
    assert!(reused > 10, "the second turn reuses the first turn's prompt: {}", turns[1]);
    assert!(stderr.contains("(conversation reset)"));
    assert!(turns[2].starts_with("[0 cached"), "after /reset the cache is cold: {}", turns[2]);
}

#[test]
fn init_writes_random_gguf_models_that_run() {
    let dir = std::env::temp_dir().join(format!("bitnet-init-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny-i2s.gguf");
    let out = bitnet(&["init", "--random", "--arch", "tiny", "--format", "i2s", "--out", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bitnet(&["inspect", "--model", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("bitnet-b1.58"));
    let out = bitnet(&[
        "generate",
        "--model",
        path.to_str().unwrap(),
        "--prompt-ids",
        "1,2,3",
        "--max-new-tokens",
        "4",
        "--temperature",
        "0",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tokens"].as_array().unwrap().len(), 4);
    // TQ2_0 needs 256-wide rows: the tiny shapes are refused with a usage error, not a broken file.
    let bad = dir.join("tiny-tq2.gguf");
    let out = bitnet(&["init", "--random", "--arch", "tiny", "--format", "tq2_0", "--out", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line_error(&out).contains("i2s"));
    assert!(!bad.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `init --embedding q4` writes a Q4_0 `token_embd` (tied head) into a GGUF file; it loads as a Q4 head, and
/// `--head q4` on it keeps those blocks (the same tokens as `--head stored`); a Hugging Face directory cannot
/// store the blocks, which is a usage error.
#[test]
fn q4_embedding_files_run_with_the_q4_head() {
    let dir = std::env::temp_dir().join(format!("bitnet-init-q4-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("small-q4.gguf");
    let file = path.to_str().unwrap();
    let init = ["init", "--random", "--arch", "small", "--format", "i2s", "--embedding", "q4", "--out", file];
    let out = bitnet(&init);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bitnet(&["inspect", "--model", file]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Q4_0"), "{}", String::from_utf8_lossy(&out.stdout));
    let generate = |head: &str| {
        let args =
            ["generate", "--model", file, "--prompt-ids", "1,2,3", "--max-new-tokens", "6", "--temperature", "0"];
        let out = bitnet(&[&args[..], &["--head", head, "--json"]].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["tokens"].clone()
    };
    let stored = generate("stored");
    assert_eq!(stored.as_array().unwrap().len(), 6);
    assert_eq!(generate("q4"), stored);
    let hf = dir.join("hf");
    let out = bitnet(&["init", "--random", "--arch", "small", "--embedding", "q4", "--out", hf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line_error(&out).contains("GGUF"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_reports_decode_against_the_probe() {
    let dir = fixture("tiny-bitlinear");
    let model = dir.to_str().unwrap();
    let common = ["bench", "--model", model, "--prompt-tokens", "3", "--decode-tokens", "4", "--warmup-runs", "0"];
    let out = bitnet(&[&common[..], &["--runs", "2", "--probe-mib", "64", "--json"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 2);
    assert!(v["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    let probe = v["probe_bytes_per_s"].as_f64().unwrap();
    let bytes = v["weight_bytes_per_token"].as_f64().unwrap();
    // One probe before the runs and one after each.
    assert_eq!(v["probe_samples_bytes_per_s"].as_array().unwrap().len(), 3);
    let roofline = v["roofline_tokens_per_s"].as_f64().unwrap();
    assert!((roofline - probe / bytes).abs() <= 1e-9 * roofline);
    // The fraction is the median (here of two: their mean) of each run against the probes either side of it.
    let samples: Vec<f64> =
        v["probe_samples_bytes_per_s"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).collect();
    let runs: Vec<f64> =
        v["runs"].as_array().unwrap().iter().map(|r| r["decode_tokens_per_s"].as_f64().unwrap()).collect();
    let want: Vec<f64> = (0..2).map(|i| runs[i] * bytes / ((samples[i] + samples[i + 1]) / 2.0)).collect();
    let got: Vec<f64> = v["roofline_fraction_runs"].as_array().unwrap().iter().map(|f| f.as_f64().unwrap()).collect();
    assert_eq!(got.len(), 2);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-9 * w, "{got:?} vs {want:?}");
    }
    let fraction = v["roofline_fraction"].as_f64().unwrap();
    assert!((fraction - (want[0] + want[1]) / 2.0).abs() <= 1e-9 * fraction, "{fraction} vs {want:?}");
    // The cache's reads: f32 keys and values of every layer's key/value heads at 3 + 4 / 2 = 5 positions.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let dim = |k: &str| config[k].as_u64().unwrap();
    let head_dim = dim("hidden_size") / dim("num_attention_heads");
    let per_position = dim("num_hidden_layers") * 2 * dim("num_key_value_heads") * head_dim * 4;
    assert_eq!(v["cache_bytes_per_token"].as_u64().unwrap(), per_position * 5);
    let with_cache = v["roofline_fraction_with_cache"].as_f64().unwrap();
    let want_with_cache = fraction * (bytes + (per_position * 5) as f64) / bytes;
    assert!((with_cache - want_with_cache).abs() <= 1e-9 * with_cache, "{with_cache} vs {want_with_cache}");

    // The ternary weights are packed in the layout the CPU kernel reads fastest unless BITNET_TERNARY_LAYOUT says.
    use bitnet_models::backend::kernels::{Kernel, TernaryLayout};
    let preferred = TernaryLayout::preferred_for(Kernel::selected()).name();
    assert_eq!(v["ternary_layouts"], serde_json::json!([preferred]));
    let quick = [&common[..], &["--runs", "1", "--probe-mib", "0", "--json"]].concat();
    assert_eq!(bench_layouts(&bitnet_with(&quick, &[("BITNET_TERNARY_LAYOUT", "2bit")])), ["2-bit"]);

    // Without the probe there is no roofline; the text report names the bytes per token.
    let out = bitnet(&[&common[..], &["--runs", "1", "--probe-mib", "0"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("weights streamed per decoded token") && !text.contains("roofline"), "{text}");
    assert!(text.contains("key/value cache read per decoded token") && !text.contains("counted too"), "{text}");

    for bad in [&["--runs", "0"][..], &["--probe-mib", "8"][..], &["--decode-tokens", "1"][..]] {
        let out = bitnet(&[&common[..3], bad].concat());
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // More tokens than the model's context is the model's error (exit 1), named.
    let out =
        bitnet(&["bench", "--model", model, "--prompt-tokens", "100", "--decode-tokens", "100", "--probe-mib", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("context of 128"));
}

#[test]
fn closed_stdout_and_full_devices_are_handled() {
    use std::io::Read;
    // The reader of stdout goes away after one byte: the command stops quietly, without a panic.
    let mut child = Command::new(env!("CARGO_BIN_EXE_bitnet"))
        .args(["generate", "--prompt", "ROMEO:", "--max-new-tokens", "400", "--temperature", "0"])
        .env("BITNET_THREADS", "2")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    stdout.read_exact(&mut byte).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // A write that fails (a full device) is an error, never "wrote".
    if Path::new("/dev/full").exists() {
        let e = expected("tiny-bitlinear");
        let model = fixture("tiny-bitlinear");
        let prompt = join(&ids(&e["prompt"]));
        let args = ["logits", "--model", model.to_str().unwrap(), "--prompt-ids", &prompt, "--out", "/dev/full"];
        let out = bitnet(&args);
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(one_line_error(&out).contains("/dev/full"));
        assert!(Path::new("/dev/full").metadata().is_ok_and(|m| !m.is_file()), "the device node is untouched");
    }
}

#[test]
fn device_flag_is_checked_and_gpu_devices_match_the_cpu() {
    let e = expected("tiny-bitlinear");
    let model = fixture("tiny-bitlinear");
    let prompt = join(&ids(&e["prompt"]));
    for device in ["wgpu", "cuda"] {
        let built = match device {
            "wgpu" => cfg!(feature = "wgpu"),
            _ => cfg!(feature = "cuda"),
        };
        if built {
            continue;
        }
        let out =
            bitnet(&["generate", "--model", model.to_str().unwrap(), "--prompt-ids", &prompt, "--device", device]);
        assert_eq!(out.status.code(), Some(2), "{device}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(one_line_error(&out).contains(&format!("--features {device}")));
    }
    if !cfg!(feature = "wgpu") {
        return;
    }
    // On wgpu (lavapipe in CI), the fixtures generate the reference's greedy tokens and write its logits, with
    // the ternary weights packed in 2 bits (the GPU default) and five to a byte (BITNET_TERNARY_LAYOUT).
    for (name, layout) in [
        ("tiny-bitlinear", "2bit"),
        ("tiny-llama-bitnet-rmsnorm", "2bit"),
        ("tiny-bitlinear", "trits5"),
        ("tiny-llama-bitnet-rmsnorm", "trits5"),
    ] {
        let env: &[(&str, &str)] = if layout == "2bit" { &[] } else { &[("BITNET_TERNARY_LAYOUT", layout)] };
        let bitnet = |args: &[&str]| bitnet_with(args, env);
        let e = expected(name);
        let dir = fixture(name);
        let greedy = ids(&e["greedy"]);
        let max_new = greedy.len().to_string();
        let prompt = join(&ids(&e["prompt"]));
        let model = dir.to_str().unwrap();
        let common = ["--model", model, "--prompt-ids", &prompt, "--device", "wgpu"];
        let args =
            [&["generate"][..], &common, &["--temperature", "0", "--max-new-tokens", &max_new, "--json"]].concat();
        let out = bitnet(&args);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(ids(&json["tokens"]), greedy, "{name} greedy on wgpu, {layout}");
        let bench = ["bench", "--model", model, "--device", "wgpu", "--prompt-tokens", "2", "--decode-tokens", "2"];
        let bench = [&bench[..], &["--runs", "1", "--warmup-runs", "0", "--probe-mib", "0", "--json"]].concat();
        let want = if layout == "2bit" { "2-bit" } else { "five-trit" };
        assert_eq!(bench_layouts(&bitnet(&bench)), [want], "{name} on wgpu");

        let out_file = std::env::temp_dir().join(format!("bitnet-cli-wgpu-{name}-{layout}-{}.npy", std::process::id()));
        let args = [&["logits"][..], &common, &["--out", out_file.to_str().unwrap()]].concat();
        let out = bitnet(&args);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let bytes = std::fs::read(&out_file).unwrap();
        std::fs::remove_file(&out_file).ok();
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        let values: Vec<f32> =
            bytes[10 + header_len..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let reference: Vec<f64> = e["logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(values.len(), reference.len());
        let max_diff = values.iter().zip(&reference).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        assert!(max_diff <= 0.05, "{name} on wgpu, {layout}: max |logit difference| {max_diff}");
    }
}

#[test]
fn inspect_reads_sharded_directories() {
    // The tiny fixture split into two shards with an index, as large checkpoints ship.
    let dir = std::env::temp_dir().join(format!("bitnet-cli-shards-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture("tiny-bitlinear");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut names: Vec<&String> = header.keys().filter(|k| *k != "__metadata__").collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in [("model-00001-of-00002.safetensors", first), ("model-00002-of-00002.safetensors", second)] {
        let mut head = serde_json::Map::new();
        let mut body = Vec::new();
        for name in part {
            let info = &header[name.as_str()];
            let offsets = info["data_offsets"].as_array().unwrap();
            let (s, e) = (offsets[0].as_u64().unwrap() as usize, offsets[1].as_u64().unwrap() as usize);
            let mut entry = info.clone();
            entry["data_offsets"] = serde_json::json!([body.len(), body.len() + e - s]);
            body.extend_from_slice(&data[s..e]);
            head.insert(name.to_string(), entry);
            weight_map.insert(name.to_string(), serde_json::json!(shard));
        }
        let mut head = serde_json::Value::Object(head).to_string();
        while !head.len().is_multiple_of(8) {
            head.push(' ');
        }
        let mut file = (head.len() as u64).to_le_bytes().to_vec();
        file.extend(head.as_bytes());
        file.extend(body);
        std::fs::write(dir.join(shard), file).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let out = bitnet(&["inspect", "--model", dir.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tensors"].as_u64().unwrap() as usize, names.len());
    // And the sharded model runs like the single-file one.
    let e = expected("tiny-bitlinear");
    let args = ["--prompt-ids", &join(&ids(&e["prompt"])), "--temperature", "0", "--max-new-tokens", "4", "--json"];
    let gen = |m: &Path| {
        let out = bitnet(&[&["generate", "--model", m.to_str().unwrap()][..], &args].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        ids(&serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["tokens"])
    };
    assert_eq!(gen(&dir), gen(&src));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `bitnet convert` on the Qwen3 fixture: GGUF Q2_0 -> HF -> Q2_0 generates the reference continuation at
/// every step, an existing output needs --force, and a target that cannot hold the scales exits 1 with the
/// reason (and writes nothing). `init` writes Qwen3-shaped models as Q2_0 and refuses coarser types (exit 2).
#[test]
fn convert_round_trips_a_qwen3_model_and_init_writes_one() {
    let e = expected("tiny-qwen3-q2_0");
    let dir = std::env::temp_dir().join(format!("bitnet-cli-convert-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let greedy = |model: &Path| {
        let out = bitnet(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt-ids",
            &join(&ids(&e["prompt"])),
            "--temperature",
            "0",
            "--max-new-tokens",
            "8",
            "--json",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        ids(&serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["tokens"])
    };
    let source = fixture("tiny-qwen3-q2_0").join("model.gguf");
    assert_eq!(greedy(&source), ids(&e["greedy"]));
    let hf = dir.join("hf");
    let q2 = dir.join("again.gguf");
    for (from, to, format) in [(&source, &hf, "hf"), (&hf, &q2, "q2_0")] {
        let args = ["convert", "--model", from.to_str().unwrap(), "--out", to.to_str().unwrap(), "--format", format];
        let out = bitnet(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(greedy(to), ids(&e["greedy"]), "after converting to {format}");
        assert_eq!(bitnet(&args).status.code(), Some(2), "an existing output needs --force");
    }
    let i2s = dir.join("x.i2s.gguf");
    let out =
        bitnet(&["convert", "--model", source.to_str().unwrap(), "--out", i2s.to_str().unwrap(), "--format", "i2s"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("error: ") && last.contains("I2_S") && last.contains("token_embd"), "{stderr}");
    assert!(!i2s.exists());
    let random = dir.join("random.gguf");
    let out =
        bitnet(&["init", "--random", "--arch", "tiny-qwen3", "--format", "q2_0", "--out", random.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out =
        bitnet(&["generate", "--model", random.to_str().unwrap(), "--prompt-ids", "1,2", "--max-new-tokens", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bitnet(&["init", "--random", "--arch", "tiny-qwen3", "--format", "tq2_0", "--out", "/tmp/never.gguf"]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}
