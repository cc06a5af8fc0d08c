//! The ledger's side of the server. `render::mark`, which every ingress calls with its
//! [`Outcome`], puts the outcome's [`Facts`] on the response; `observe`, which sees every
//! request, turns them into a [`Record`] once the client has the whole answer: at once for a
//! whole body, at the end of a stream, or when the client goes away (`cancelled`). A stream's
//! tokens are read from its own usage event, whatever its protocol (OpenAI chunks, Anthropic
//! events, Responses events); a chat stream whose client did not ask for usage is asked for
//! it anyway, and that event is taken out again before it reaches the client.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures::Stream;
use serde_json::Value;
use smallfirst_ledger::{Ledger, Record, Status, Tokens};
use smallfirst_protocol::Usage;
use smallfirst_router::{Config, Prices};

use crate::budget::Budgets;
use crate::gateway::Outcome;

/// The largest whole body read again for its usage (an answer from a tier whose usage the
/// core did not read: completions, embeddings).
const MAX_USAGE_BODY: usize = 16 << 20;

/// The ledger, with what a record needs to know of the tiers.
pub struct Book {
    ledger: Arc<Ledger>,
    tiers: Vec<TierBook>,
    baseline: Option<Prices>,
    replica: String,
    /// What each record spends counts against these at once.
    budgets: Option<Arc<Budgets>>,
}

struct TierBook {
    name: String,
    model: String,
    prices: Prices,
    on_machine: bool,
}

impl Book {
    /// The ledger, pricing by `config`'s tiers; `embedded_model` is the embedded tier's model
    /// as the server names it.
    pub fn new(ledger: Arc<Ledger>, config: &Config, embedded_model: Option<&str>) -> Book {
        let tiers = config
            .tiers
            .iter()
            .map(|t| TierBook {
                name: t.name.clone(),
                model: match (t.backend.embedded(), embedded_model) {
                    (Some(_), Some(m)) => m.to_string(),
                    _ => t.backend.model().to_string(),
                },
                prices: t.prices,
                on_machine: t.on_machine,
            })
            .collect();
        let baseline = config
            .ledger
            .baseline
            .as_deref()
            .and_then(|b| config.tier(b))
            .map(|t| t.prices);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        Book {
            ledger,
            tiers,
            baseline,
            replica: format!("{host}:{}", std::process::id()),
            budgets: None,
        }
    }

