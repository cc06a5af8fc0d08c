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
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use smallfirst_engine::tools::{self, CallScanner, Scanned};
use smallfirst_engine::{
    ChatMessage, Constraint, Engine, EngineError, Event, Generation, StepProb,
};
use smallfirst_protocol::{
    ChatCompletion, ChatCompletionChunk, ChatRequest, Choice, ChunkChoice, Delta, FinishReason,
    FunctionCall, FunctionCallDelta, FunctionKind, Logprobs, ResponseMessage, Role, ToolCall,
    ToolCallDelta, Usage,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::convert::{self, Plan};
use crate::metrics::Ticket;
use crate::routes::LocalTier;
use crate::{ApiError, AppState, gateway, routing};
use smallfirst_router::Reason;

/// SSE events buffered toward a slow client.
const SSE_BUFFER: usize = 32;

pub(crate) async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Errors too say how the request was handled.
    answer(state, headers, body)
        .await
        .unwrap_or_else(|e| routing::failed(e, "rejected"))
}

async fn answer(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body =
        body.map_err(|e| ApiError::TooLarge(format!("could not read the request body: {e}")))?;
    let model = target_model(&body);
    let privacy = routing::privacy(&headers, &body)?;
    if model
        .as_deref()
        .is_some_and(|m| state.inner.policy.decides_for(m))
    {
        return routing::auto(&state, &headers, &body).await;
    }
    let local_only = privacy.local_only();
    let named = Reason {
        code: format!("model={}", model.as_deref().unwrap_or("")),
        words: "the request named this tier".into(),
    };
    // A remote tier gets the body as it came; only the embedded path reads all of it.
    if let Some(tier) = model.as_deref().and_then(|m| state.remote_for(m)) {
        if local_only && !tier.is_local() {
            return Err(ApiError::InvalidRequest {
                message: format!(
                    "this request is local-only (`{}`), and tier `{}` is not on this machine",
                    routing::PRIVACY_HEADER,
                    tier.name()
                ),
                param: Some("model".into()),
                code: Some("local_only"),
            });
        }
        let mut response = gateway::forward(
            &state,
            tier,
            &body,
            gateway::Chain {
                local_only,
                embedded: true,
            },
        )
        .await?;
        routing::mark(&mut response, None, &named, None, false);
        return Ok(response);
    }
    let mut response = local(&state, &body, false).await?;
    routing::mark(&mut response, None, &named, None, false);
    Ok(response)
}

/// The request answered by the embedded model; `fallback` when a remote tier's chain led here,
/// so the `model` it names is another tier's.
pub(crate) async fn local(
    state: &AppState,
    body: &[u8],
    fallback: bool,
) -> Result<Response, ApiError> {
    let req = parse(body)?;
    let local = match &state.inner.local {
        Some(l) if fallback || state.answers_to(&req.model) => l,
        _ => return Err(ApiError::ModelNotFound(req.model)),
    };
    let engine = &local.engine;
    let plan = convert::plan(&req, engine.info().n_vocab)?;
    let prompt = render(state, engine, &plan).await?;
    let mut ticket = admit(state)?;
    let Plan {
        mut params,
        stream,
        include_usage,
        logprobs,
        structure,
        ..
    } = plan;
    params.prefix_reuse = state.inner.metrics.prefix_reuse;
    let generation = engine.generate(prompt, params).await.map_err(|e| match e {
        // The grammar did not compile: the request's schema is at fault.
        EngineError::Grammar(_) => ApiError::invalid(structure.param(), e.to_string()),
        other => other.into(),
    })?;
    ticket.started(generation.prompt_tokens);
    let meta = Meta::new(local.model_id.clone());
    let out = Output {
        param: structure.param(),
        logprobs,
        calls: structure.calls,
        must_call: structure.must_call,
    };
    let mut response = if stream {
        sse(generation, meta, include_usage, out, ticket).into_response()
    } else {
        Json(collect(generation, meta, out, ticket).await?.0).into_response()
    };
    if let Ok(tier) = HeaderValue::from_str(&local.name) {
        response.headers_mut().insert("x-smallfirst-tier", tier);
    }
    Ok(response)
}

