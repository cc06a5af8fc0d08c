//! An [`Outcome`] as HTTP, each part in one place: the `x-smallfirst-*` headers and
//! `server-timing` (every ingress), the OpenAI chat body (JSON, or SSE that ends in an error
//! event if a tier's stream breaks) with its `smallfirst` member, and a failed tier's error as
//! the client sees it.

use std::convert::Infallible;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures::StreamExt;
use serde_json::{Value, json};
use smallfirst_protocol::Usage;
use smallfirst_router::sse::{SseEvent, SseParser};
use smallfirst_router::{AnswerStream, BackendError, WireError};

use crate::ApiError;
use crate::answer;
use crate::gateway::{Failure, Outcome, Reply};

pub(crate) const TASK_HEADER: &str = "x-smallfirst-task";

/// The most characters of a header value built from text a client may have sent (a model's
/// name goes into `x-smallfirst-reason`).
const MAX_HEADER: usize = 256;

/// A header value from any text: characters a header cannot carry become `?`, and past
/// [`MAX_HEADER`] characters it is cut (ending `...`).
pub(crate) fn header_value(text: &str) -> HeaderValue {
    let mut clean: String = text
        .chars()
        .take(MAX_HEADER)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect();
    if text.chars().nth(MAX_HEADER).is_some() {
        clean.push_str("...");
    }
    HeaderValue::from_str(&clean).unwrap_or(HeaderValue::from_static("?"))
}

/// The outcome's facts as headers: which tier answered, why, how confident, whether
/// escalated, which tiers failed on the way, the task, and how long deciding took; and for
/// the ledger, as the response's [`Facts`](crate::ledger::Facts).
pub(crate) fn mark(response: &mut Response, outcome: &Outcome) {
    response
        .extensions_mut()
        .insert(crate::ledger::Facts::of(outcome));
    let h = response.headers_mut();
    if let Some(t) = &outcome.tier {
        h.insert("x-smallfirst-tier", header_value(t));
    }
    let reason = &outcome.reason;
    h.insert(
        "x-smallfirst-reason",
        header_value(&format!("{}; {}", reason.code, reason.words)),
    );
    let c = outcome.confidence.map_or("none".to_string(), |c| {
        format!("{:.3}; {}", c.value, c.method.as_str())
    });
    h.insert("x-smallfirst-confidence", header_value(&c));
    h.insert(
        "x-smallfirst-escalated",
        HeaderValue::from_static(if outcome.escalated { "true" } else { "false" }),
    );
    if !outcome.failover.is_empty() {
        let failed: Vec<String> = outcome
            .failover
            .iter()
            .map(|f| format!("{}:{}", f.tier, f.code))
            .collect();
        h.insert("x-smallfirst-failover", header_value(&failed.join(", ")));
    }
    if let Some((task, source)) = &outcome.task {
        h.insert(
            TASK_HEADER,
            header_value(&format!("{task}; {}", source.as_str())),
        );
    }
    if let Some(d) = outcome.timings.decide
        && let Ok(v) = HeaderValue::from_str(&format!("decide;dur={:.3}", d.as_secs_f64() * 1000.0))
    {
        h.insert("server-timing", v);
    }
}

