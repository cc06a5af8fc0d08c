//! The engine's output as `text_completion` objects: whole, or as SSE chunks, one choice per
//! generation (prompt `i`'s choice `j` is index `i·n + j`).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use smallfirst_engine::{Done, Event, Generation, TokenLogprob};
use smallfirst_protocol::Usage;
use smallfirst_protocol::completions::{Completion, CompletionChoice, CompletionLogprobs};
use smallfirst_router::AnswerStream;

use crate::ApiError;
use crate::answer::{new_id, sse_done, sse_event, timeout_message};
use crate::convert::finish_reason;
use crate::metrics::Ticket;

/// One prompt's generations, each with its place in the queue.
pub(super) struct Run {
    /// The prompt's text, when `echo` asks for it before the completion.
    pub echo: Option<String>,
    /// `logprobs` was asked for.
    pub logprobs: bool,
    pub generations: Vec<(Generation, Ticket)>,
}

pub(super) struct Meta {
    id: String,
    created: u64,
    model: String,
}

impl Meta {
    pub(super) fn new(model: String) -> Self {
        Meta {
            id: new_id("cmpl-"),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model,
        }
    }

    fn object(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> Completion {
        Completion {
            id: self.id.clone(),
            object: "text_completion".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        }
    }
}

/// The legacy shape of log-probabilities, offsets counted in characters from `start`.
fn legacy(entries: Vec<TokenLogprob>, start: usize) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    let mut at = start;
    for e in entries {
        let token = String::from_utf8_lossy(&e.bytes).into_owned();
        out.text_offset.push(at as u32);
        at += token.chars().count();
        out.tokens.push(token);
        out.token_logprobs.push(Some(e.logprob));
        let top: BTreeMap<String, f32> = e
            .top
            .into_iter()
            .map(|(b, lp)| (String::from_utf8_lossy(&b).into_owned(), lp))
            .collect();
        out.top_logprobs.push(Some(top));
    }
    out
}

/// The next event of a generation within its request's time.
async fn next(g: &mut Generation, ticket: &mut Ticket) -> Result<Event, ApiError> {
    match tokio::time::timeout_at(ticket.deadline, g.events.recv()).await {
        Err(_) => Err(ApiError::Timeout(timeout_message(ticket))),
        Ok(None) => Err(ApiError::Internal(
            "the engine stopped mid-generation".into(),
        )),
        Ok(Some(Event::Failed(reason))) => Err(ApiError::Internal(reason)),
        Ok(Some(Event::FormatFailed(reason))) => Err(ApiError::invalid("prompt", reason)),
        Ok(Some(e)) => Ok(e),
    }
}

fn add(usage: &mut Usage, done: &Done, first_of_prompt: bool) {
    if first_of_prompt {
        usage.prompt_tokens += done.prompt_tokens;
    }
    usage.completion_tokens += done.completion_tokens;
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
}

/// Every generation read to its end, as one `text_completion`.
pub(super) async fn collect(runs: Vec<Run>, meta: Meta) -> Result<Completion, ApiError> {
    let mut choices = Vec::new();
    let mut usage = Usage::default();
    let mut index = 0u32;
    for run in runs {
        for (j, (mut g, mut ticket)) in run.generations.into_iter().enumerate() {
            let mut text = run.echo.clone().unwrap_or_default();
            let start = text.chars().count();
            let mut entries = Vec::new();
            let done = loop {
                match next(&mut g, &mut ticket).await? {
                    Event::Delta(d) => {
                        ticket.delta();
                        text.push_str(&d.text);
                        entries.extend(d.logprobs);
                    }
                    Event::Done(done) => {
                        ticket.done(done.completion_tokens, done.reused_tokens);
                        break done;
                    }
                    _ => {}
                }
            };
            add(&mut usage, &done, j == 0);
            choices.push(CompletionChoice {
                text,
                index,
                logprobs: run.logprobs.then(|| legacy(entries, start)),
                finish_reason: Some(finish_reason(done.finish)),
            });
            index += 1;
        }
    }
    Ok(meta.object(choices, Some(usage)))
}

/// Every generation streamed at once, chunks tagged with their choice's index, then the usage
/// when asked and `[DONE]`.
pub(super) fn stream(runs: Vec<Run>, meta: Meta, include_usage: bool) -> AnswerStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, smallfirst_router::BackendError>>(32);
    let meta = std::sync::Arc::new(meta);
    let mut tasks = Vec::new();
    let mut index = 0u32;
    for run in runs {
        for (j, (mut g, mut ticket)) in run.generations.into_iter().enumerate() {
            let (tx, meta, echo, i) = (tx.clone(), meta.clone(), run.echo.clone(), index);
            let wants_logprobs = run.logprobs;
            index += 1;
            tasks.push(tokio::spawn(async move {
                let send = |text: String, logprobs, finish| {
                    let choice = CompletionChoice {
                        text,
                        index: i,
                        logprobs,
                        finish_reason: finish,
                    };
                    let event = sse_event(&meta.object(vec![choice], None));
                    let tx = tx.clone();
                    async move { tx.send(Ok(event)).await.is_ok() }
                };
                let mut offset = 0usize;
                if let Some(echo) = echo {
                    offset = echo.chars().count();
                    if !send(echo, None, None).await {
                        return None;
                    }
                }
                loop {
                    match next(&mut g, &mut ticket).await {
                        Ok(Event::Delta(d)) => {
                            ticket.delta();
                            let logprobs = wants_logprobs.then(|| legacy(d.logprobs, offset));
                            offset += d.text.chars().count();
                            if !send(d.text, logprobs, None).await {
                                return None;
                            }
                        }
                        Ok(Event::Done(done)) => {
                            ticket.done(done.completion_tokens, done.reused_tokens);
                            let finish = Some(finish_reason(done.finish));
                            if !send(String::new(), None, finish).await {
                                return None;
                            }
                            return Some((done, j == 0));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let _ = tx.send(Ok(sse_event(&e.body()))).await;
                            return None;
                        }
                    }
                }
            }));
        }
    }
    tokio::spawn(async move {
        let mut usage = Usage::default();
        let mut tasks = tasks.into_iter();
        while let Some(t) = tasks.next() {
            match t.await {
                Ok(Some((done, first))) => add(&mut usage, &done, first),
                _ => {
                    // A choice that failed has sent its error event: the stream ends there,
                    // and the other choices stop.
                    tasks.for_each(|t| t.abort());
                    return;
                }
            }
        }
        if include_usage {
            let _ = tx
                .send(Ok(sse_event(&meta.object(Vec::new(), Some(usage)))))
                .await;
        }
        let _ = tx.send(Ok(sse_done())).await;
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx).fuse())
}