/// A local answer held whole, to be judged before it is sent.
pub(crate) struct Held {
    pub completion: ChatCompletion,
    /// Each sampled token's probability and the runner-up's.
    pub trace: Vec<StepProb>,
    /// The generated text when it may hold tool calls (the completion shows them parsed).
    pub raw_text: String,
    /// How the answer was constrained, which says how to read its confidence.
    pub kind: AnswerKind,
    /// A grammar shaped the answer (a schema, tools, labels): cut by the budget, it is not
    /// the answer it claims to be.
    pub constrained: bool,
    pub stream: bool,
    pub include_usage: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnswerKind {
    /// One of a label set, or JSON whose every leaf is a closed choice.
    Choice,
    Tools,
    Text,
}

/// The request answered by the embedded model in full, with its confidence trace. With
/// `labels` (and no `response_format` or `tools` of its own), the answer is exactly one label;
/// the labels are listed to the model, one per line at the end of the system prompt, when its
/// messages do not name them all.
pub(crate) async fn held(
    state: &AppState,
    local: &LocalTier,
    body: &[u8],
    labels: Option<&[String]>,
) -> Result<Held, ApiError> {
    let req = parse(body)?;
    let engine = &local.engine;
    let mut plan = convert::plan(&req, engine.info().n_vocab)?;
    let mut kind = if plan.structure.calls {
        AnswerKind::Tools
    } else if req
        .response_format
        .as_ref()
        .and_then(|f| serde_json::to_value(f).ok())
        .is_some_and(|f| smallfirst_router::features::enum_only(&f["json_schema"]["schema"]))
    {
        AnswerKind::Choice
    } else {
        AnswerKind::Text
    };
    if let Some(labels) = labels
        && plan.params.constraint.is_none()
    {
        check_labels(labels)?;
        let all_named = labels
            .iter()
            .all(|l| plan.messages.iter().any(|m| m.content.contains(l.as_str())));
        if !all_named {
            // One label per line, after the client's own instruction: small models read a
            // list far better than a comma-separated run, which they answer with its first item.
            let list = format!(
                "Possible labels:\n{}\nAnswer with the label only.",
                labels.join("\n")
            );
            match plan.messages.first_mut() {
                Some(m) if m.role == "system" => {
                    m.content.push_str("\n\n");
                    m.content.push_str(&list);
                }
                _ => plan.messages.insert(
                    0,
                    ChatMessage {
                        role: "system".into(),
                        content: list,
                        tool_calls: Vec::new(),
                        tool_call_id: None,
                    },
                ),
            }
        }
        plan.params.constraint = Some(Constraint::Choice(labels.to_vec()));
        kind = AnswerKind::Choice;
    }
    plan.params.confidence = true;
    plan.params.prefix_reuse = state.inner.metrics.prefix_reuse;
    let constrained = plan.params.constraint.is_some();
    let prompt = render(state, engine, &plan).await?;
    let mut ticket = admit(state)?;
    let generation = engine
        .generate(prompt, plan.params)
        .await
        .map_err(|e| match e {
            EngineError::Grammar(_) => ApiError::invalid(plan.structure.param(), e.to_string()),
            other => other.into(),
        })?;
    let out = Output {
        param: plan.structure.param(),
        logprobs: plan.logprobs,
        calls: plan.structure.calls,
        must_call: plan.structure.must_call,
    };
    ticket.started(generation.prompt_tokens);
    let (completion, trace, raw_text) =
        collect(generation, Meta::new(local.model_id.clone()), out, ticket).await?;
    Ok(Held {
        completion,
        trace,
        raw_text,
        kind,
        constrained,
        stream: plan.stream,
        include_usage: plan.include_usage,
    })
}

/// A label set is a closed choice like an `enum`, and is held to the same limits.
fn check_labels(labels: &[String]) -> Result<(), ApiError> {
    use smallfirst_engine::schema::limits::{MAX_CHARS, MAX_ENUM_VALUES};
    if labels.len() > MAX_ENUM_VALUES {
        return Err(ApiError::invalid(
            "metadata.labels",
            format!(
                "at most {MAX_ENUM_VALUES} labels are allowed, got {}",
                labels.len()
            ),
        ));
    }
    if labels.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "metadata.labels",
            "labels must not be empty strings",
        ));
    }
    let chars: usize = labels.iter().map(|l| l.chars().count()).sum();
    if chars > MAX_CHARS {
        return Err(ApiError::invalid(
            "metadata.labels",
            format!("the labels come to {chars} characters, more than {MAX_CHARS}"),
        ));
    }
    Ok(())
}

