//! `bitnet serve`: an OpenAI-compatible HTTP server (axum on tokio) in front of the continuous-batching engine.
//!
//! Threads: tokio runs the HTTP side; one engine thread owns the model and runs the batching loop
//! ([`engine`]); the CPU kernels run on the kernels' own pool. The listening socket is bound before the model
//! loads, so `GET /health` answers 503 while loading and 200 once ready. SIGINT/SIGTERM stop accepting
//! connections, let in-flight requests finish, and exit 0; a failed model load or engine step exits 1.

mod embeddings;
mod engine;
mod error;
mod metrics;
mod openai;
mod stop;

use super::{ModelArgs, UsageError};
use anyhow::{Context, Result};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use engine::{EngineSettings, Shared, Work};
use error::ApiError;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

/// Options of `bitnet serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on (0.0.0.0 to accept connections from other machines).
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    host: String,
    /// Port to listen on (0: any free port, printed on stderr).
    #[arg(long, default_value_t = 8080, value_name = "N")]
    port: u16,
    /// Sequences decoded together (continuous batching): each has its own KV slot of --context positions, and
    /// every decode step runs all of them through one batched forward pass.
    #[arg(long, default_value_t = 4, value_name = "N")]
    parallel: usize,
    /// Positions of each slot (prompt + completion); default: the model's max_position_embeddings, at most
    /// 4096. A slot's cache takes layers x kv_heads x head_dim x 8 bytes per position (2B-4T: 150 KiB),
    /// committed as it fills.
    #[arg(long, value_name = "N")]
    context: Option<usize>,
    /// Requests that may wait for a slot; more get 503 with Retry-After.
    #[arg(long, default_value_t = 64, value_name = "N")]
    queue: usize,
    /// Most prompt tokens one step processes, over all sequences (long prompts are read in chunks, so the
    /// sequences already decoding are not stalled by them).
    #[arg(long, default_value_t = 256, value_name = "N")]
    prefill_chunk: usize,
    /// Require `Authorization: Bearer KEY` on every endpoint except /health and /metrics.
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// The model id announced by /v1/models and accepted in requests (default: the model's directory or file
    /// name, "bitnet-default" for the embedded model).
    #[arg(long, value_name = "NAME")]
    model_id: Option<String>,
    /// Largest request body, in bytes (larger ones get 413).
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES")]
    max_body: usize,
}

/// Most slots `--parallel` may ask for.
const MAX_PARALLEL: usize = 1024;
/// Most queued requests `--queue` may ask for.
const MAX_QUEUE: usize = 1 << 16;

/// What every handler sees.
#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    jobs: SyncSender<Work>,
    api_key: Option<Arc<str>>,
}

/// Runs `bitnet serve`.
pub fn run(args: ServeArgs) -> Result<()> {
    if args.parallel == 0 || args.queue == 0 || args.prefill_chunk == 0 {
        return Err(UsageError("--parallel, --queue and --prefill-chunk must be at least 1".into()).into());
    }
    // The slots' caches and the queue are allocated up front: refuse sizes no machine holds.
    if args.parallel > MAX_PARALLEL || args.queue > MAX_QUEUE {
        return Err(UsageError(format!("--parallel is at most {MAX_PARALLEL} and --queue at most {MAX_QUEUE}")).into());
    }
    if args.context == Some(0) {
        return Err(UsageError("--context must be at least 1".into()).into());
    }
    args.model.device.device.check_built()?;
    let checkpoint = args.model.open()?;
    let id = args.model_id.clone().unwrap_or_else(|| match &args.model.model {
        None => "bitnet-default".into(),
        Some(path) => path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into()),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind((args.host.as_str(), args.port)))
        .map_err(|e| UsageError(format!("cannot listen on {}:{}: {e}", args.host, args.port)))?;
    let address = listener.local_addr().context("reading the listening address")?;

    let shared = Arc::new(Shared {
        info: Default::default(),
        metrics: Default::default(),
        stopping: Default::default(),
        engine_ended: Default::default(),
    });
    let (jobs, queue) = std::sync::mpsc::sync_channel(args.queue);
    let settings = EngineSettings {
        model: args.model.clone(),
        checkpoint,
        id,
        slots: args.parallel,
        context: args.context,
        prefill_chunk: args.prefill_chunk,
    };
    let device = args.model.device.device;
    let engine_shared = shared.clone();
    let engine = std::thread::Builder::new()
        .name("bitnet-engine".into())
        .spawn(move || engine::run(device, settings, engine_shared, queue))
        .context("starting the engine thread")?;

    let state = AppState { shared: shared.clone(), jobs, api_key: args.api_key.map(Arc::from) };
    let api = Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/models", get(openai::models))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/tokenize", post(openai::tokenize))
        .route("/detokenize", post(openai::detokenize))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), authorize));
    let app = Router::new()
        .merge(api)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(args.max_body))
        .with_state(state);
    crate::output::note(&format!("listening on http://{address} (loading the model)"));
    let served = runtime.block_on(async {
        let stop_shared = shared.clone();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = shutdown_signal() => crate::output::note("stopping: finishing in-flight requests"),
                    _ = stop_shared.engine_ended.notified() => {}
                }
                stop_shared.stopping.store(true, Ordering::Relaxed);
            })
            .await
    });
    shared.stopping.store(true, Ordering::Relaxed);
    // The runtime's tasks are done; the engine ends once it holds nothing.
    drop(runtime);
    let engine_result = engine.join().map_err(|_| anyhow::anyhow!("the engine thread panicked"))?;
    served.context("serving HTTP")?;
    engine_result
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}

/// Refuses requests without the API key (when one is set), comparing in constant time.
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let same = given.len() == key.len() && given.bytes().zip(key.bytes()).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0;
        if !same {
            state.shared.metrics.error();
            let message = if given.is_empty() { "missing API key" } else { "invalid API key" };
            return ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
        }
    }
    next.run(request).await
}

/// `GET /health`: 200 `{"status": "ok"}` when the model is loaded, 503 `{"status": "loading"}` before.
async fn health(State(state): State<AppState>) -> Response {
    match state.shared.info.get() {
        Some(_) => Json(serde_json::json!({"status": "ok"})).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"status": "loading"}))).into_response(),
    }
}

/// `GET /metrics`: Prometheus text.
async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.shared.metrics.render()).into_response()
}

/// Any other path: 404 as an OpenAI error.
async fn not_found(request: Request) -> Response {
    ApiError::new(StatusCode::NOT_FOUND, format!("no endpoint {} {}", request.method(), request.uri().path()))
        .into_response()
}
