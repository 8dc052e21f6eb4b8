//! Models from the Hugging Face hub, through the `hf-hub` crate and its cache.
//!
//! Environment, as the Python `huggingface_hub`: `HF_HOME` (cache location), `HF_ENDPOINT` (hub URL),
//! `HF_TOKEN` (access token for gated or private repos), `HF_HUB_OFFLINE=1` (use the cache only, never the
//! network). Downloads show a progress bar on stderr.
//!
//! A repo is fetched as the files a BitNet model needs: `config.json`, the safetensors weights (single file or
//! shards + index), `tokenizer.json`, `tokenizer_config.json` and `generation_config.json` when present; a repo
//! that holds only GGUF files yields its first `.gguf`.

use crate::error::{ModelError, Result};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};
use std::path::{Path, PathBuf};

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

/// The files of a repo listing that a BitNet model needs.
fn wanted(files: &[String]) -> Vec<String> {
    let safetensors: Vec<String> = files.iter().filter(|f| f.ends_with(".safetensors")).cloned().collect();
    let meta = [
        "config.json",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ];
    let mut out: Vec<String> = meta.iter().filter(|m| files.iter().any(|f| f == *m)).map(|m| m.to_string()).collect();
    if safetensors.is_empty() {
        out.extend(files.iter().find(|f| f.ends_with(".gguf")).cloned());
    } else {
        out.extend(safetensors);
    }
    out
}

/// The `.gguf` file of a GGUF-only repo in the cache (the first by name in the snapshot the revision's ref
/// points to), as `fetch` left it.
fn cached_gguf(cache: &Cache, repo: &Repo) -> Option<std::path::PathBuf> {
    let folder = cache.path().join(repo.folder_name());
    let commit = std::fs::read_to_string(folder.join("refs").join(repo.revision())).ok()?;
    let snapshot = folder.join("snapshots").join(commit.trim());
    let mut ggufs: Vec<_> = std::fs::read_dir(&snapshot)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf") && p.exists())
        .collect();
    ggufs.sort();
    ggufs.into_iter().next()
}

/// Downloads (or finds in the cache) the model `repo` at `revision` and returns its local path: the snapshot
/// directory, or the `.gguf` file of a GGUF-only repo.
pub fn fetch(repo: &str, revision: &str) -> Result<PathBuf> {
    if !is_hub_id(repo) {
        return Err(ModelError::Request(format!("'{repo}' is not a hub model id (owner/name)")));
    }
    let hub_repo = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
    if offline() {
        let cache = Cache::from_env();
        if let Some(config) = cache.repo(hub_repo.clone()).get("config.json") {
            return Ok(config.parent().map(Path::to_path_buf).unwrap_or_default());
        }
        if let Some(gguf) = cached_gguf(&cache, &hub_repo) {
            return Ok(gguf);
        }
        return Err(hub_error(repo, "not in the local cache, and HF_HUB_OFFLINE=1 forbids downloading it"));
    }
    let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
    let mut builder = ApiBuilder::from_env().with_progress(true);
    if token.is_some() {
        builder = builder.with_token(token);
    }
    let api = builder.build().map_err(|e| hub_error(repo, e))?;
    let api_repo = api.repo(hub_repo);
    let info = api_repo.info().map_err(|e| hub_error(repo, e))?;
    let files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let wanted = wanted(&files);
    if !wanted.iter().any(|f| f == "config.json" || f.ends_with(".gguf")) {
        return Err(hub_error(repo, "the repo has neither config.json nor a .gguf file"));
    }
    let mut first = None;
    for file in &wanted {
        let path = api_repo.get(file).map_err(|e| hub_error(repo, format!("{file}: {e}")))?;
        first.get_or_insert(path);
    }
    let first = first.unwrap_or_default();
    Ok(if first.extension().is_some_and(|e| e == "gguf") {
        first
    } else {
        first.parent().map(Path::to_path_buf).unwrap_or_default()
    })
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
    }
}
