//! Models from the Hugging Face hub: a small client of the hub's HTTP API that fills the standard hub cache.
//!
//! Environment, as the Python `huggingface_hub`: `HF_HOME` (cache under `$HF_HOME/hub`, default
//! `~/.cache/huggingface`), `HF_HUB_CACHE` (the cache folder itself), `HF_ENDPOINT` (hub URL, e.g. a mirror),
//! `HF_TOKEN` (or `$HF_HOME/token`: access token for gated or private repos), `HF_HUB_OFFLINE=1` (the cache
//! only), `HF_HUB_DOWNLOAD_TIMEOUT` (seconds to connect and between bytes, default 30).
//!
//! A repo is fetched as the files a BitNet model needs: `config.json`, the safetensors weights (single file or
//! shards + index), `tokenizer.json`, `tokenizer_config.json` and `generation_config.json` when present; a repo
//! that holds only GGUF files yields its first `.gguf`.
//!
//! Cache layout (the one `huggingface_hub` and `hf-hub` share): `models--{owner}--{name}/refs/{revision}`
//! holds the commit, `blobs/{etag}` the bytes, `snapshots/{commit}/{file}` links to the blob.
//!
//! Everything the server says is treated as hostile before it touches the filesystem (our own client because
//! `hf-hub` 0.4/0.5 build cache paths from response headers unchecked, panic on a redirect without `Location`
//! and have no timeouts): commits must be 40 or 64 hex digits, ETags letters and digits, file names plain
//! names in the repo's root, revisions relative names without `.` or `..` parts; every final path is checked
//! to lie in the repo's cache folder; a body must have exactly its advertised size; downloads land in a
//! temporary file renamed into place.

use crate::error::{ModelError, Result};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Most bytes of an API (JSON) answer.
const MAX_API_BYTES: u64 = 16 << 20;
/// Most redirects followed for one file.
const MAX_REDIRECTS: usize = 5;

/// Whether `spec` looks like a hub id (`owner/name`) rather than a local path.
pub fn is_hub_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty() && !p.starts_with('.') && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

fn offline() -> bool {
    matches!(std::env::var("HF_HUB_OFFLINE").as_deref(), Ok("1") | Ok("true") | Ok("TRUE") | Ok("yes"))
}

fn hub_error(repo: &str, e: impl std::fmt::Display) -> ModelError {
    ModelError::Request(format!("hub model '{repo}': {e}"))
}

/// The files of a repo listing that a BitNet model needs (plain names in the repo's root only).
fn wanted(files: &[String]) -> Vec<String> {
    let files: Vec<&String> = files.iter().filter(|f| is_plain_name(f)).collect();
    let safetensors: Vec<String> =
        files.iter().filter(|f| f.ends_with(".safetensors")).map(|f| f.to_string()).collect();
    let meta = [
        "config.json",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ];
    let mut out: Vec<String> = meta.iter().filter(|m| files.iter().any(|f| f == *m)).map(|m| m.to_string()).collect();
    if safetensors.is_empty() {
        out.extend(files.iter().find(|f| f.ends_with(".gguf")).map(|f| f.to_string()));
    } else {
        out.extend(safetensors);
    }
    out
}

/// A file name that is one plain path component: no separators, not `.`/`..`, printable, not too long.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.chars().any(|c| c.is_control())
}

/// A git commit id as the hub gives it: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
fn is_commit(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A revision (branch, tag, `refs/pr/N` or commit): relative, made of plain parts.
fn check_revision(revision: &str) -> std::result::Result<(), String> {
    let ok = !revision.is_empty()
        && revision.len() <= 255
        && revision.split('/').all(|p| is_plain_name(p) && p.chars().all(|c| c.is_ascii_graphic()));
    if ok {
        Ok(())
    } else {
        Err(format!("'{revision}' is not a valid revision"))
    }
}

/// The cache folder: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    hf_home().join("hub")
}

