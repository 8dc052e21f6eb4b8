//! The hub download path against a loopback HTTP server that serves a tiny model in the hub's URL layout
//! (`/api/models/{repo}/revision/{rev}` and `/{repo}/resolve/{rev}/{file}` with the hub's headers), then the
//! cache with `HF_HUB_OFFLINE=1`, then hostile servers: path-like ETags, commits and file names, a redirect
//! without `Location`, a body shorter than announced, a server that never answers. One test function: the
//! environment variables are process-wide.

use bitnet_models::hub::fetch;
use bitnet_models::load_model;
use burn::backend::Flex;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

const REPO: &str = "bitnet-rust/tiny-bitlinear";
const GGUF_REPO: &str = "bitnet-rust/tiny-gguf";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_test_token";

struct Server {
    url: String,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

fn handle(mut stream: TcpStream, files: &Arc<HashMap<String, Vec<u8>>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    if headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {TOKEN}")) {
        return respond(&mut stream, "401 Unauthorized", &[], b"{\"error\":\"token required\"}");
    }
    // Hostile variants, by repo: each serves REPO's files but lies in one way.
    let evil = path.split('/').find_map(|p| p.strip_prefix("evil-")).map(String::from);
    let path = match &evil {
        Some(kind) => path.replace(&format!("evil/evil-{kind}"), REPO),
        None => path,
    };
    match evil.as_deref() {
        Some("hang") => {
            std::thread::sleep(std::time::Duration::from_secs(5));
            return;
        }
        Some("sha") if path.starts_with("/api/") => {
            let body = r#"{"sha":"../../x","siblings":[{"rfilename":"config.json"}]}"#;
            return respond(&mut stream, "200 OK", &[], body.as_bytes());
        }
        Some("listing") if path.starts_with("/api/") => {
            let names = ["config.json", "model.safetensors", "../../../outside.safetensors", "sub/x.safetensors"];
            let siblings: Vec<String> = names.iter().map(|f| format!("{{\"rfilename\":\"{f}\"}}")).collect();
            let body = format!("{{\"sha\":\"{COMMIT}\",\"siblings\":[{}]}}", siblings.join(","));
            return respond(&mut stream, "200 OK", &[], body.as_bytes());
        }
        Some("redirect") if !path.starts_with("/api/") => {
            return respond(&mut stream, "302 Found", &[], b"");
        }
        Some("short") if !path.starts_with("/api/") => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nETag: \"abc\"\r\nX-Repo-Commit: {COMMIT}\r\n\
                 Connection: close\r\n\r\nonly a little"
            );
            let _ = stream.write_all(head.as_bytes());
            return;
        }
        _ => {}
    }
    // `files` is keyed by "owner/name/file".
    if let Some(repo) = path.strip_prefix("/api/models/").and_then(|p| p.strip_suffix("/revision/main")) {
        let prefix = format!("{repo}/");
        let siblings: Vec<String> = files
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|f| format!("{{\"rfilename\":\"{f}\"}}"))
            .collect();
        if siblings.is_empty() {
            return respond(&mut stream, "404 Not Found", &[], b"{\"error\":\"no such repo\"}");
        }
        let body = format!("{{\"sha\":\"{COMMIT}\",\"siblings\":[{}]}}", siblings.join(","));
        return respond(&mut stream, "200 OK", &[("Content-Type".into(), "application/json".into())], body.as_bytes());
    }
    let key = path.trim_start_matches('/').replacen("/resolve/main/", "/", 1);
    let Some(data) = files.get(&key) else {
        return respond(&mut stream, "404 Not Found", &[], b"not found");
    };
    let etag = format!("\"etag{}x{}\"", data.len(), data.iter().map(|&b| b as usize).sum::<usize>());
    let (etag, commit) = match evil.as_deref() {
        Some("etag") => ("\"../../../../x/blob\"".to_string(), COMMIT.to_string()),
        Some("commit") => (etag, "../../../x".to_string()),
        _ => (etag, COMMIT.to_string()),
    };
    let mut hdrs = vec![("ETag".to_string(), etag), ("X-Repo-Commit".to_string(), commit)];
    match headers.get("range").and_then(|r| r.strip_prefix("bytes=")) {
        Some(range) => {
            let (start, end) = range.split_once('-').unwrap_or((range, ""));
            let start: usize = start.parse().unwrap_or(0).min(data.len());
            let end: usize = end.parse().map(|e: usize| e + 1).unwrap_or(data.len()).min(data.len());
            hdrs.push(("Content-Range".into(), format!("bytes {start}-{}/{}", end.saturating_sub(1), data.len())));
            respond(&mut stream, "206 Partial Content", &hdrs, &data[start..end]);
        }
        None => respond(&mut stream, "200 OK", &hdrs, data),
    }
}

