//! The engine's output as OpenAI responses: a whole completion (with its confidence trace),
//! SSE events as they are generated, or a whole completion replayed as events. Events are
//! bytes (`data: {chunk}\n\n`), the same as a remote tier's, so every ingress renders one
//! kind of stream.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use smallfirst_engine::tools::{self, CallScanner, Scanned};
use smallfirst_engine::{Event, Generation, StepProb};
use smallfirst_protocol::{
    ChatCompletion, ChatCompletionChunk, Choice, ChunkChoice, Delta, FinishReason, FunctionCall,
    FunctionCallDelta, FunctionKind, Logprobs, ResponseMessage, Role, ToolCall, ToolCallDelta,
    Usage,
};
use smallfirst_router::AnswerStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::ApiError;
use crate::convert;
use crate::metrics::Ticket;

/// SSE events buffered toward a slow client.
const SSE_BUFFER: usize = 32;

/// A held answer sent as it would have streamed: a role delta, the content or calls, the
/// finish, usage when asked, `[DONE]`.
pub(crate) fn replay(completion: ChatCompletion, include_usage: bool) -> AnswerStream {
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
        .iter()
        .map(sse_event)
        .chain(std::iter::once(sse_done()))
        .map(Ok);
    Box::pin(futures::stream::iter(events.collect::<Vec<_>>()))
}