/// The `smallfirst` body member: what is known of a judged embedded answer.
pub(crate) fn info(outcome: &Outcome) -> Option<Value> {
    let c = outcome.confidence.filter(|_| !outcome.escalated)?;
    let mut info = json!({
        "tier": outcome.tier,
        "reason": outcome.reason.code,
        "confidence": {"value": round3(c.value), "method": c.method.as_str()},
    });
    if let Some(label) = &outcome.label {
        info["label"] = json!({
            "label": label.label,
            "probability": round3(label.probability),
            "margin": label.margin.map(round3),
        });
    }
    Some(info)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The outcome as an OpenAI chat completion response: JSON, or SSE when the client asked
/// for a stream (a whole answer is then replayed as events).
pub(crate) fn chat(mut outcome: Outcome, stream: bool, include_usage: bool) -> Response {
    let info = info(&outcome);
    let answer = outcome.take_answer();
    let mut response = match answer {
        Ok(Reply::Completion(mut c)) => {
            c.smallfirst = info;
            if stream {
                sse(answer::replay(*c, include_usage))
            } else {
                Json(*c).into_response()
            }
        }
        Ok(Reply::Json(bytes)) => {
            ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
        }
        Ok(Reply::Stream(s)) => sse(s),
        // A chat completion is never passed through in another protocol.
        Ok(Reply::Native(_)) => {
            ApiError::Internal("an answer in another protocol".into()).into_response()
        }
        Err(Failure::Request(e)) => e.into_response(),
        Err(Failure::Tier(e)) => tier_error(&e),
    };
    mark(&mut response, &outcome);
    response
}

/// SSE bytes as a response; a stream that breaks after it began ends with an error event.
pub(crate) fn sse(stream: AnswerStream) -> Response {
    event_stream(Body::from_stream(with_error_event(stream)))
}

pub(crate) fn event_stream(body: Body) -> Response {
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The stream's bytes, its failure (if it fails) turned into a last `data: {"error": …}` event
/// that OpenAI's clients raise as an error, rather than a connection that just ends.
fn with_error_event(
    stream: AnswerStream,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    stream.map(|item| {
        Ok(match item {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(error = %e, "upstream stream broke after it began");
                answer::sse_event(&json!({"error": {
                    "message": e.to_string(),
                    "type": "upstream_error",
                    "param": null,
                    "code": e.code(),
                }}))
            }
        })
    })
}

/// Another protocol's stream events written from an OpenAI chunk stream (Anthropic's, the
/// Responses API's). The reading is shared ([`Reader`]); a translator only writes.
pub(crate) trait Translate: Send + 'static {
    /// The first chunk came (`{}` when the stream ended without one).
    fn start(&mut self, chunk: &Value, out: &mut BytesMut);

    /// A piece of the answer's text.
    fn text(&mut self, text: &str, out: &mut BytesMut);

    /// A tool call's delta: its `index`, with `id` and `function.name` on the first, pieces
    /// of `function.arguments`.
    fn call(&mut self, call: &Value, out: &mut BytesMut);

    /// `[DONE]`: the answer ended, for `finish` (an OpenAI `finish_reason`), with `usage`.
    fn end(&mut self, finish: Option<&str>, usage: Option<&Usage>, out: &mut BytesMut);

    /// The stream failed: an error event.
    fn fail(&mut self, status: u16, message: &str, out: &mut BytesMut);
}

/// Reads OpenAI chunk events for a [`Translate`]: starts it once, hands it text and calls,
/// keeps the finish and the usage for its end, and turns a stream that is not JSON or carries
/// an error into its error event. Nothing follows an end or an error.
pub(crate) struct Reader<T> {
    translator: T,
    started: bool,
    finish: Option<String>,
    usage: Option<Usage>,
    over: bool,
}

impl<T: Translate> Reader<T> {
    pub(crate) fn new(translator: T) -> Self {
        Reader {
            translator,
            started: false,
            finish: None,
            usage: None,
            over: false,
        }
    }

    /// Whether the stream is over (ended or failed).
    pub(crate) fn over(&self) -> bool {
        self.over
    }

    /// One OpenAI event (`[DONE]` included).
    pub(crate) fn push(&mut self, e: &SseEvent, out: &mut BytesMut) {
        if self.over {
            return;
        }
        if e.data.trim() == "[DONE]" {
            if !self.started {
                self.started = true;
                self.translator.start(&json!({}), out);
            }
            self.translator
                .end(self.finish.as_deref(), self.usage.as_ref(), out);
            self.over = true;
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&e.data) else {
            self.fail(502, "the tier sent an event that is not JSON", out);
            return;
        };
        if let Some(err) = chunk.get("error") {
            let message = err["message"].as_str().unwrap_or("the answer failed");
            self.fail(500, message, out);
            return;
        }
        if !self.started {
            self.started = true;
            self.translator.start(&chunk, out);
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object())
            && let Ok(u) = serde_json::from_value::<Usage>(u.clone())
        {
            self.usage = Some(u);
        }
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            let delta = &choice["delta"];
            if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
                self.translator.text(text, out);
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                self.translator.call(call, out);
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                self.finish = Some(f.to_string());
            }
        }
    }

    /// The stream failed: the translator's error event, and nothing after it.
    pub(crate) fn fail(&mut self, status: u16, message: &str, out: &mut BytesMut) {
        if !self.over {
            self.translator.fail(status, message, out);
            self.over = true;
        }
    }
}

/// An OpenAI chunk stream as another protocol's event stream; a stream that breaks, or ends
/// before `[DONE]`, ends with the translator's error event.
pub(crate) fn translated(stream: AnswerStream, translator: impl Translate) -> Response {
    struct State<T> {
        stream: AnswerStream,
        parser: SseParser,
        reader: Reader<T>,
    }
    let state = State {
        stream,
        parser: SseParser::new(),
        reader: Reader::new(translator),
    };
    let body = futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.reader.over() {
                return None;
            }
            let mut out = BytesMut::new();
            match s.stream.next().await {
                Some(Ok(bytes)) => {
                    for e in s.parser.push(&bytes) {
                        s.reader.push(&e, &mut out);
                    }
                }
                Some(Err(e)) => {
                    s.reader
                        .fail(tier_status(&e).as_u16(), &e.to_string(), &mut out);
                }
                None => {
                    if let Some(e) = s.parser.finish() {
                        s.reader.push(&e, &mut out);
                    }
                    s.reader
                        .fail(502, "the answer ended before it was complete", &mut out);
                }
            }
            if !out.is_empty() {
                return Some((Ok::<_, Infallible>(out.freeze()), s));
            }
        }
    });
    event_stream(Body::from_stream(body))
}