/// The plan's prompt, rendered off the async runtime's threads (a template may run for a
/// while within its fuel).
async fn render(state: &AppState, engine: &Engine, plan: &Plan) -> Result<String, ApiError> {
    let _permit = state
        .inner
        .renders
        .acquire()
        .await
        .map_err(|_| ApiError::Internal("the server is shutting down".into()))?;
    let engine = engine.clone();
    let messages = plan.messages.clone();
    let tools = plan.structure.tools.clone();
    tokio::task::spawn_blocking(move || engine.render_with_tools(&messages, &tools))
        .await
        .map_err(|_| ApiError::Internal("the chat template's render did not finish".into()))?
        .map_err(ApiError::from)
}

/// The tokens the request's prompt takes on the local model, when it can render it.
pub(crate) async fn count_prompt_tokens(
    state: &AppState,
    local: &LocalTier,
    body: &[u8],
) -> Option<u32> {
    let req = parse(body).ok()?;
    let plan = convert::plan(&req, local.engine.info().n_vocab).ok()?;
    let prompt = render(state, &local.engine, &plan).await.ok()?;
    let engine = local.engine.clone();
    tokio::task::spawn_blocking(move || engine.count_tokens(&prompt) as u32)
        .await
        .ok()
}

/// A held answer sent as it would have streamed: a role delta, the content or calls, the
/// finish, usage when asked, `[DONE]`.
pub(crate) fn replay(completion: ChatCompletion, include_usage: bool) -> Response {
    let meta = Meta {
        id: completion.id.clone(),
        created: completion.created,
        model: completion.model.clone(),
    };
    let usage_field = include_usage.then_some(None);
    let mut chunks = Vec::new();
    for c in completion.choices {
        let m = c.message;
        let first = Delta {
            role: Some(Role::Assistant),
            content: Some(String::new()).filter(|_| m.tool_calls.is_none()),
            refusal: Some(None),
            ..Delta::default()
        };
        let choice = |delta: Delta, logprobs: Option<Logprobs>, finish| ChunkChoice {
            index: c.index,
            delta,
            logprobs,
            finish_reason: finish,
        };
        chunks.push(meta.chunk(vec![choice(first, None, None)], usage_field));
        if let Some(text) = m.content.filter(|t| !t.is_empty()) {
            let delta = Delta {
                content: Some(text),
                ..Delta::default()
            };
            chunks.push(meta.chunk(vec![choice(delta, c.logprobs.clone(), None)], usage_field));
        }
        for (i, call) in m.tool_calls.into_iter().flatten().enumerate() {
            let delta = Delta {
                tool_calls: Some(vec![ToolCallDelta {
                    index: i as u32,
                    id: Some(call.id),
                    kind: Some(FunctionKind::Function),
                    function: FunctionCallDelta {
                        name: Some(call.function.name),
                        arguments: Some(call.function.arguments),
                    },
                }]),
                ..Delta::default()
            };
            chunks.push(meta.chunk(vec![choice(delta, None, None)], usage_field));
        }
        chunks.push(meta.chunk(
            vec![choice(Delta::default(), None, Some(c.finish_reason))],
            usage_field,
        ));
    }
    if include_usage {
        chunks.push(meta.chunk(Vec::new(), Some(Some(completion.usage))));
    }
    let events = chunks
        .into_iter()
        .map(|c| {
            Ok::<_, Infallible>(
                SseEvent::default()
                    .json_data(&c)
                    .unwrap_or_else(|_| SseEvent::default().data("{}")),
            )
        })
        .chain(std::iter::once(Ok(SseEvent::default().data("[DONE]"))));
    Sse::new(futures::stream::iter(events)).into_response()
}

fn timeout_message(ticket: &Ticket) -> String {
    format!(
        "the request took longer than the server's limit of {} s and was stopped",
        ticket.timeout.as_secs_f64()
    )
}