    /// Counts each record's cost against `budgets` as it is written.
    #[must_use]
    pub fn with_budgets(mut self, budgets: Option<Arc<Budgets>>) -> Book {
        self.budgets = budgets;
        self
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn tier(&self, name: &str) -> Option<&TierBook> {
        self.tiers.iter().find(|t| t.name == name)
    }

    fn write(&self, p: Pending, end: End) {
        let usage = end.usage.or(p.facts.usage);
        let tokens = usage.map_or_else(Tokens::default, |u| tokens(&u));
        let tier = p.facts.tier.as_deref().and_then(|t| self.tier(t));
        let status = match end.kind {
            _ if p.http_status >= 400 && p.facts.tier_failed => Status::Failed,
            _ if p.http_status >= 400 => Status::Refused,
            EndKind::Complete => Status::Answered,
            EndKind::Broken => Status::Failed,
            EndKind::Dropped => Status::Cancelled,
        };
        let price = |prices: &Prices| prices.cost(tokens.prompt, tokens.cached, tokens.completion);
        let answered = status == Status::Answered;
        let mut tried = Vec::new();
        tried.extend(p.facts.escalated_from.clone());
        tried.extend(p.facts.failover.iter().cloned());
        tried.extend(p.facts.tier.clone());
        tried.dedup();
        let cost = tier.map_or(0.0, |t| price(&t.prices));
        if let (Some(b), Some(t)) = (&self.budgets, &p.facts.tier) {
            let task = p.facts.task.as_ref().map(|(t, _)| t.as_str());
            b.spent(t, task, p.key.as_deref(), cost);
        }
        self.ledger.record(Record {
            at_ms: p.at_ms,
            request_id: p.request_id,
            replica: self.replica.clone(),
            key: p.key,
            ingress: p.ingress.to_string(),
            task: p.facts.task.as_ref().map(|(t, _)| t.clone()),
            task_source: p.facts.task.as_ref().map(|(_, s)| (*s).to_string()),
            reason: p.facts.reason,
            tier: p.facts.tier.clone(),
            model: tier.map(|t| t.model.clone()),
            on_machine: tier.is_some_and(|t| t.on_machine),
            tried,
            escalated: p.facts.escalated,
            confidence: p.facts.confidence.map(|(v, _)| v),
            method: p.facts.confidence.map(|(_, m)| m.to_string()),
            tokens,
            cost,
            baseline_cost: self.baseline.filter(|_| answered).map(|b| price(&b)),
            latency_ms: p.started.elapsed().as_secs_f64() * 1000.0,
            ttft_ms: end
                .first
                .map(|f| f.duration_since(p.started).as_secs_f64() * 1000.0),
            http_status: p.http_status,
            status,
            prompt: None,
            answer: None,
        });
    }
}

fn tokens(u: &Usage) -> Tokens {
    Tokens {
        prompt: u64::from(u.prompt_tokens),
        cached: u64::from(u.cached_tokens()),
        cache_write: 0,
        completion: u64::from(u.completion_tokens),
        reasoning: u64::from(u.reasoning_tokens()),
    }
}

/// What the ledger learns of an outcome where it is rendered.
#[derive(Debug, Clone)]
pub(crate) struct Facts {
    tier: Option<String>,
    reason: String,
    task: Option<(String, &'static str)>,
    escalated: bool,
    escalated_from: Option<String>,
    failover: Vec<String>,
    confidence: Option<(f64, &'static str)>,
    usage: Option<Usage>,
    /// The last tier tried failed (rather than the request being refused).
    tier_failed: bool,
    /// The stream carries a usage event the client did not ask for: take it out.
    pub(crate) strip_usage: bool,
}

impl Facts {
    pub(crate) fn of(outcome: &Outcome) -> Facts {
        Facts {
            tier: outcome.tier.clone(),
            reason: outcome.reason.code.clone(),
            task: outcome.task.as_ref().map(|(t, s)| (t.clone(), s.as_str())),
            escalated: outcome.escalated,
            escalated_from: outcome.escalated_from.clone(),
            failover: outcome.failover.iter().map(|f| f.tier.clone()).collect(),
            confidence: outcome.confidence.map(|c| (c.value, c.method.as_str())),
            usage: outcome.usage,
            tier_failed: outcome.tier_failed(),
            strip_usage: false,
        }
    }
}

/// A request whose record waits for the end of its answer.
pub(crate) struct Pending {
    pub at_ms: i64,
    pub started: Instant,
    pub request_id: String,
    pub key: Option<String>,
    pub ingress: &'static str,
    pub http_status: u16,
    pub facts: Facts,
}

/// The API a path is, for the records of its requests; `None`: not recorded.
pub(crate) fn ingress(path: &str) -> Option<&'static str> {
    Some(match path {
        "/v1/chat/completions" => "chat",
        "/v1/messages" => "messages",
        "/v1/responses" => "responses",
        "/v1/completions" => "completions",
        "/v1/embeddings" => "embeddings",
        _ => return None,
    })
}

/// The record of `response` written: a whole body's at once (its usage read from it when the
/// outcome did not carry one), a stream's when it ends or the client leaves.
pub(crate) async fn meter(book: Arc<Book>, response: Response, pending: Pending) -> Response {
    let sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !sse {
        if pending.facts.usage.is_some() || pending.http_status >= 400 {
            book.write(pending, End::whole(None));
            return response;
        }
        // A whole body is in memory already; read it for its usage and hand it on as it was.
        let (parts, body) = response.into_parts();
        let bytes = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(b) => b,
            Err(e) => {
                book.write(pending, End::whole(None));
                return crate::ApiError::Internal(format!("the answer could not be sent: {e}"))
                    .into_response();
            }
        };
        let usage = (bytes.len() <= MAX_USAGE_BODY)
            .then(|| usage_in(&bytes))
            .flatten();
        book.write(pending, End::whole(usage));
        return Response::from_parts(parts, Body::from(bytes));
    }
    let (parts, body) = response.into_parts();
    let metered = Metered {
        body: body.into_data_stream(),
        book,
        strip: pending.facts.strip_usage,
        pending: Some(pending),
        held: BytesMut::new(),
        usage: None,
        first: None,
        broken: false,
    };
    Response::from_parts(parts, Body::from_stream(metered))
}

enum EndKind {
    Complete,
    Broken,
    Dropped,
}

struct End {
    kind: EndKind,
    usage: Option<Usage>,
    first: Option<Instant>,
}

impl End {
    fn whole(usage: Option<Usage>) -> End {
        End {
            kind: EndKind::Complete,
            usage,
            first: None,
        }
    }
}

/// A stream on its way to the client: its events looked into only where one may carry usage
/// or an error, and, when the usage event is to be taken out, handed on a whole event at a
/// time (a piece of an event waits in `held` for the rest).
struct Metered {
    body: axum::body::BodyDataStream,
    book: Arc<Book>,
    pending: Option<Pending>,
    strip: bool,
    /// The bytes after the last whole event seen.
    held: BytesMut,
    usage: Option<Usage>,
    first: Option<Instant>,
    broken: bool,
}

/// Where the last whole event in `buf` ends (after its blank line), if one does.
fn events_end(buf: &[u8]) -> Option<usize> {
    let lf = memchr::memmem::rfind(buf, b"\n\n").map(|i| i + 2);
    let crlf = memchr::memmem::rfind(buf, b"\r\n\r\n").map(|i| i + 4);
    lf.max(crlf)
}

/// Whether whole events may carry what the ledger reads.
fn worth_reading(events: &[u8]) -> bool {
    use memchr::memmem::find;
    find(events, b"\"usage\"").is_some()
        || find(events, b"\"error\"").is_some()
        || find(events, b"response.failed").is_some()
}

impl Metered {
    fn finish(&mut self, kind: EndKind) {
        if let Some(p) = self.pending.take() {
            let end = End {
                kind,
                usage: self.usage,
                first: self.first,
            };
            self.book.write(p, end);
        }
    }