/// The status a failed tier's error is answered with.
pub(crate) fn tier_status(e: &BackendError) -> StatusCode {
    match e {
        BackendError::Status { status, .. } => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
        }
        BackendError::Wire {
            source: WireError::Unsupported { .. },
            ..
        }
        | BackendError::Body => StatusCode::BAD_REQUEST,
        BackendError::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
        BackendError::MissingKey { .. } | BackendError::Client { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        BackendError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        BackendError::Unreachable { .. }
        | BackendError::Wire { .. }
        | BackendError::StreamBroken { .. } => StatusCode::BAD_GATEWAY,
    }
}

/// How long a failed tier asks to be left alone, as `Retry-After` seconds.
pub(crate) fn retry_after(e: &BackendError) -> Option<HeaderValue> {
    let after = e.retry_after()?;
    HeaderValue::from_str(&after.as_secs().max(1).to_string()).ok()
}

/// A failed tier's error as an OpenAI client sees it: an upstream's own error body and
/// status kept, the path's failures named by kind.
pub(crate) fn tier_error(e: &BackendError) -> Response {
    let status = tier_status(e);
    let mut r = match e {
        BackendError::Status { body, .. } => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.clone(),
        )
            .into_response(),
        BackendError::Wire {
            source: WireError::Unsupported { param, message },
            ..
        } => ApiError::unsupported(param.clone(), message.clone()).into_response(),
        BackendError::Body => ApiError::InvalidJson(e.to_string()).into_response(),
        BackendError::MissingKey { .. } | BackendError::Client { .. } => {
            ApiError::Internal(e.to_string()).into_response()
        }
        _ => ApiError::Upstream {
            status,
            message: e.to_string(),
            code: e.code(),
        }
        .into_response(),
    };
    if let Some(v) = retry_after(e) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;

    use super::*;

    #[test]
    fn header_values_are_clean_and_short() {
        let v = header_value(&format!("model=a\r\nb{}", "x".repeat(10_000)));
        let v = v.to_str().expect("visible ascii");
        assert!(
            v.starts_with("model=a??b") && v.ends_with("...") && v.len() <= 260,
            "{v}"
        );
    }

    async fn json(response: Response) -> (StatusCode, Value) {
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    #[tokio::test]
    async fn an_upstream_error_keeps_its_status_body_and_retry_after() {
        let e = BackendError::Status {
            tier: "frontier".into(),
            status: 429,
            message: "Rate limit reached".into(),
            body: Bytes::from_static(br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#),
            retry_after: Some(Duration::from_secs(7)),
        };
        let r = tier_error(&e);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        let (status, v) = json(r).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    }

    #[tokio::test]
    async fn failures_of_the_path_name_their_kind() {
        let cases = [
            (
                BackendError::Timeout {
                    tier: "f".into(),
                    what: "no response head",
                    after: Duration::from_secs(1),
                },
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
            ),
            (
                BackendError::CircuitOpen {
                    tier: "f".into(),
                    retry_in: Duration::from_secs(3),
                },
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_circuit_open",
            ),
            (
                BackendError::Wire {
                    tier: "f".into(),
                    source: WireError::Malformed("x".into()),
                },
                StatusCode::BAD_GATEWAY,
                "upstream_malformed",
            ),
        ];
        for (e, want_status, want_code) in cases {
            let (status, v) = json(tier_error(&e)).await;
            assert_eq!(status, want_status, "{e}");
            assert_eq!(v["error"]["code"], want_code, "{e}");
        }
        let (status, v) = json(tier_error(&BackendError::Wire {
            tier: "f".into(),
            source: WireError::Unsupported {
                param: "n".into(),
                message: "one choice only".into(),
            },
        }))
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"]["param"], "n");
    }

    #[tokio::test]
    async fn a_broken_stream_ends_with_an_error_event() {
        let stream: AnswerStream = Box::pin(futures::stream::iter(vec![
            Ok(Bytes::from_static(b"data: {\"choices\":[]}\n\n")),
            Err(BackendError::StreamBroken {
                tier: "f".into(),
                reason: "connection reset".into(),
            }),
        ]));
        let bytes = sse(stream)
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = std::str::from_utf8(&bytes).expect("utf-8");
        let last = text.trim_end().rsplit("\n\n").next().expect("an event");
        let v: Value = serde_json::from_str(last.trim_start_matches("data: ")).expect("json event");
        assert_eq!(v["error"]["code"], "upstream_stream_broken");
    }
}
