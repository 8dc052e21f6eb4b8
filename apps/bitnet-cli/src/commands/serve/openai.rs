//! The OpenAI-compatible endpoints: `/v1/chat/completions`, `/v1/completions` (both streaming as server-sent
//! events or not), `/v1/models`, and llama-server's `/tokenize` and `/detokenize`.
//!
//! Request fields honoured: `model` (must name the served model when given), `prompt` / `messages`,
//! `max_tokens` (`max_completion_tokens`), `temperature`, `top_p`, `top_k`, `min_p`, `repetition_penalty`,
//! `stop` (a string or up to 4 strings), `seed`, `n` (1 only), `stream`, `stream_options.include_usage`.
//! Unknown fields are ignored; `logprobs` is refused (not implemented). Omitted sampling fields take the
//! `bitnet generate` defaults (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05); an omitted `max_tokens`
//! runs to the end of the slot's context.

use super::engine::{Job, ModelInfo, Work};
use super::error::ApiError;
use super::stop::{Piece, StopText};
use super::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bitnet_models::batch::{SequenceEvent, SequenceRequest};
use bitnet_models::chat::Message;
use bitnet_models::{FinishReason, SamplingConfig};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::TrySendError;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::UnboundedReceiver;

/// Most stop strings a request may give (OpenAI's limit).
const MAX_STOPS: usize = 4;

/// A string, or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// A completion prompt: text, a one-element list of text, or token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
}

/// Message content: text, or a list of parts of which the text parts are joined.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The fields chat and text completions share.
#[derive(Debug, Default, Deserialize)]
struct Common {
    model: Option<String>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i64>,
    min_p: Option<f32>,
    repetition_penalty: Option<f32>,
    stop: Option<OneOrMany>,
    seed: Option<u64>,
    n: Option<u64>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    logprobs: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ChatRequest {
    messages: Vec<ChatMessage>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Debug, Deserialize)]
pub(super) struct CompletionRequest {
    prompt: PromptInput,
    #[serde(flatten)]
    common: Common,
}

/// Which endpoint a generation answers (their response shapes differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

/// A checked generation request.
struct Generation {
    kind: Kind,
    request: SequenceRequest,
    stops: Vec<String>,
    stream: bool,
    include_usage: bool,
}

/// The body as JSON, with axum's rejections as OpenAI errors (413 over the size limit, 400 otherwise).
pub(super) fn body<T>(body: std::result::Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match body {
        Ok(Json(value)) => Ok(value),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the server's limit ({})", rejection.body_text()),
        )),
        Err(rejection) => Err(ApiError::bad_request(format!("invalid request body: {}", rejection.body_text()))),
    }
}

/// The loaded model, or 503 while it loads.
pub(super) fn model_info(state: &AppState) -> Result<Arc<ModelInfo>, ApiError> {
    state.shared.info.get().cloned().ok_or_else(|| ApiError::unavailable("the model is loading"))
}

/// The tokenizer, or 400 for a model without one.
fn tokenizer(info: &ModelInfo) -> Result<&bitnet_models::tokenizer::Tokenizer, ApiError> {
    info.tokenizer.as_ref().map_err(|why| ApiError::bad_request(format!("the model has no tokenizer: {why}")))
}

