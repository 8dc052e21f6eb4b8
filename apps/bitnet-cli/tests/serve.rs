//! `bitnet serve` driven over loopback: the real binary on the embedded default model, an HTTP client, the
//! OpenAI shapes (streaming and not), every error status followed by a normal request, cancellation, a full
//! queue, concurrent greedy requests against `bitnet generate`, and a clean exit on SIGTERM.
#![cfg(feature = "serve")]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bitnet"))
            .args(["serve", "--port", "0"])
            .args(extra)
            .env("BITNET_THREADS", "2")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let base = loop {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "the server exited before listening");
            if let Some(rest) = line.trim().strip_prefix("listening on ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || for _ in stderr.lines() {});
        let server = Self { child, base };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match ureq::get(&server.url("/health")).call() {
                Ok(r) if r.status() == 200 => break,
                Err(ureq::Error::Status(503, r)) => {
                    assert_eq!(r.into_json::<Value>().unwrap()["status"], "loading");
                }
                other => panic!("health: {other:?}"),
            }
            assert!(Instant::now() < deadline, "the model did not load");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON; returns the status and the JSON body (errors included).
    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string(), &[])
    }

    fn post_raw(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut request = ureq::post(&self.url(path)).set("Content-Type", "application/json");
        for (k, v) in headers {
            request = request.set(k, v);
        }
        match request.send_string(body) {
            Ok(r) => (r.status(), r.into_json().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap()),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    /// A metric's value from /metrics.
    fn metric(&self, name: &str) -> f64 {
        let text = ureq::get(&self.url("/metrics")).call().unwrap().into_string().unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no metric {name} in {text}"))
    }

    /// Waits until `name` reaches `value` (with a deadline).
    fn wait_metric(&self, name: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.metric(name) != value {
            assert!(Instant::now() < deadline, "{name} never reached {value}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A normal request succeeds (after an error, the server keeps serving).
    fn assert_serves(&self) {
        let (status, body) = self.post("/v1/completions", &json!({"prompt": "ROMEO:", "max_tokens": 4}));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `data:` payloads of a server-sent event stream, up to and including `[DONE]`.
fn sse(server: &Server, path: &str, body: &Value) -> Vec<String> {
    let response = ureq::post(&server.url(path)).send_json(body.clone()).unwrap();
    assert_eq!(response.header("Content-Type"), Some("text/event-stream"));
    let mut events = Vec::new();
    for line in BufReader::new(response.into_reader()).lines() {
        let line = line.unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            events.push(data.to_string());
            if data == "[DONE]" {
                break;
            }
        }
    }
    events
}

fn generate_text(prompt: &str, max_new: usize) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_bitnet"))
        .args(["generate", "--prompt", prompt, "--temperature", "0", "--json"])
        .args(["--max-new-tokens", &max_new.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["text"].as_str().unwrap().to_string()
}

#[test]
fn concurrent_greedy_completions_equal_generate_alone() {
    let server = Server::start(&["--parallel", "4"]);
    let prompts = [
        "ROMEO:",
        "JULIET:\nO Romeo",
        "First Citizen:\nBefore we proceed any further, hear me speak.",
        "KING",
        "To be",
        "HAMLET:",
    ];
    let max_new = 24;
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let server = &server;
                s.spawn(move || {
                    server.post("/v1/completions", &json!({"prompt": p, "max_tokens": max_new, "temperature": 0}))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (prompt, (status, body)) in prompts.iter().zip(answers) {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["model"], "bitnet-default");
        assert_eq!(body["choices"][0]["text"].as_str().unwrap(), generate_text(prompt, max_new), "{prompt}");
        assert_eq!(body["usage"]["completion_tokens"], max_new);
        let usage = &body["usage"];
        assert_eq!(usage["total_tokens"].as_u64(), Some(usage["prompt_tokens"].as_u64().unwrap() + max_new as u64));
    }
    assert!(server.metric("bitnet_generated_tokens_total") >= (prompts.len() * max_new) as f64);
}

#[test]
fn chat_streams_the_same_text_it_returns_whole() {
    let server = Server::start(&[]);
    let models: Value = ureq::get(&server.url("/v1/models")).call().unwrap().into_json().unwrap();
    assert_eq!(models["data"][0]["id"], "bitnet-default");

    let request = json!({
        "model": "bitnet-default",
        "messages": [{"role": "system", "content": "Speak verse."}, {"role": "user", "content": "Who art thou?"}],
        "max_tokens": 20,
        "temperature": 0,
        "some_future_field": {"ignored": true},
    });
    let (status, whole) = server.post("/v1/chat/completions", &request);
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
    let text = whole["choices"][0]["message"]["content"].as_str().unwrap().to_string();

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let events = sse(&server, "/v1/chat/completions", &streamed);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
    assert_eq!(content, text);
    let finishes: Vec<&Value> =
        chunks.iter().map(|c| &c["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
    assert_eq!(finishes, [whole["choices"][0]["finish_reason"].clone()].iter().collect::<Vec<_>>());
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], whole["usage"]);

    // Text completions stream too, and stop strings cut the text (finish_reason "stop").
    let events = sse(
        &server,
        "/v1/completions",
        &json!({"prompt": "ROMEO:", "max_tokens": 30, "temperature": 0, "stream": true}),
    );
    let full: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"].as_str().unwrap().to_string())
        .collect();
    let cut = full.char_indices().nth(full.chars().count() / 2).map(|(i, _)| i).unwrap();
    let stop: String = full[cut..].chars().take(3).collect();
    let (status, body) = server
        .post("/v1/completions", &json!({"prompt": "ROMEO:", "max_tokens": 30, "temperature": 0, "stop": [stop]}));
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["choices"][0]["text"].as_str().unwrap(), &full[..full.find(&stop).unwrap()]);

    // Tokenize and detokenize round-trip.
    let (status, tokens) = server.post("/tokenize", &json!({"content": "ROMEO: hi"}));
    assert_eq!(status, 200);
    let (status, text) = server.post("/detokenize", &json!({"tokens": tokens["tokens"]}));
    assert_eq!(status, 200);
    assert_eq!(text["content"], "ROMEO: hi");
}

#[test]
fn every_error_answers_its_status_and_the_server_keeps_serving() {
    let server = Server::start(&["--max-body", "4096"]);
    let error_of = |status: u16, body: &Value| {
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{status}: {body}");
        assert!(body["error"]["type"].is_string(), "{body}");
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/completions", "{not json".into(), 400, ""),
        ("/v1/completions", json!({"prompt": 7}).to_string(), 400, ""),
        ("/v1/chat/completions", json!({"messages": "hi"}).to_string(), 400, ""),
        ("/v1/chat/completions", json!({"messages": []}).to_string(), 400, "empty"),
        ("/v1/completions", json!({"prompt": "x", "max_tokens": -1}).to_string(), 400, ""),
        ("/v1/completions", json!({"prompt": "x", "max_tokens": 0}).to_string(), 400, "max_tokens"),
        ("/v1/completions", json!({"prompt": "x", "temperature": -1}).to_string(), 400, "temperature"),
        ("/v1/completions", json!({"prompt": "x", "n": 2}).to_string(), 400, "n = 1"),
        ("/v1/completions", json!({"prompt": "x", "logprobs": 3}).to_string(), 400, "logprobs"),
        ("/v1/completions", json!({"prompt": [1, 2, 99999]}).to_string(), 400, "99999"),
        ("/v1/completions", json!({"prompt": vec![1; 600]}).to_string(), 400, "600 tokens"),
        ("/v1/completions", json!({"prompt": "x", "model": "gpt-4"}).to_string(), 404, "gpt-4"),
        ("/v1/completions", json!({"prompt": "x".repeat(5000)}).to_string(), 413, "limit"),
        ("/v1/nothing", "{}".into(), 404, "/v1/nothing"),
    ];
    for (path, body, status, needle) in cases {
        let (got, answer) = server.post_raw(path, &body, &[]);
        assert_eq!(got, status, "{path} {body:.80}: {answer}");
        error_of(got, &answer);
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message} should name {needle}");
        if status == 400 && needle == "600 tokens" {
            assert!(message.contains("512"), "names the context too: {message}");
        }
        server.assert_serves();
    }
    assert!(server.metric("bitnet_request_errors_total") >= 13.0);
}

#[test]
fn api_key_is_required_when_set() {
    let server = Server::start(&["--api-key", "sesame"]);
    let body = json!({"prompt": "ROMEO:", "max_tokens": 2}).to_string();
    let (status, answer) = server.post_raw("/v1/completions", &body, &[]);
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["type"], "authentication_error");
    let (status, _) = server.post_raw("/v1/completions", &body, &[("Authorization", "Bearer wrong")]);
    assert_eq!(status, 401);
    let (status, answer) = server.post_raw("/v1/completions", &body, &[("Authorization", "Bearer sesame")]);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(ureq::get(&server.url("/health")).call().unwrap().status(), 200);
}

#[test]
fn a_disconnected_stream_frees_its_slot_and_a_full_queue_answers_503() {
    let server = Server::start(&["--parallel", "1", "--queue", "1"]);
    // A stream read for one event and dropped: the sequence is cancelled long before its 500 tokens.
    let response = ureq::post(&server.url("/v1/completions"))
        .send_json(json!({"prompt": "ROMEO:", "max_tokens": 500, "temperature": 0, "stream": true}))
        .unwrap();
    let mut lines = BufReader::new(response.into_reader()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("data: "));
    drop(lines);
    server.wait_metric("bitnet_active_slots", 0.0);
    assert!(server.metric("bitnet_generated_tokens_total") < 500.0, "the sequence ran on after its client left");
    server.assert_serves();

    // One slot and one queue place: of 12 simultaneous long requests some must be refused with 503 and
    // Retry-After, and every accepted one completes.
    let barrier = std::sync::Barrier::new(12);
    let statuses: Vec<(u16, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|_| {
                let (server, barrier) = (&server, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let body = json!({"prompt": vec![1; 300], "max_tokens": 150, "temperature": 0});
                    match ureq::post(&server.url("/v1/completions")).send_json(body) {
                        Ok(r) => (r.status(), None),
                        Err(ureq::Error::Status(code, r)) => {
                            let retry = r.header("Retry-After").map(String::from);
                            let body: Value = r.into_json().unwrap();
                            assert!(body["error"]["message"].as_str().unwrap().contains("busy"), "{body}");
                            (code, retry)
                        }
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().any(|(s, _)| *s == 200), "{statuses:?}");
    assert!(statuses.iter().any(|(s, _)| *s == 503), "{statuses:?}");
    assert!(
        statuses.iter().all(|(s, retry)| *s == 200 || (*s == 503 && retry.as_deref() == Some("1"))),
        "{statuses:?}"
    );
    server.wait_metric("bitnet_queue_length", 0.0);
    server.assert_serves();
}

#[cfg(unix)]
#[test]
fn sigterm_finishes_in_flight_streams_and_exits_zero() {
    let mut server = Server::start(&[]);
    let response = ureq::post(&server.url("/v1/completions"))
        .send_json(json!({"prompt": "ROMEO:", "max_tokens": 200, "temperature": 0, "stream": true}))
        .unwrap();
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    // The stream in flight still ends properly.
    let events: Vec<String> = BufReader::new(response.into_reader()).lines().map(|l| l.unwrap()).collect();
    assert_eq!(events.iter().rev().find(|l| !l.is_empty()).map(String::as_str), Some("data: [DONE]"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit status {exit}");
}

#[test]
fn impossible_sizes_and_a_busy_port_are_usage_errors() {
    for args in [&["--parallel", "0"][..], &["--parallel", "100000"], &["--queue", "99999999999"], &["--context", "0"]]
    {
        let out = Command::new(env!("CARGO_BIN_EXE_bitnet")).arg("serve").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let server = Server::start(&[]);
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_bitnet")).args(["serve", "--port", &port]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}

/// `/v1/embeddings` on the BitNet embedding fixture: ids in every input shape give the reference embeddings
/// (cosine >= 0.999), equal to `bitnet embed`'s, base64 decodes to the same floats, and bad inputs are 400s.
#[test]
fn embeddings_match_the_reference_and_bitnet_embed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../bitnet-models/tests/fixtures/tiny-bitnet-embedding");
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let gguf = dir.join("model.gguf");
    let server = Server::start(&["--model", gguf.to_str().unwrap(), "--model-id", "embedder"]);
    let texts = expected["texts"].clone();
    let (status, body) = server.post("/v1/embeddings", &json!({"input": texts, "model": "embedder"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["object"].as_str(), body["model"].as_str()), (Some("list"), Some("embedder")));
    let total: u64 = texts.as_array().unwrap().iter().map(|t| t.as_array().unwrap().len() as u64).sum();
    assert_eq!(body["usage"]["prompt_tokens"], total);
    let floats = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<f64>>();
    for (i, (item, want)) in
        body["data"].as_array().unwrap().iter().zip(expected["embeddings"].as_array().unwrap()).enumerate()
    {
        assert_eq!(item["index"], i);
        let cosine: f64 = floats(&item["embedding"]).iter().zip(floats(want)).map(|(a, b)| a * b).sum();
        assert!(cosine >= 0.999, "input {i}: cosine {cosine}");
    }
    // One id list, base64: the same floats as `bitnet embed --ids`.
    let first = &texts[0];
    let (status, b64) = server.post("/v1/embeddings", &json!({"input": first, "encoding_format": "base64"}));
    assert_eq!(status, 200, "{b64}");
    let ids: Vec<String> = first.as_array().unwrap().iter().map(|x| x.to_string()).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_bitnet"))
        .args(["embed", "--model", gguf.to_str().unwrap(), "--ids", &ids.join(",")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cli: Vec<f32> = floats(&cli["data"][0]["embedding"]).into_iter().map(|x| x as f32).collect();
    let decoded = decode_base64_f32(b64["data"][0]["embedding"].as_str().unwrap());
    assert_eq!(decoded, cli, "the server and bitnet embed give the same embedding");
    for bad in [
        json!({"input": []}),
        json!({"input": [[]]}),
        json!({"input": [100000]}),
        json!({"input": first, "model": "other"}),
        json!({"input": first, "encoding_format": "int8"}),
        json!({"input": first, "dimensions": 3}),
        json!({"input": "text needs a tokenizer, which the fixture lacks"}),
    ] {
        let (status, body) = server.post("/v1/embeddings", &bad);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"]["message"].is_string());
    }
    let (status, _) = server.post("/v1/embeddings", &json!({"input": first}));
    assert_eq!(status, 200, "the server keeps serving after errors");
}

/// Standard base64 of little-endian f32 values, decoded.
fn decode_base64_f32(text: &str) -> Vec<f32> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    } as u32;
    let mut bytes = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk.iter().map(|&c| if c == b'=' { 0 } else { value(c) }).fold(0u32, |n, v| n << 6 | v);
        bytes.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}