/// A place in the embedded engine's queue, or 429 when it is full.
fn admit(state: &AppState) -> Result<Ticket, ApiError> {
    state.inner.metrics.admit().ok_or_else(|| {
        ApiError::Busy("the local model's queue is full; retry after a moment".into())
    })
}

/// The `model` a body asks for, read without judging the rest of it.
fn target_model(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Target {
        model: String,
    }
    serde_json::from_slice::<Target>(body).ok().map(|t| t.model)
}

/// Parses the body, naming the offending field path on failure.
pub(crate) fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
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
        Meta {
            id: new_id("chatcmpl-"),
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

/// How the answer is to be shaped on the way out.
#[derive(Debug, Clone, Copy)]
struct Output {
    /// The parameter a failure of the answer's grammar is about.
    param: &'static str,
    logprobs: bool,
    /// Tool calls are parsed out of the answer.
    calls: bool,
    /// The answer can only be calls.
    must_call: bool,
}

/// Unique, unpredictable ids (`chatcmpl-…`, `call_…`).
fn new_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // RandomState keys come from the OS once per thread: hashing a counter with two of them
    // gives ids that are unique and not predictable from outside.
    let a = RandomState::new().hash_one(n);
    let b = RandomState::new().hash_one(n);
    format!("{prefix}{a:016x}{b:016x}")
}

fn wire_call(call: tools::ToolCall) -> ToolCall {
    ToolCall {
        id: new_id("call_"),
        kind: FunctionKind::Function,
        function: FunctionCall {
            name: call.name,
            arguments: call.arguments,
        },
    }
}

/// `tool_calls` when the answer made calls and ended on its own.
fn finish_with_calls(finish: smallfirst_engine::FinishReason, made_calls: bool) -> FinishReason {
    match convert::finish_reason(finish) {
        FinishReason::Stop if made_calls => FinishReason::ToolCalls,
        other => other,
    }
}

fn fingerprint() -> String {
    concat!("fp_smallfirst_", env!("CARGO_PKG_VERSION")).to_string()
}

async fn collect(
    mut generation: Generation,
    meta: Meta,
    out: Output,
    mut ticket: Ticket,
) -> Result<(ChatCompletion, Vec<StepProb>, String), ApiError> {
    let mut text = String::new();
    let mut entries = Vec::new();
    let done = loop {
        let event = tokio::time::timeout_at(ticket.deadline, generation.events.recv())
            .await
            .map_err(|_| ApiError::Timeout(timeout_message(&ticket)))?;
        match event {
            Some(Event::Delta(d)) => {
                ticket.delta();
                text.push_str(&d.text);
                entries.extend(d.logprobs);
            }
            Some(Event::Done(done)) => {
                ticket.done(done.completion_tokens, done.reused_tokens);
                break done;
            }
            Some(Event::Failed(reason)) => return Err(ApiError::Internal(reason)),
            Some(Event::FormatFailed(reason)) => {
                return Err(ApiError::invalid(out.param, reason));
            }
            None => {
                return Err(ApiError::Internal(
                    "the engine stopped mid-generation".into(),
                ));
            }
        }
    };
    // An answer that opened a call is calls only: a last call cut short by `max_tokens` is
    // dropped, as it is when streaming, and there is no content.
    let calls: Option<Vec<ToolCall>> = out
        .calls
        .then(|| tools::parse(&text))
        .flatten()
        .map(|calls| calls.into_iter().map(wire_call).collect());
    let raw = if out.calls {
        text.clone()
    } else {
        String::new()
    };
    let is_calls = calls.is_some();
    let made_calls = calls.as_ref().is_some_and(|c| !c.is_empty());
    let completion = ChatCompletion {
        id: meta.id,
        object: "chat.completion".into(),
        created: meta.created,
        model: meta.model,
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: Role::Assistant,
                content: (!is_calls).then_some(text),
                refusal: None,
                tool_calls: calls.filter(|c| !c.is_empty()),
            },
            logprobs: (out.logprobs && !is_calls).then(|| Logprobs {
                content: convert::token_logprobs(entries),
                refusal: None,
            }),
            finish_reason: finish_with_calls(done.finish, made_calls),
        }],
        usage: Usage::new(done.prompt_tokens, done.completion_tokens),
        system_fingerprint: Some(fingerprint()),
        smallfirst: None,
    };
    Ok((completion, done.trace, raw))
}

