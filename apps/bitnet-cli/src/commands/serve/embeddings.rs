//! `POST /v1/embeddings` (OpenAI's embeddings API): `input` is a string, a list of strings, a list of token
//! ids, or a list of such lists; `encoding_format` is `float` (default) or `base64` (the little-endian f32
//! bytes); `model` must name the served model when given; `dimensions` is refused unless it equals the model's
//! width. Each input is embedded as `bitnet embed` does (pooled, L2-normalized final hidden state).

use super::engine::{EmbedJob, Work};
use super::error::ApiError;
use super::openai::{body, model_info, respond};
use super::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::mpsc::TrySendError;

/// Most inputs one request may carry (OpenAI's limit).
const MAX_INPUTS: usize = 2048;

/// The `input` field's shapes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
    IdLists(Vec<Vec<u32>>),
}

#[derive(Debug, Deserialize)]
pub(super) struct EmbeddingRequest {
    input: EmbeddingInput,
    model: Option<String>,
    encoding_format: Option<String>,
    dimensions: Option<u64>,
}

/// `POST /v1/embeddings`.
pub(super) async fn embeddings(
    State(state): State<AppState>,
    request: std::result::Result<Json<EmbeddingRequest>, JsonRejection>,
) -> Response {
    state.shared.metrics.request();
    let result = answer(&state, request).await;
    respond(&state, result)
}

async fn answer(
    state: &AppState,
    request: std::result::Result<Json<EmbeddingRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = body(request)?;
    let info = model_info(state)?;
    if let Some(model) = request.model.as_deref().filter(|m| *m != info.id) {
        return Err(ApiError::invalid("model", format!("this server serves '{}', not '{model}'", info.id)));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid("encoding_format", format!("'{other}': expected float or base64")))
        }
    };
    let inputs = match request.input {
        EmbeddingInput::Text(text) => vec![info.encode_prompt(&text).map_err(ApiError::bad_request)?],
        EmbeddingInput::Texts(texts) => {
            check_count(texts.len())?;
            texts.iter().map(|t| info.encode_prompt(t).map_err(ApiError::bad_request)).collect::<Result<_, _>>()?
        }
        EmbeddingInput::Ids(ids) => vec![ids],
        EmbeddingInput::IdLists(lists) => {
            check_count(lists.len())?;
            lists
        }
    };
    for ids in &inputs {
        if ids.is_empty() || ids.len() > info.context {
            return Err(ApiError::invalid(
                "input",
                format!("an input of {} tokens: each needs 1 to {} tokens", ids.len(), info.context),
            ));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= info.vocab) {
            return Err(ApiError::invalid(
                "input",
                format!("token id {bad} is outside the vocabulary ({})", info.vocab),
            ));
        }
    }
    let tokens: usize = inputs.iter().map(Vec::len).sum();
    let (reply, answer) = tokio::sync::oneshot::channel();
    state.shared.metrics.enqueued();
    if let Err(e) = state.jobs.try_send(Work::Embed(EmbedJob { inputs, reply })) {
        state.shared.metrics.dequeued();
        return Err(match e {
            TrySendError::Full(_) => ApiError::unavailable("the server is busy: the queue is full"),
            TrySendError::Disconnected(_) => ApiError::unavailable("the server is shutting down"),
        });
    }
    let embeddings = answer
        .await
        .map_err(|_| ApiError::internal("the engine stopped before answering"))?
        .map_err(ApiError::bad_request)?;
    if let Some(d) = request.dimensions {
        let width = embeddings.first().map_or(0, Vec::len);
        if d as usize != width {
            return Err(ApiError::invalid("dimensions", format!("this model's embeddings have {width} dimensions")));
        }
    }
    let data: Vec<Value> = embeddings
        .iter()
        .enumerate()
        .map(|(index, e)| {
            let embedding = if base64 { Value::String(base64_f32(e)) } else { json!(e) };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": info.id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response())
}

fn check_count(n: usize) -> Result<(), ApiError> {
    if n == 0 || n > MAX_INPUTS {
        return Err(ApiError::invalid("input", format!("{n} inputs: a request carries 1 to {MAX_INPUTS}")));
    }
    Ok(())
}

/// Standard base64 (with padding) of the little-endian bytes of `values`.
fn base64_f32(values: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n =
            (chunk[0] as u32) << 16 | (*chunk.get(1).unwrap_or(&0) as u32) << 8 | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64_f32;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        // 1.0f32 = 00 00 80 3f; [1.0, 2.0] = 00 00 80 3f 00 00 00 40.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 2.0]), "AACAPwAAAEA=");
        assert_eq!(base64_f32(&[]), "");
    }
}