fn serve(files: HashMap<String, Vec<u8>>) -> Server {
    let files = Arc::new(files);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicUsize::new(0));
    let (stop2, requests2) = (stop.clone(), requests.clone());
    std::thread::spawn(move || {
        // Bounded: at most 200 requests or 60 s, whichever comes first.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !stop2.load(Ordering::Relaxed)
            && std::time::Instant::now() < deadline
            && requests2.load(Ordering::Relaxed) < 200
        {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    requests2.fetch_add(1, Ordering::Relaxed);
                    let files = files.clone();
                    std::thread::spawn(move || handle(stream, &files));
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
    });
    Server { url, stop, requests }
}

/// A Hugging Face repo (`REPO`) and a GGUF-only repo (`GGUF_REPO`), keyed "owner/name/file".
fn fixture_files() -> HashMap<String, Vec<u8>> {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files = HashMap::new();
    for name in ["config.json", "model.safetensors"] {
        files.insert(format!("{REPO}/{name}"), std::fs::read(fixtures.join("tiny-bitlinear").join(name)).unwrap());
    }
    files.insert(format!("{REPO}/README.md"), b"# tiny".to_vec());
    files.insert(format!("{GGUF_REPO}/tiny-i2_s.gguf"), std::fs::read(fixtures.join("tiny-i2_s.gguf")).unwrap());
    files.insert(format!("{GGUF_REPO}/README.md"), b"# tiny gguf".to_vec());
    files
}

#[test]
fn download_through_the_hub_layout_then_offline_cache() {
    let outer = std::env::temp_dir().join(format!("bitnet-hub-{}", std::process::id()));
    let home = outer.join("home");
    let server = serve(fixture_files());
    // This test binary has one test, so no other thread reads the environment while it changes.
    std::env::set_var("HF_HOME", &home);
    std::env::set_var("HF_ENDPOINT", &server.url);
    std::env::remove_var("HF_HUB_OFFLINE");

    // Without the token the server refuses: a clear error, no panic.
    std::env::remove_var("HF_TOKEN");
    let err = fetch(REPO, "main").unwrap_err().to_string();
    assert!(err.contains(REPO) && err.contains("401"), "{err}");

    std::env::set_var("HF_TOKEN", TOKEN);
    let dir = fetch(REPO, "main").unwrap();
    assert!(dir.join("config.json").is_file() && dir.join("model.safetensors").is_file(), "{}", dir.display());
    assert!(!dir.join("README.md").exists(), "only model files are fetched");
    assert!(dir.starts_with(&home), "files land in the HF_HOME cache");
    let model = load_model::<Flex>(&dir, &Default::default()).unwrap();
    assert_eq!(model.config().vocab_size, 300);
    let served = server.requests.load(Ordering::Relaxed);
    assert!(served >= 3, "listing + metadata + downloads: {served}");
    // A GGUF-only repo resolves to its .gguf file.
    let gguf = fetch(GGUF_REPO, "main").unwrap();
    assert_eq!(gguf.file_name().unwrap(), "tiny-i2_s.gguf");
    assert!(!gguf.with_file_name("README.md").exists(), "only model files are fetched");
    load_model::<Flex>(&gguf, &Default::default()).unwrap();

    // Hostile servers: each is a clear error (or, for names outside the repo root, ignored); nothing is
    // written outside the cache and nothing hangs.
    std::env::set_var("HF_HUB_DOWNLOAD_TIMEOUT", "1");
    for (kind, needle) in [
        ("etag", "invalid ETag"),
        ("commit", "served from commit"),
        ("sha", "commit id"),
        ("redirect", "without a Location"),
        ("short", "bytes"),
        ("hang", "evil/evil-hang"),
    ] {
        let started = std::time::Instant::now();
        let err = fetch(&format!("evil/evil-{kind}"), "main").unwrap_err().to_string();
        assert!(err.contains(needle), "{kind}: {err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(4), "{kind} took {:?}", started.elapsed());
    }
    let listed = fetch("evil/evil-listing", "main").unwrap();
    assert!(listed.join("config.json").is_file() && listed.starts_with(&home));
    assert!(!listed.join("x.safetensors").exists());
    let escaped: Vec<_> = std::fs::read_dir(&outer).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(escaped, ["home"], "nothing is written next to HF_HOME");
    assert!(fetch(REPO, "../../etc").is_err() && fetch(REPO, "refs/../../x").is_err());

    // Offline: the cache serves the model with the server gone; an unknown repo is an error.
    server.stop.store(true, Ordering::Relaxed);
    std::env::set_var("HF_HUB_OFFLINE", "1");
    assert_eq!(fetch(REPO, "main").unwrap(), dir);
    assert_eq!(fetch(GGUF_REPO, "main").unwrap(), gguf);
    let err = fetch("bitnet-rust/never-downloaded", "main").unwrap_err().to_string();
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    assert!(fetch("not a repo id", "main").is_err());
    assert!(fetch(REPO, "../../../x").unwrap_err().to_string().contains("revision"));
    std::fs::remove_dir_all(&outer).ok();
}