fn hf_home() -> PathBuf {
    match std::env::var_os("HF_HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home),
        None => {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
            home.join(".cache").join("huggingface")
        }
    }
}

/// The cache of one repo.
struct RepoCache {
    folder: PathBuf,
}

impl RepoCache {
    fn new(repo: &str) -> Self {
        Self { folder: cache_root().join(format!("models--{}", repo.replace('/', "--"))) }
    }

    /// `folder/parts...`, checked to lie inside the folder (every part was validated; this is the last guard).
    fn path(&self, parts: &[&str]) -> std::result::Result<PathBuf, String> {
        let mut path = self.folder.clone();
        for part in parts {
            for c in Path::new(part).components() {
                match c {
                    Component::Normal(p) => path.push(p),
                    _ => return Err(format!("refusing the cache path part '{part}'")),
                }
            }
        }
        if !path.starts_with(&self.folder) {
            return Err(format!("refusing a cache path outside {}", self.folder.display()));
        }
        Ok(path)
    }

    /// The commit a revision points to, from the cache.
    fn commit(&self, revision: &str) -> Option<String> {
        if is_commit(revision) {
            return Some(revision.to_string());
        }
        let path = self.path(&["refs", revision]).ok()?;
        let text = std::fs::read_to_string(path).ok()?;
        let commit = text.trim();
        is_commit(commit).then(|| commit.to_string())
    }

    /// The model in a cached snapshot: its directory if it has `config.json`, else its first `.gguf` file.
    fn model(&self, commit: &str) -> Option<PathBuf> {
        let snapshot = self.path(&["snapshots", commit]).ok()?;
        if snapshot.join("config.json").is_file() {
            return Some(snapshot);
        }
        let mut ggufs: Vec<PathBuf> = std::fs::read_dir(&snapshot)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "gguf") && p.is_file())
            .collect();
        ggufs.sort();
        ggufs.into_iter().next()
    }
}

/// The access token: `HF_TOKEN`, else the `token` file of `HF_HOME`.
fn token() -> Option<String> {
    let token = std::env::var("HF_TOKEN").ok().or_else(|| std::fs::read_to_string(hf_home().join("token")).ok())?;
    let token = token.trim().to_string();
    (!token.is_empty() && token.chars().all(|c| c.is_ascii_graphic())).then_some(token)
}

fn timeout() -> Duration {
    let secs = std::env::var("HF_HUB_DOWNLOAD_TIMEOUT").ok().and_then(|s| s.trim().parse::<f64>().ok());
    Duration::from_secs_f64(secs.filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0).unwrap_or(30.0))
}

/// Downloads (or finds in the cache) the model `repo` at `revision` and returns its local path: the snapshot
/// directory, or the `.gguf` file of a GGUF-only repo.
pub fn fetch(repo: &str, revision: &str) -> Result<PathBuf> {
    if !is_hub_id(repo) {
        return Err(ModelError::Request(format!("'{repo}' is not a hub model id (owner/name)")));
    }
    check_revision(revision).map_err(|e| hub_error(repo, e))?;
    let cache = RepoCache::new(repo);
    if offline() {
        return cache
            .commit(revision)
            .and_then(|commit| cache.model(&commit))
            .ok_or_else(|| hub_error(repo, "not in the local cache, and HF_HUB_OFFLINE=1 forbids downloading it"));
    }
    Client::new(repo).fetch(&cache, revision)
}