/// Checks the shared fields and builds the engine request for `prompt`.
fn generation(info: &ModelInfo, kind: Kind, prompt: Vec<u32>, common: Common) -> Result<Generation, ApiError> {
    if let Some(model) = &common.model {
        if model != &info.id {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("the model '{model}' does not exist; this server serves '{}'", info.id),
            ));
        }
    }
    if common.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n", "only n = 1 is supported"));
    }
    if common.logprobs.as_ref().is_some_and(|v| !matches!(v, Value::Null | Value::Bool(false))) {
        return Err(ApiError::invalid("logprobs", "logprobs are not supported by this server"));
    }
    if prompt.is_empty() {
        return Err(ApiError::invalid("prompt", "the prompt is empty"));
    }
    if prompt.len() >= info.context {
        return Err(ApiError::invalid(
            "prompt",
            format!(
                "the prompt has {} tokens, and the context is {} positions (it must leave room for one new token)",
                prompt.len(),
                info.context
            ),
        ));
    }
    if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= info.vocab) {
        return Err(ApiError::invalid("prompt", format!("token id {bad} is outside the vocabulary ({})", info.vocab)));
    }
    let room = info.context - prompt.len();
    let max_tokens = match common.max_completion_tokens.or(common.max_tokens) {
        Some(0) => return Err(ApiError::invalid("max_tokens", "max_tokens must be at least 1")),
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX).min(room),
        None => room,
    };
    let defaults = SamplingConfig { temperature: 0.8, top_k: 40, top_p: 0.95, min_p: 0.05, ..Default::default() };
    let top_k = match common.top_k {
        Some(k) if k < 0 => 0,
        Some(k) => usize::try_from(k).unwrap_or(usize::MAX),
        None => defaults.top_k,
    };
    let seed = common
        .seed
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0));
    let sampling = SamplingConfig {
        temperature: common.temperature.unwrap_or(defaults.temperature),
        top_k,
        top_p: common.top_p.unwrap_or(defaults.top_p),
        min_p: common.min_p.unwrap_or(defaults.min_p),
        repetition_penalty: common.repetition_penalty.unwrap_or(1.0),
        seed,
    };
    sampling.validate().map_err(|e| ApiError::bad_request(format!("invalid sampling settings: {e}")))?;
    let stops = common.stop.map(OneOrMany::into_vec).unwrap_or_default();
    if stops.len() > MAX_STOPS {
        return Err(ApiError::invalid("stop", format!("at most {MAX_STOPS} stop strings are allowed")));
    }
    Ok(Generation {
        kind,
        request: SequenceRequest { prompt, max_new_tokens: max_tokens, sampling, stop_tokens: info.stop_ids.clone() },
        stops,
        stream: common.stream,
        include_usage: common.stream_options.is_some_and(|o| o.include_usage),
    })
}

/// `POST /v1/chat/completions`.
pub(super) async fn chat_completions(
    State(state): State<AppState>,
    request: std::result::Result<Json<ChatRequest>, JsonRejection>,
) -> Response {
    state.shared.metrics.request();
    let result = async {
        let request = body(request)?;
        let info = model_info(&state)?;
        if request.messages.is_empty() {
            return Err(ApiError::invalid("messages", "messages is empty"));
        }
        let mut messages = Vec::with_capacity(request.messages.len());
        for m in request.messages {
            let content = match m.content {
                None => String::new(),
                Some(Content::Text(text)) => text,
                Some(Content::Parts(parts)) => {
                    if let Some(part) = parts.iter().find(|p| p.kind != "text") {
                        return Err(ApiError::invalid(
                            "messages",
                            format!("message parts of type '{}' are not supported (text only)", part.kind),
                        ));
                    }
                    parts.into_iter().filter_map(|p| p.text).collect::<Vec<_>>().join("")
                }
            };
            messages.push(Message::new(&m.role, &content));
        }
        let text = info.template.render(&messages).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let prompt = tokenizer(&info)?.encode(&text).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let generation = generation(&info, Kind::Chat, prompt, request.common)?;
        run(&state, info, generation).await
    }
    .await;
    respond(&state, result)
}

/// `POST /v1/completions`.
pub(super) async fn completions(
    State(state): State<AppState>,
    request: std::result::Result<Json<CompletionRequest>, JsonRejection>,
) -> Response {
    state.shared.metrics.request();
    let result = async {
        let request = body(request)?;
        let info = model_info(&state)?;
        let prompt = match request.prompt {
            PromptInput::Ids(ids) => ids,
            PromptInput::Text(text) => info.encode_prompt(&text).map_err(ApiError::bad_request)?,
            PromptInput::Texts(texts) => match texts.as_slice() {
                [text] => info.encode_prompt(text).map_err(ApiError::bad_request)?,
                _ => return Err(ApiError::invalid("prompt", "exactly one prompt per request is supported")),
            },
        };
        let generation = generation(&info, Kind::Text, prompt, request.common)?;
        run(&state, info, generation).await
    }
    .await;
    respond(&state, result)
}

/// The response, counting errors.
pub(super) fn respond(state: &AppState, result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|e| {
        state.shared.metrics.error();
        e.into_response()
    })
}