/// One SSE event carrying `value` as JSON.
pub(crate) fn sse_event(value: &impl serde::Serialize) -> Bytes {
    let mut out = b"data: ".to_vec();
    if serde_json::to_writer(&mut out, value).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The event that ends an OpenAI stream.
pub(crate) fn sse_done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

pub(crate) fn timeout_message(ticket: &Ticket) -> String {
    format!(
        "the request took longer than the server's limit of {} s and was stopped",
        ticket.timeout.as_secs_f64()
    )
}

/// Identity shared by every object of one response.
#[derive(Clone)]
pub(crate) struct Meta {
    id: String,
    created: u64,
    model: String,
}

impl Meta {
    pub(crate) fn new(model: String) -> Self {
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
pub(crate) struct Output {
    /// The parameter a failure of the answer's grammar is about.
    pub param: &'static str,
    pub logprobs: bool,
    /// Tool calls are parsed out of the answer.
    pub calls: bool,
    /// The answer can only be calls.
    pub must_call: bool,
}

/// Unique, unpredictable ids (`chatcmpl-…`, `call_…`).
pub(crate) fn new_id(prefix: &str) -> String {
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

/// The answer's tokens, the prompt's kept prefix counted as cached.
fn usage(done: &smallfirst_engine::Done) -> Usage {
    usage_of(
        done.prompt_tokens,
        done.completion_tokens,
        done.reused_tokens,
    )
}

fn usage_of(prompt: u32, completion: u32, cached: u32) -> Usage {
    let mut usage = Usage::new(prompt, completion);
    usage.prompt_tokens_details = Some(smallfirst_protocol::PromptTokensDetails {
        cached_tokens: cached,
    });
    usage
}

fn fingerprint() -> String {
    concat!("fp_smallfirst_", env!("CARGO_PKG_VERSION")).to_string()
}

/// A classification answered without decoding (by a task head): the label as the message.
pub(crate) fn labeled(meta: Meta, label: String, prompt_tokens: u32) -> ChatCompletion {
    let message = ResponseMessage {
        role: Role::Assistant,
        content: Some(label),
        refusal: None,
        tool_calls: None,
    };
    let usage = usage_of(prompt_tokens, 0, 0);
    completion(meta, message, None, FinishReason::Stop, usage)
}

/// One choice's answer as a chat completion.
fn completion(
    meta: Meta,
    message: ResponseMessage,
    logprobs: Option<Logprobs>,
    finish_reason: FinishReason,
    usage: Usage,
) -> ChatCompletion {
    ChatCompletion {
        id: meta.id,
        object: "chat.completion".into(),
        created: meta.created,
        model: meta.model,
        choices: vec![Choice {
            index: 0,
            message,
            logprobs,
            finish_reason,
        }],
        usage,
        system_fingerprint: Some(fingerprint()),
        smallfirst: None,
    }
}

pub(crate) async fn collect(
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
    let message = ResponseMessage {
        role: Role::Assistant,
        content: (!is_calls).then_some(text),
        refusal: None,
        tool_calls: calls.filter(|c| !c.is_empty()),
    };
    let logprobs = (out.logprobs && !is_calls).then(|| Logprobs {
        content: convert::token_logprobs(entries),
        refusal: None,
    });
    let finish = finish_with_calls(done.finish, made_calls);
    let completion = completion(meta, message, logprobs, finish, usage(&done));
    Ok((completion, done.trace, raw))
}

/// Streams the generations of one request's choices as OpenAI does: for each, a role delta
/// first, content deltas, a final delta with `finish_reason`, chunks carrying the choice's index
/// and interleaved as they are generated; then a usage chunk (all choices') when asked, then
/// `[DONE]`. A task per choice forwards engine events; when the client goes away its send
/// fails, it drops the engine's receiver, and the engine stops that sequence at the next token.
pub(crate) fn stream_n(
    generations: Vec<(Generation, Ticket)>,
    meta: Meta,
    include_usage: bool,
    out: Output,
) -> AnswerStream {
    let (tx, rx) = mpsc::channel::<Result<Bytes, smallfirst_router::BackendError>>(SSE_BUFFER);
    let meta = std::sync::Arc::new(meta);
    let usage_field = include_usage.then_some(None);
    let tasks: Vec<_> = generations
        .into_iter()
        .enumerate()
        .map(|(i, (generation, ticket))| {
            let choice = ChoiceSink {
                index: i as u32,
                meta: meta.clone(),
                usage_field,
                tx: tx.clone(),
            };
            tokio::spawn(forward(generation, choice, out, ticket))
        })
        .collect();
    tokio::spawn(async move {
        let mut total: Option<Usage> = None;
        let mut tasks = tasks.into_iter();
        while let Some(t) = tasks.next() {
            let Ok(Some(done)) = t.await else {
                // That choice ended the stream (an error event, or the client left): the
                // others stop too (their engine sequences end at the next step).
                tasks.for_each(|t| t.abort());
                return;
            };
            let u = usage(&done);
            total = Some(match total {
                None => u,
                Some(mut sum) => {
                    sum.completion_tokens += u.completion_tokens;
                    sum.total_tokens = sum.prompt_tokens + sum.completion_tokens;
                    sum
                }
            });
        }
        if include_usage
            && let Some(u) = total
            && tx
                .send(Ok(sse_event(&meta.chunk(vec![], Some(Some(u))))))
                .await
                .is_err()
        {
            return;
        }
        let _ = tx.send(Ok(sse_done())).await;
    });
    Box::pin(ReceiverStream::new(rx))
}

/// Where one choice's chunks go.
struct ChoiceSink {
    index: u32,
    meta: std::sync::Arc<Meta>,
    usage_field: Option<Option<Usage>>,
    tx: mpsc::Sender<Result<Bytes, smallfirst_router::BackendError>>,
}

/// One choice's events as chunks, to its end; `None` when it failed (its error event sent) or
/// the client went away.
async fn forward(
    mut generation: Generation,
    c: ChoiceSink,
    out: Output,
    mut ticket: Ticket,
) -> Option<smallfirst_engine::Done> {
    let send_chunk = |choices: Vec<ChunkChoice>| {
        let chunk = sse_event(&c.meta.chunk(choices, c.usage_field));
        let tx = c.tx.clone();
        async move { tx.send(Ok(chunk)).await.is_ok() }
    };
    let choice = |delta: Delta, logprobs: Option<Logprobs>, finish| ChunkChoice {
        index: c.index,
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
    if !send_chunk(vec![choice(first, None, None)]).await {
        return None;
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
        let Ok(event) = tokio::time::timeout_at(ticket.deadline, generation.events.recv()).await
        else {
            // Out of time: an error event, then the end (dropping the events stops the
            // engine at its next token).
            let error = ApiError::Timeout(timeout_message(&ticket)).body();
            let _ = c.tx.send(Ok(sse_event(&error))).await;
            return None;
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
                if !send_chunk(vec![choice(delta, logprobs, None)]).await {
                    return None;
                }
            }
            Some(Event::Done(done)) => {
                ticket.done(done.completion_tokens, done.reused_tokens);
                if let Some(Scanned::Text(rest)) = scanner.as_mut().and_then(CallScanner::finish) {
                    let delta = Delta {
                        content: Some(rest),
                        ..Delta::default()
                    };
                    let logprobs = out.logprobs.then(|| Logprobs {
                        content: convert::token_logprobs(std::mem::take(&mut pending)),
                        refusal: None,
                    });
                    if !send_chunk(vec![choice(delta, logprobs, None)]).await {
                        return None;
                    }
                }
                let finish = finish_with_calls(done.finish, n_calls > 0);
                if !send_chunk(vec![choice(Delta::default(), None, Some(finish))]).await {
                    return None;
                }
                return Some(done);
            }
            Some(Event::Failed(reason)) => {
                let body = ApiError::Internal(reason).body();
                let _ = c.tx.send(Ok(sse_event(&body))).await;
                return None;
            }
            Some(Event::FormatFailed(reason)) => {
                let body = ApiError::invalid(out.param, reason).body();
                let _ = c.tx.send(Ok(sse_event(&body))).await;
                return None;
            }
            None => return None,
        }
    }
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