/// One repo's downloads.
struct Client<'a> {
    repo: &'a str,
    endpoint: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl<'a> Client<'a> {
    fn new(repo: &'a str) -> Self {
        let endpoint = std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty());
        let endpoint = endpoint.unwrap_or_else(|| "https://huggingface.co".into()).trim_end_matches('/').to_string();
        let t = timeout();
        let agent = ureq::AgentBuilder::new().timeout_connect(t).timeout_read(t).redirects(0).build();
        Self { repo, endpoint, agent, token: token() }
    }

    fn error(&self, e: impl std::fmt::Display) -> ModelError {
        hub_error(self.repo, e)
    }

    /// A GET of `url`, with the token when the URL is on the endpoint's host; HTTP errors name the status.
    fn get(&self, url: &str) -> Result<ureq::Response> {
        let mut request = self.agent.get(url);
        if let Some(token) = &self.token {
            if same_origin(url, &self.endpoint) {
                request = request.set("Authorization", &format!("Bearer {token}"));
            }
        }
        match request.call() {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(code, r)) => {
                let mut body = String::new();
                let _ = r.into_reader().take(300).read_to_string(&mut body);
                Err(self.error(format!("{url}: HTTP {code}: {}", body.trim())))
            }
            Err(e) => Err(self.error(format!("{url}: {e}"))),
        }
    }

    fn fetch(&self, cache: &RepoCache, revision: &str) -> Result<PathBuf> {
        let url = format!("{}/api/models/{}/revision/{}", self.endpoint, self.repo, revision);
        let mut text = String::new();
        self.get(&url)?
            .into_reader()
            .take(MAX_API_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| self.error(format!("{url}: {e}")))?;
        let info: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| self.error(format!("{url}: invalid answer: {e}")))?;
        let commit = info["sha"].as_str().filter(|c| is_commit(c)).ok_or_else(|| {
            self.error(format!("{url}: the answer has no valid commit id (40 or 64 hex digits) in 'sha'"))
        })?;
        let files: Vec<String> = info["siblings"]
            .as_array()
            .map(|s| s.iter().filter_map(|f| f["rfilename"].as_str().map(String::from)).collect())
            .unwrap_or_default();
        let wanted = wanted(&files);
        if !wanted.iter().any(|f| f == "config.json" || f.ends_with(".gguf")) {
            return Err(self.error("the repo has neither config.json nor a .gguf file"));
        }
        for file in &wanted {
            self.download(cache, revision, commit, file)?;
        }
        let refs = cache.path(&["refs", revision]).map_err(|e| self.error(e))?;
        write_atomically(&refs, commit.as_bytes()).map_err(|e| self.error(format!("{}: {e}", refs.display())))?;
        cache.model(commit).ok_or_else(|| self.error("the downloaded snapshot holds no model"))
    }

    /// Fetches one file into the cache (blob + snapshot link), unless its blob is already there.
    fn download(&self, cache: &RepoCache, revision: &str, commit: &str, file: &str) -> Result<()> {
        let mut url = format!("{}/{}/resolve/{}/{}", self.endpoint, self.repo, revision, file);
        // The hub answers with the file's ETag and commit, then (for large files) redirects to a CDN: the
        // identity comes from the first answer, the bytes from the last.
        let mut etag = None;
        let mut size = None;
        let mut response = None;
        for _ in 0..=MAX_REDIRECTS {
            let r = self.get(&url)?;
            if etag.is_none() {
                etag = r.header("X-Linked-Etag").or_else(|| r.header("ETag")).map(String::from);
                size = r.header("X-Linked-Size").and_then(|s| s.trim().parse::<u64>().ok());
                if let Some(served) = r.header("X-Repo-Commit") {
                    if served.trim() != commit {
                        return Err(self.error(format!("{file}: served from commit '{served}', not {commit}")));
                    }
                }
            }
            if (300..400).contains(&r.status()) {
                let location = r.header("Location").ok_or_else(|| {
                    self.error(format!("{file}: a redirect (HTTP {}) without a Location", r.status()))
                })?;
                url = resolve_location(&url, location).map_err(|e| self.error(format!("{file}: {e}")))?;
                continue;
            }
            response = Some(r);
            break;
        }
        let response = response.ok_or_else(|| self.error(format!("{file}: more than {MAX_REDIRECTS} redirects")))?;
        let etag = etag.ok_or_else(|| self.error(format!("{file}: the answer has no ETag")))?;
        let etag = clean_etag(&etag).ok_or_else(|| self.error(format!("{file}: invalid ETag '{etag}'")))?;
        let length = response.header("Content-Length").and_then(|s| s.trim().parse::<u64>().ok());
        let size = match (size, length) {
            (Some(a), Some(b)) if a != b => {
                return Err(self.error(format!("{file}: the hub says {a} bytes, the download {b}")));
            }
            (a, b) => a.or(b),
        };
        let blob = cache.path(&["blobs", &etag]).map_err(|e| self.error(e))?;
        let link = cache.path(&["snapshots", commit, file]).map_err(|e| self.error(e))?;
        let cached = std::fs::metadata(&blob).ok().filter(|m| m.is_file()).map(|m| m.len());
        if cached.is_none() || size.is_some_and(|s| cached != Some(s)) {
            self.save(response, &blob, size, file)?;
        }
        link_blob(&blob, &link).map_err(|e| self.error(format!("{}: {e}", link.display())))
    }

    /// Streams a body into `blob` through a temporary file, checking its size.
    fn save(&self, response: ureq::Response, blob: &Path, size: Option<u64>, file: &str) -> Result<()> {
        let dir = blob.parent().expect("a blob lies in blobs/");
        std::fs::create_dir_all(dir).map_err(|e| self.error(format!("{}: {e}", dir.display())))?;
        let tmp = blob.with_extension(format!("incomplete-{}", std::process::id()));
        let result = (|| -> std::result::Result<(), String> {
            let mut out = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
            let mut reader = response.into_reader().take(size.map_or(u64::MAX, |s| s.saturating_add(1)));
            let mut progress = Progress::new(file, size);
            let mut buffer = vec![0u8; 1 << 20];
            let mut written = 0u64;
            loop {
                let n = reader.read(&mut buffer).map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                out.write_all(&buffer[..n]).map_err(|e| e.to_string())?;
                written += n as u64;
                progress.update(written);
            }
            progress.finish();
            if let Some(size) = size.filter(|&s| s != written) {
                return Err(format!("the body has {written} bytes, the server announced {size}"));
            }
            out.sync_all().map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, blob).map_err(|e| e.to_string())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.error(format!("{file}: {e}")));
        }
        Ok(())
    }
}