/// Streams the generation as OpenAI does: a role delta first, content deltas, a final delta
/// with `finish_reason`, a usage chunk when asked, then `[DONE]`. A task forwards engine
/// events; when the client goes away its send fails, it drops the engine's receiver, and the
/// engine stops that sequence at the next token.
fn sse(
    mut generation: Generation,
    meta: Meta,
    include_usage: bool,
    out: Output,
    mut ticket: Ticket,
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
        // An answer that must be calls has no content, not an empty one.
        let first = Delta {
            role: Some(Role::Assistant),
            content: (!out.must_call).then(String::new),
            refusal: Some(None),
            ..Delta::default()
        };
        if !send_chunk(vec![choice(first, None, None)], usage_field).await {
            return;
        }
        // With tools, text is held until it is known not to open a call; calls go out whole,
        // one chunk each, as soon as their block closes.
        let mut scanner = out.calls.then(CallScanner::new);
        let mut n_calls = 0u32;
        let mut pending = Vec::new();
        let mut shape = |text: String| -> Option<Delta> {
            let Some(scanner) = scanner.as_mut() else {
                return Some(Delta {
                    content: Some(text),
                    ..Delta::default()
                });
            };
            match scanner.push(&text)? {
                Scanned::Text(t) => Some(Delta {
                    content: Some(t),
                    ..Delta::default()
                }),
                Scanned::Calls(calls) => Some(Delta {
                    tool_calls: Some(
                        calls
                            .into_iter()
                            .map(|c| call_delta(c, &mut n_calls))
                            .collect(),
                    ),
                    ..Delta::default()
                }),
            }
        };
        loop {
            let Ok(event) =
                tokio::time::timeout_at(ticket.deadline, generation.events.recv()).await
            else {
                // Out of time: an error event, then the end (dropping the events stops the
                // engine at its next token).
                let error = ApiError::Timeout(timeout_message(&ticket)).body();
                let event = SseEvent::default()
                    .json_data(&error)
                    .unwrap_or_else(|_| SseEvent::default().data("{}"));
                let _ = tx.send(Ok(event)).await;
                return;
            };
            match event {
                Some(Event::Delta(d)) => {
                    ticket.delta();
                    // Log-probabilities go out with the text they belong to; a call has none.
                    pending.extend(d.logprobs);
                    let Some(delta) = shape(d.text) else { continue };
                    let entries = std::mem::take(&mut pending);
                    let logprobs = (out.logprobs && delta.tool_calls.is_none()).then(|| Logprobs {
                        content: convert::token_logprobs(entries),
                        refusal: None,
                    });
                    if !send_chunk(vec![choice(delta, logprobs, None)], usage_field).await {
                        return;
                    }
                }
                Some(Event::Done(done)) => {
                    ticket.done(done.completion_tokens, done.reused_tokens);
                    if let Some(Scanned::Text(rest)) =
                        scanner.as_mut().and_then(CallScanner::finish)
                    {
                        let delta = Delta {
                            content: Some(rest),
                            ..Delta::default()
                        };
                        let logprobs = out.logprobs.then(|| Logprobs {
                            content: convert::token_logprobs(std::mem::take(&mut pending)),
                            refusal: None,
                        });
                        if !send_chunk(vec![choice(delta, logprobs, None)], usage_field).await {
                            return;
                        }
                    }
                    let finish = finish_with_calls(done.finish, n_calls > 0);
                    let last = choice(Delta::default(), None, Some(finish));
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
                Some(Event::FormatFailed(reason)) => {
                    let body = ApiError::invalid(out.param, reason).body();
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

/// A whole call in one stream delta, numbered in the order the calls were made.
fn call_delta(call: tools::ToolCall, n_calls: &mut u32) -> ToolCallDelta {
    let call = wire_call(call);
    let index = *n_calls;
    *n_calls += 1;
    ToolCallDelta {
        index,
        id: Some(call.id),
        kind: Some(FunctionKind::Function),
        function: FunctionCallDelta {
            name: Some(call.function.name),
            arguments: Some(call.function.arguments),
        },
    }
}