/// Queues a generation and answers it, streaming or whole.
async fn run(state: &AppState, info: Arc<ModelInfo>, g: Generation) -> Result<Response, ApiError> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let prompt_tokens = g.request.prompt.len();
    state.shared.metrics.enqueued();
    if let Err(e) = state.jobs.try_send(Work::Generate(Job { request: g.request, events: tx })) {
        state.shared.metrics.dequeued();
        return Err(match e {
            TrySendError::Full(_) => ApiError::unavailable("the server is busy: every slot and the queue are full"),
            TrySendError::Disconnected(_) => ApiError::unavailable("the server is shutting down"),
        });
    }
    let mut reply = Reply::new(info, g.kind, g.stops, prompt_tokens);
    if g.stream {
        return Ok(reply.stream(rx, g.include_usage));
    }
    let mut rx = rx;
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match reply.event(event) {
            Step::Text(piece) => text.push_str(&piece),
            Step::Done(piece) => {
                text.push_str(&piece);
                return Ok(Json(reply.whole(text)).into_response());
            }
        }
    }
    Err(ApiError::internal("the generation ended without finishing (the engine stopped)"))
}

/// What one engine event means for the client.
enum Step {
    /// More text.
    Text(String),
    /// The last text; the generation is over.
    Done(String),
}

/// One response being assembled: text with stop strings, counts, and the OpenAI envelope.
struct Reply {
    info: Arc<ModelInfo>,
    kind: Kind,
    text: StopText,
    id: String,
    created: u64,
    prompt_tokens: usize,
    completion_tokens: usize,
    finish: &'static str,
    /// Whether the client asked to stop the sequence (a stop string): the engine is told by dropping the channel.
    stopped: bool,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Reply {
    fn new(info: Arc<ModelInfo>, kind: Kind, stops: Vec<String>, prompt_tokens: usize) -> Self {
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let id = match kind {
            Kind::Chat => format!("chatcmpl-{n}"),
            Kind::Text => format!("cmpl-{n}"),
        };
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Self {
            info,
            kind,
            text: StopText::new(stops),
            id,
            created,
            prompt_tokens,
            completion_tokens: 0,
            finish: "length",
            stopped: false,
        }
    }

    fn event(&mut self, event: SequenceEvent) -> Step {
        match event {
            SequenceEvent::Token(token) => {
                self.completion_tokens += 1;
                let piece = match &self.info.tokenizer {
                    Ok(t) => self.text.push(t, token),
                    Err(_) => self.text.push_text(&format!("{token} ")),
                };
                match piece {
                    Piece::Text(text) => Step::Text(text),
                    Piece::Stopped(text) => {
                        self.finish = "stop";
                        self.stopped = true;
                        Step::Done(text)
                    }
                }
            }
            SequenceEvent::Finished(end) => {
                self.completion_tokens = end.completion_tokens;
                self.finish = match end.finish {
                    FinishReason::StopToken | FinishReason::Callback => "stop",
                    FinishReason::Length | FinishReason::ContextFull => "length",
                };
                Step::Done(self.text.finish())
            }
        }
    }

    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }

    /// The non-streaming response.
    fn whole(&self, text: String) -> Value {
        let choice = match self.kind {
            Kind::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": self.finish,
            }),
            Kind::Text => json!({"index": 0, "text": text, "logprobs": null, "finish_reason": self.finish}),
        };
        json!({
            "id": self.id,
            "object": if self.kind == Kind::Chat { "chat.completion" } else { "text_completion" },
            "created": self.created,
            "model": self.info.id,
            "choices": [choice],
            "usage": self.usage(),
        })
    }

    /// A streaming chunk with `text` (and `finish` when it is the last).
    fn chunk(&self, text: &str, finish: Option<&str>, first: bool) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let delta = match (first, finish) {
                    (true, _) => json!({"role": "assistant", "content": text}),
                    (false, Some(_)) if text.is_empty() => json!({}),
                    _ => json!({"content": text}),
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Kind::Text => json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish}),
        };
        json!({
            "id": self.id,
            "object": if self.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.info.id,
            "choices": [choice],
        })
    }

    /// The server-sent event stream: a chunk per piece of text, a last chunk with the finish reason, a usage
    /// chunk when asked, then `data: [DONE]`. Dropping the stream (the client went away) drops the receiver,
    /// which cancels the sequence.
    fn stream(self, rx: UnboundedReceiver<SequenceEvent>, include_usage: bool) -> Response {
        struct State {
            reply: Reply,
            rx: Option<UnboundedReceiver<SequenceEvent>>,
            first: bool,
            tail: Vec<Event>,
        }
        let state = State { reply: self, rx: Some(rx), first: true, tail: Vec::new() };
        let events = futures_util::stream::unfold(state, move |mut s| async move {
            loop {
                if !s.tail.is_empty() {
                    let event = s.tail.remove(0);
                    return Some((Ok::<_, std::convert::Infallible>(event), s));
                }
                let rx = s.rx.as_mut()?;
                let Some(event) = rx.recv().await else {
                    // The engine dropped the sequence without finishing it: end the stream.
                    s.rx = None;
                    s.tail.push(Event::default().data("[DONE]"));
                    continue;
                };
                let (text, done) = match s.reply.event(event) {
                    Step::Text(text) if text.is_empty() && !s.first => continue,
                    Step::Text(text) => (text, false),
                    Step::Done(text) => (text, true),
                };
                let first = std::mem::replace(&mut s.first, false);
                if !done {
                    let chunk = s.reply.chunk(&text, None, first);
                    return Some((Ok(Event::default().data(chunk.to_string())), s));
                }
                // The last chunk; the receiver is dropped, which also cancels a sequence stopped by a string.
                s.rx = None;
                let finish = s.reply.finish;
                if !text.is_empty() || first {
                    s.tail.push(Event::default().data(s.reply.chunk(&text, None, first).to_string()));
                }
                s.tail.push(Event::default().data(s.reply.chunk("", Some(finish), false).to_string()));
                if include_usage {
                    let mut usage = s.reply.chunk("", None, false);
                    usage["choices"] = json!([]);
                    usage["usage"] = s.reply.usage();
                    s.tail.push(Event::default().data(usage.to_string()));
                }
                s.tail.push(Event::default().data("[DONE]"));
            }
        });
        Sse::new(events).keep_alive(KeepAlive::default()).into_response()
    }
}

/// `GET /v1/models`.
pub(super) async fn models(State(state): State<AppState>) -> Response {
    let result = model_info(&state).map(|info| {
        Json(json!({
            "object": "list",
            "data": [{
                "id": info.id,
                "object": "model",
                "created": 0,
                "owned_by": "bitnet",
                "meta": {"context_length": info.context, "vocab_size": info.vocab},
            }],
        }))
        .into_response()
    });
    respond(&state, result)
}

#[derive(Debug, Deserialize)]
pub(super) struct TokenizeRequest {
    content: String,
    #[serde(default)]
    add_special: bool,
}

/// `POST /tokenize`: `{"content": text, "add_special": bool}` -> `{"tokens": [ids]}`.
pub(super) async fn tokenize(
    State(state): State<AppState>,
    request: std::result::Result<Json<TokenizeRequest>, JsonRejection>,
) -> Response {
    state.shared.metrics.request();
    let result = (|| {
        let request = body(request)?;
        let info = model_info(&state)?;
        let tokens = if request.add_special {
            info.encode_prompt(&request.content).map_err(ApiError::bad_request)?
        } else {
            tokenizer(&info)?.encode(&request.content).map_err(|e| ApiError::bad_request(e.to_string()))?
        };
        Ok(Json(json!({ "tokens": tokens })).into_response())
    })();
    respond(&state, result)
}

#[derive(Debug, Deserialize)]
pub(super) struct DetokenizeRequest {
    tokens: Vec<u32>,
}

/// `POST /detokenize`: `{"tokens": [ids]}` -> `{"content": text}` (special tokens kept).
pub(super) async fn detokenize(
    State(state): State<AppState>,
    request: std::result::Result<Json<DetokenizeRequest>, JsonRejection>,
) -> Response {
    state.shared.metrics.request();
    let result = (|| {
        let request = body(request)?;
        let info = model_info(&state)?;
        if let Some(&bad) = request.tokens.iter().find(|&&id| id as usize >= info.vocab) {
            return Err(ApiError::invalid(
                "tokens",
                format!("token id {bad} is outside the vocabulary ({})", info.vocab),
            ));
        }
        let content =
            tokenizer(&info)?.decode(&request.tokens, false).map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Json(json!({ "content": content })).into_response())
    })();
    respond(&state, result)
}