/// An ETag as a blob name: quotes and a weak `W/` prefix removed, then letters and digits only.
fn clean_etag(etag: &str) -> Option<String> {
    let etag = etag.trim();
    let etag = etag.strip_prefix("W/").unwrap_or(etag).trim_matches('"');
    let ok = !etag.is_empty() && etag.len() <= 128 && etag.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then(|| etag.to_string())
}

/// Whether `url` is on the same scheme and host as `endpoint` (the token is not sent elsewhere).
fn same_origin(url: &str, endpoint: &str) -> bool {
    let origin = |u: &str| -> Option<String> {
        let (scheme, rest) = u.split_once("://")?;
        Some(format!("{scheme}://{}", rest.split('/').next()?))
    };
    origin(url).is_some_and(|o| Some(o) == origin(endpoint))
}

/// The absolute URL of a `Location` header relative to `url`.
fn resolve_location(url: &str, location: &str) -> std::result::Result<String, String> {
    let location = location.trim();
    if location.starts_with("http://") || location.starts_with("https://") {
        return Ok(location.to_string());
    }
    if let Some(path) = location.strip_prefix('/') {
        let (scheme, rest) = url.split_once("://").ok_or("invalid URL")?;
        let host = rest.split('/').next().ok_or("invalid URL")?;
        return Ok(format!("{scheme}://{host}/{path}"));
    }
    Err(format!("unsupported redirect Location '{location}'"))
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Points `link` (in a snapshot) at `blob`: a relative symlink where the OS has them, else a copy.
fn link_blob(blob: &Path, link: &Path) -> std::io::Result<()> {
    let dir = link.parent().expect("a snapshot file lies in its snapshot");
    std::fs::create_dir_all(dir)?;
    let _ = std::fs::remove_file(link);
    #[cfg(unix)]
    {
        // snapshots/{commit}/{file} -> ../../blobs/{etag}
        let target = Path::new("../../blobs").join(blob.file_name().expect("a blob has a name"));
        std::os::unix::fs::symlink(target, link)
    }
    #[cfg(not(unix))]
    {
        std::fs::copy(blob, link).map(|_| ())
    }
}

/// Download progress on stderr when it is a terminal.
struct Progress<'a> {
    file: &'a str,
    size: Option<u64>,
    shown: bool,
    last: std::time::Instant,
}

