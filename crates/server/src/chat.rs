//! `POST /v1/chat/completions`: parse, plan, generate, answer as JSON or as SSE.

use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderValue;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use smallfirst_engine::{Event, Generation};
use smallfirst_protocol::{
    ChatCompletion, ChatCompletionChunk, ChatRequest, Choice, ChunkChoice, Delta, Logprobs,
    ResponseMessage, Role, Usage,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::convert::{self, Plan};
use crate::{ApiError, AppState};

/// SSE events buffered toward a slow client.
const SSE_BUFFER: usize = 32;

pub(crate) async fn completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body =
        body.map_err(|e| ApiError::TooLarge(format!("could not read the request body: {e}")))?;
    let req = parse(&body)?;
    if !state.answers_to(&req.model) {
        return Err(ApiError::ModelNotFound(req.model));
    }
    let engine = &state.inner.engine;
    let plan = convert::plan(&req, engine.info().n_vocab)?;
    let prompt = engine.render(&plan.messages)?;
    let Plan {
        params,
        stream,
        include_usage,
        logprobs,
        ..
    } = plan;
    let generation = engine.generate(prompt, params).await?;
    let meta = Meta::new(state.inner.model_id.clone());
    let mut response = if stream {
        sse(generation, meta, include_usage, logprobs).into_response()
    } else {
        Json(collect(generation, meta, logprobs).await?).into_response()
    };
    response
        .headers_mut()
        .insert("x-smallfirst-tier", HeaderValue::from_static("local"));
    Ok(response)
}

/// Parses the body, naming the offending field path on failure.
fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: Result<ChatRequest, _> = serde_path_to_error::deserialize(&mut de);
    match parsed {
        Ok(req) => Ok(req),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(ApiError::InvalidJson(format!(
                    "the request body is not valid JSON: {inner}"
                )));
            }
            let param = (path != ".").then_some(path);
            Err(ApiError::InvalidRequest {
                message: match &param {
                    Some(p) => format!("invalid request at `{p}`: {inner}"),
                    None => format!("invalid request: {inner}"),
                },
                param,
                code: None,
            })
        }
    }
}

/// Identity shared by every object of one response.
struct Meta {
    id: String,
    created: u64,
    model: String,
}

impl Meta {
    fn new(model: String) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // RandomState keys come from the OS once per thread: hashing a counter with two of them
        // gives ids that are unique and not predictable from outside.
        let a = RandomState::new().hash_one(n);
        let b = RandomState::new().hash_one(n);
        Meta {
            id: format!("chatcmpl-{a:016x}{b:016x}"),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model,
        }
    }

    fn chunk(
        &self,
        choices: Vec<ChunkChoice>,
        usage: Option<Option<Usage>>,
    ) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: Some(fingerprint()),
            choices,
            usage,
        }
    }
}

fn fingerprint() -> String {
    concat!("fp_smallfirst_", env!("CARGO_PKG_VERSION")).to_string()
}

async fn collect(
    mut generation: Generation,
    meta: Meta,
    want_logprobs: bool,
) -> Result<ChatCompletion, ApiError> {
    let mut text = String::new();
    let mut entries = Vec::new();
    let done = loop {
        match generation.events.recv().await {
            Some(Event::Delta(d)) => {
                text.push_str(&d.text);
                entries.extend(d.logprobs);
            }
            Some(Event::Done(done)) => break done,
            Some(Event::Failed(reason)) => return Err(ApiError::Internal(reason)),
            None => {
                return Err(ApiError::Internal(
                    "the engine stopped mid-generation".into(),
                ));
            }
        }
    };
    Ok(ChatCompletion {
        id: meta.id,
        object: "chat.completion".into(),
        created: meta.created,
        model: meta.model,
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: Role::Assistant,
                content: Some(text),
                refusal: None,
            },
            logprobs: want_logprobs.then(|| Logprobs {
                content: convert::token_logprobs(entries),
                refusal: None,
            }),
            finish_reason: convert::finish_reason(done.finish),
        }],
        usage: Usage::new(done.prompt_tokens, done.completion_tokens),
        system_fingerprint: Some(fingerprint()),
    })
}

/// Streams the generation as OpenAI does: a role delta first, content deltas, a final delta
/// with `finish_reason`, a usage chunk when asked, then `[DONE]`. A task forwards engine
/// events; when the client goes away its send fails, it drops the engine's receiver, and the
/// engine stops that sequence at the next token.
fn sse(
    mut generation: Generation,
    meta: Meta,
    include_usage: bool,
    want_logprobs: bool,
) -> impl IntoResponse {
    let (tx, rx) = mpsc::channel::<Result<SseEvent, Infallible>>(SSE_BUFFER);
    let usage_field = include_usage.then_some(None);
    tokio::spawn(async move {
        let send_chunk = |choices: Vec<ChunkChoice>, usage: Option<Option<Usage>>| {
            let chunk = meta.chunk(choices, usage);
            let event = SseEvent::default()
                .json_data(&chunk)
                .unwrap_or_else(|_| SseEvent::default().data("{}"));
            let tx = tx.clone();
            async move { tx.send(Ok(event)).await.is_ok() }
        };
        let choice = |delta: Delta, logprobs: Option<Logprobs>, finish| ChunkChoice {
            index: 0,
            delta,
            logprobs,
            finish_reason: finish,
        };
        let first = Delta {
            role: Some(Role::Assistant),
            content: Some(String::new()),
            refusal: Some(None),
        };
        if !send_chunk(vec![choice(first, None, None)], usage_field).await {
            return;
        }
        loop {
            match generation.events.recv().await {
                Some(Event::Delta(d)) => {
                    let logprobs = want_logprobs.then(|| Logprobs {
                        content: convert::token_logprobs(d.logprobs),
                        refusal: None,
                    });
                    let delta = Delta {
                        content: Some(d.text),
                        ..Delta::default()
                    };
                    if !send_chunk(vec![choice(delta, logprobs, None)], usage_field).await {
                        return;
                    }
                }
                Some(Event::Done(done)) => {
                    let last = choice(
                        Delta::default(),
                        None,
                        Some(convert::finish_reason(done.finish)),
                    );
                    if !send_chunk(vec![last], usage_field).await {
                        return;
                    }
                    if include_usage {
                        let usage = Usage::new(done.prompt_tokens, done.completion_tokens);
                        if !send_chunk(vec![], Some(Some(usage))).await {
                            return;
                        }
                    }
                    let _ = tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
                    return;
                }
                Some(Event::Failed(reason)) => {
                    let body = ApiError::Internal(reason).body();
                    let event = SseEvent::default()
                        .json_data(&body)
                        .unwrap_or_else(|_| SseEvent::default().data("{}"));
                    let _ = tx.send(Ok(event)).await;
                    return;
                }
                None => return,
            }
        }
    });
    Sse::new(ReceiverStream::new(rx))
}