    /// One piece of the stream, read; what goes on to the client (the same bytes, unless the
    /// usage event is taken out).
    fn read(&mut self, bytes: Bytes) -> Bytes {
        self.first.get_or_insert_with(Instant::now);
        // Most pieces are whole events and nothing is held: no copy then.
        let buf = if self.held.is_empty() {
            bytes.clone()
        } else {
            self.held.extend_from_slice(&bytes);
            self.held.split().freeze()
        };
        let end = events_end(&buf).unwrap_or(0);
        let (events, rest) = (buf.slice(..end), buf.slice(end..));
        self.held.extend_from_slice(&rest);
        let mut out = events.clone();
        if worth_reading(&events) {
            out = self.events(&events);
        }
        if self.strip { out } else { bytes }
    }

    /// Whole events read for usage and errors; returned without a usage-only event when it is
    /// to be taken out.
    fn events(&mut self, events: &Bytes) -> Bytes {
        let mut ends: Vec<usize> = memchr::memmem::find_iter(events, b"\n\n")
            .map(|i| i + 2)
            .chain(memchr::memmem::find_iter(events, b"\r\n\r\n").map(|i| i + 4))
            .collect();
        ends.sort_unstable();
        let mut kept = BytesMut::with_capacity(events.len());
        let mut start = 0;
        for end in ends {
            let raw = &events[start..end];
            let at = start;
            start = end;
            let text = String::from_utf8_lossy(raw);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            let data = data.join("\n");
            let mut usage_only = false;
            if data.contains("\"error\"") || data.contains("response.failed") {
                self.broken |= is_error(&data);
            }
            if data.contains("\"usage\"")
                && let Ok(v) = serde_json::from_str::<Value>(&data)
            {
                if let Some(u) = usage_of_event(&v) {
                    self.usage = Some(merge(self.usage, u));
                }
                usage_only =
                    v["choices"].as_array().is_some_and(Vec::is_empty) && v["usage"].is_object();
            }
            if !(self.strip && usage_only) {
                kept.extend_from_slice(&events[at..end]);
            }
        }
        kept.freeze()
    }
}

impl Stream for Metered {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            return match Pin::new(&mut this.body).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    let out = this.read(bytes);
                    if out.is_empty() {
                        continue;
                    }
                    Poll::Ready(Some(Ok(out)))
                }
                Poll::Ready(Some(Err(e))) => {
                    this.broken = true;
                    this.finish(EndKind::Broken);
                    Poll::Ready(Some(Err(e)))
                }
                Poll::Ready(None) => {
                    let kind = if this.broken {
                        EndKind::Broken
                    } else {
                        EndKind::Complete
                    };
                    this.finish(kind);
                    // A stripped stream's last bytes, if they never ended an event.
                    if this.strip && !this.held.is_empty() {
                        return Poll::Ready(Some(Ok(this.held.split().freeze())));
                    }
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.finish(EndKind::Dropped);
    }
}

/// Whether an event says the answer failed: OpenAI's `{"error": …}`, Anthropic's
/// `{"type": "error"}`, the Responses API's `response.failed`.
fn is_error(data: &str) -> bool {
    serde_json::from_str::<Value>(data).is_ok_and(|v| {
        v.get("error").is_some_and(|e| !e.is_null())
            || matches!(v["type"].as_str(), Some("error" | "response.failed"))
    })
}

/// The usage an event carries, in any of the three protocols: `usage` (OpenAI chunks,
/// Anthropic's `message_delta`), `message.usage` (Anthropic's `message_start`),
/// `response.usage` (the Responses API's `response.completed`).
fn usage_of_event(v: &Value) -> Option<Usage> {
    [&v["usage"], &v["message"]["usage"], &v["response"]["usage"]]
        .into_iter()
        .find(|u| u.is_object())
        .map(read_usage)
}