impl<'a> Progress<'a> {
    fn new(file: &'a str, size: Option<u64>) -> Self {
        use std::io::IsTerminal;
        Self { file, size, shown: std::io::stderr().is_terminal(), last: std::time::Instant::now() }
    }

    fn update(&mut self, bytes: u64) {
        if !self.shown || self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = std::time::Instant::now();
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let line = match self.size {
            Some(s) if s > 0 => {
                format!("{:.1}/{:.1} MiB ({:.0}%)", mib(bytes), mib(s), 100.0 * bytes as f64 / s as f64)
            }
            _ => format!("{:.1} MiB", mib(bytes)),
        };
        eprint!("\rdownloading {}: {line}   ", self.file);
    }

    fn finish(&self) {
        if self.shown {
            eprintln!("\rdownloading {}: done{}", self.file, " ".repeat(30));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_paths() {
        assert!(is_hub_id("microsoft/bitnet-b1.58-2B-4T"));
        assert!(!is_hub_id("./model"));
        assert!(!is_hub_id("/abs/path"));
        assert!(!is_hub_id("a/b/c"));
        assert!(!is_hub_id("../x"));
    }

    #[test]
    fn picks_the_model_files() {
        let files: Vec<String> = ["README.md", "config.json", "model.safetensors", "tokenizer.json", ".gitattributes"]
            .map(String::from)
            .to_vec();
        assert_eq!(wanted(&files), vec!["config.json", "tokenizer.json", "model.safetensors"]);
        let gguf: Vec<String> = ["README.md", "ggml-model-i2_s.gguf"].map(String::from).to_vec();
        assert_eq!(wanted(&gguf), vec!["ggml-model-i2_s.gguf"]);
        let hostile: Vec<String> = ["config.json", "../../evil.safetensors", "sub/x.safetensors", "..", "a\\b.gguf"]
            .map(String::from)
            .to_vec();
        assert_eq!(wanted(&hostile), vec!["config.json"]);
    }

    #[test]
    fn server_values_are_validated() {
        assert_eq!(clean_etag("\"abc123\"").as_deref(), Some("abc123"));
        assert_eq!(clean_etag("W/\"abc\"").as_deref(), Some("abc"));
        for bad in ["\"../../../../x/blob\"", "", "\"\"", "a/b", "a.b", "x\u{0}"] {
            assert!(clean_etag(bad).is_none(), "{bad:?}");
        }
        assert!(is_commit("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit("../../0123456789abcdef0123456789abcdef0123"));
        assert!(!is_commit("0123456789ABCDEF0123456789ABCDEF01234567"));
        for ok in ["main", "refs/pr/1", "v1.0", "0123456789abcdef0123456789abcdef01234567"] {
            assert!(check_revision(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "a/../b", "/abs", "a//b", "a/.", "a b", "a\\b"] {
            assert!(check_revision(bad).is_err(), "{bad:?}");
        }
        assert!(same_origin("https://huggingface.co/x/y", "https://huggingface.co"));
        assert!(!same_origin("https://cdn.example/x", "https://huggingface.co"));
        assert_eq!(resolve_location("http://h:1/a/b", "/c/d").unwrap(), "http://h:1/c/d");
        assert!(resolve_location("http://h/a", "ftp://x").is_err());
    }
}