/// The usage of a whole JSON answer (chat, completions, embeddings, Messages, Responses).
fn usage_in(body: &[u8]) -> Option<Usage> {
    #[derive(serde::Deserialize)]
    struct WithUsage {
        usage: Option<Value>,
    }
    let v = serde_json::from_slice::<WithUsage>(body).ok()?.usage?;
    v.is_object().then(|| read_usage(&v))
}

/// A usage object in OpenAI's names or Anthropic's and the Responses API's.
fn read_usage(u: &Value) -> Usage {
    let n = |v: &Value| {
        v.as_u64()
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    let first = |names: &[&Value]| names.iter().map(|v| n(v)).find(|&x| x > 0).unwrap_or(0);
    let prompt = first(&[&u["prompt_tokens"], &u["input_tokens"]]);
    // Anthropic counts cache reads apart from `input_tokens`; OpenAI within them.
    let anthropic_cached = n(&u["cache_read_input_tokens"]);
    let cached = first(&[
        &u["prompt_tokens_details"]["cached_tokens"],
        &u["input_tokens_details"]["cached_tokens"],
    ]) + anthropic_cached;
    let completion = first(&[&u["completion_tokens"], &u["output_tokens"]]);
    let reasoning = first(&[
        &u["completion_tokens_details"]["reasoning_tokens"],
        &u["output_tokens_details"]["reasoning_tokens"],
    ]);
    let mut usage = Usage::new(prompt.saturating_add(anthropic_cached), completion);
    if cached > 0 {
        usage.prompt_tokens_details = Some(smallfirst_protocol::PromptTokensDetails {
            cached_tokens: cached,
        });
    }
    if reasoning > 0 {
        usage.completion_tokens_details = Some(smallfirst_protocol::CompletionTokensDetails {
            reasoning_tokens: reasoning,
        });
    }
    usage
}

/// Two usage events of one answer (Anthropic's input at the start, output at the end).
fn merge(a: Option<Usage>, b: Usage) -> Usage {
    let Some(a) = a else { return b };
    let mut u = Usage::new(
        a.prompt_tokens.max(b.prompt_tokens),
        a.completion_tokens.max(b.completion_tokens),
    );
    u.prompt_tokens_details = b.prompt_tokens_details.or(a.prompt_tokens_details);
    u.completion_tokens_details = b.completion_tokens_details.or(a.completion_tokens_details);
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_is_read_in_every_protocol() {
        let openai = json!({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5,
            "total_tokens": 17, "prompt_tokens_details": {"cached_tokens": 8}}});
        let u = usage_of_event(&openai).expect("usage");
        assert_eq!(
            (u.prompt_tokens, u.cached_tokens(), u.completion_tokens),
            (12, 8, 5)
        );
        let start = json!({"type": "message_start", "message": {"usage": {"input_tokens": 10,
            "cache_read_input_tokens": 30, "output_tokens": 1}}});
        let delta = json!({"type": "message_delta", "usage": {"output_tokens": 7}});
        let u = merge(
            usage_of_event(&start),
            usage_of_event(&delta).expect("usage"),
        );
        assert_eq!(
            (u.prompt_tokens, u.cached_tokens(), u.completion_tokens),
            (40, 30, 7)
        );
        let done = json!({"type": "response.completed", "response": {"usage": {"input_tokens": 9,
            "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 2}}}});
        let u = usage_of_event(&done).expect("usage");
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens()),
            (9, 4, 2)
        );
        assert!(usage_of_event(&json!({"choices": [{"delta": {}}]})).is_none());
        let body =
            br#"{"object": "list", "data": [], "usage": {"prompt_tokens": 3, "total_tokens": 3}}"#;
        assert_eq!(usage_in(body).map(|u| u.prompt_tokens), Some(3));
        assert!(usage_in(b"not json").is_none());
    }

    #[test]
    fn errors_are_seen_in_every_protocol() {
        assert!(is_error(r#"{"error": {"message": "x"}}"#));
        assert!(is_error(
            r#"{"type": "error", "error": {"type": "overloaded_error"}}"#
        ));
        assert!(is_error(r#"{"type": "response.failed", "response": {}}"#));
        assert!(!is_error(
            r#"{"choices": [{"delta": {"content": "\"error\""}}]}"#
        ));
        assert!(!is_error(r#"{"error": null}"#));
    }

    #[test]
    fn ingress_names() {
        assert_eq!(ingress("/v1/chat/completions"), Some("chat"));
        assert_eq!(ingress("/v1/messages/count_tokens"), None);
        assert_eq!(ingress("/health"), None);
    }
}
