//! What the translating backends (Anthropic, Gemini) share on the way back: a provider's SSE
//! byte stream turned into OpenAI SSE bytes by a provider's event translator, complete only if
//! a choice finished, and request identity for the objects they build.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use serde_json::Value;

use tokio::time::Instant;

use crate::backend::{Answer, AnswerStream, BackendError, primed};
use crate::http::{Chunks, Http};
use crate::sse::{SseEvent, SseParser};
use crate::wire::{Meta, WireError};

/// A provider's stream events → OpenAI chunk objects.
pub(crate) trait Events: Send + 'static {
    fn event(&mut self, event: &SseEvent) -> Result<Vec<Value>, WireError>;

    /// Chunks still owed when the provider's stream ends.
    fn end(&mut self) -> Vec<Value> {
        Vec::new()
    }
}

/// An event's data as JSON, or the provider sent something malformed.
pub(crate) fn event_json(event: &SseEvent) -> Result<Value, WireError> {
    serde_json::from_str(&event.data)
        .map_err(|e| WireError::Malformed(format!("an event that is not JSON: {e}")))
}

/// A fresh identity for one answer.
pub(crate) fn meta() -> Meta {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let a = RandomState::new().hash_one(n);
    let b = RandomState::new().hash_one(a);
    Meta {
        id: format!("chatcmpl-{a:016x}{b:08x}"),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// The request as JSON, and whether it asks for a stream and for usage in it.
pub(crate) fn read_request(request: &[u8]) -> Result<(Value, bool, bool), BackendError> {
    let v: Value = serde_json::from_slice(request).map_err(|_| BackendError::Body)?;
    if !v.is_object() {
        return Err(BackendError::Body);
    }
    let stream = v["stream"].as_bool().unwrap_or(false);
    let usage = v["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    Ok((v, stream, usage))
}

pub(crate) fn to_bytes(tier: &str, value: &Value) -> Result<Bytes, BackendError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| BackendError::Wire {
            tier: tier.into(),
            source: WireError::Malformed(e.to_string()),
        })
}

/// A provider's successful response as an OpenAI answer: a stream translated event by event
/// (`events`), or a whole answer translated by `whole`.
pub(crate) async fn answer<E: Events>(
    http: &Http,
    response: reqwest::Response,
    deadline: Instant,
    stream: Option<E>,
    whole: impl FnOnce(&Value) -> Result<Value, WireError>,
) -> Result<Answer, BackendError> {
    let tier = http.tier();
    if let Some(events) = stream {
        let chunks = http.chunks(response, deadline);
        return primed(tier, self::stream(tier, chunks, events)).await;
    }
    let body = http.body(response, deadline).await?;
    let answer: Value = serde_json::from_slice(&body).map_err(|e| BackendError::Wire {
        tier: tier.into(),
        source: WireError::Malformed(format!("not JSON: {e}")),
    })?;
    let completion = whole(&answer).map_err(|source| BackendError::Wire {
        tier: tier.into(),
        source,
    })?;
    Ok(Answer::Json(to_bytes(tier, &completion)?))
}

/// The provider's SSE bytes as OpenAI SSE bytes, ending in `data: [DONE]` when a choice
/// finished, in an error when the stream stopped before that or the provider reported one.
/// Nothing is let out before the first chunk with content, a tool call or a finish: a provider
/// that fails after its opening events (Anthropic's `message_start`, then `overloaded_error`)
/// fails the try, which is retried, rather than a stream already under way.
pub(crate) fn stream(tier: &str, chunks: Chunks, events: impl Events) -> AnswerStream {
    struct State<E> {
        tier: String,
        chunks: Chunks,
        parser: SseParser,
        events: E,
        finished: bool,
        /// Chunks held back until one carries something.
        held: Option<BytesMut>,
        over: bool,
    }
    let state = State {
        tier: tier.into(),
        chunks,
        parser: SseParser::new(),
        events,
        finished: false,
        held: Some(BytesMut::new()),
        over: false,
    };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.over {
                return None;
            }
            let (events, ended) = match s.chunks.next().await {
                Some(Ok(bytes)) => (s.parser.push(&bytes), false),
                Some(Err(e)) => {
                    s.over = true;
                    return Some((Err(e), s));
                }
                None => (s.parser.finish().into_iter().collect(), true),
            };
            let mut out = BytesMut::new();
            for event in &events {
                match s.events.event(event) {
                    Ok(objects) => {
                        if write(&mut out, &objects, &mut s.finished)
                            && let Some(mut held) = s.held.take()
                        {
                            held.put_slice(&out);
                            out = held;
                        }
                    }
                    Err(source) => {
                        s.over = true;
                        let e = BackendError::Wire {
                            tier: s.tier.clone(),
                            source,
                        };
                        // What came before the error still reaches the client, then the error.
                        if out.is_empty() || s.held.is_some() {
                            return Some((Err(e), s));
                        }
                        s.chunks = Box::pin(futures::stream::once(async move { Err(e) }));
                        s.over = false;
                        return Some((Ok(out.freeze()), s));
                    }
                }
            }
            if ended {
                let rest = s.events.end();
                write(&mut out, &rest, &mut s.finished);
                s.over = true;
                if !s.finished {
                    let e = BackendError::StreamBroken {
                        tier: s.tier.clone(),
                        reason: "it ended before any choice finished".into(),
                    };
                    if out.is_empty() || s.held.is_some() {
                        return Some((Err(e), s));
                    }
                    s.chunks = Box::pin(futures::stream::once(async move { Err(e) }));
                    s.over = false;
                    return Some((Ok(out.freeze()), s));
                }
                out.put_slice(b"data: [DONE]\n\n");
            }
            if let Some(held) = &mut s.held {
                held.put_slice(&out);
            } else if !out.is_empty() {
                return Some((Ok(out.freeze()), s));
            }
        }
    }))
}

/// Writes `objects` as SSE events; whether any carried content, a tool call or a finish.
fn write(out: &mut BytesMut, objects: &[Value], finished: &mut bool) -> bool {
    let mut carried = false;
    for object in objects {
        let choices = object["choices"].as_array().map_or(&[][..], Vec::as_slice);
        if choices.iter().any(|c| !c["finish_reason"].is_null()) {
            *finished = true;
            carried = true;
        }
        carried |= choices.iter().any(|c| {
            let d = &c["delta"];
            d["content"].as_str().is_some_and(|t| !t.is_empty()) || d["tool_calls"].is_array()
        });
        out.put_slice(b"data: ");
        // Writing a `Value` to memory cannot fail.
        let _ = serde_json::to_writer((&mut *out).writer(), object);
        out.put_slice(b"\n\n");
    }
    carried
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Each `data:` becomes one chunk; `stop` finishes; `bad` is a provider error.
    struct Echo;

    impl Events for Echo {
        fn event(&mut self, e: &SseEvent) -> Result<Vec<Value>, WireError> {
            match e.data.as_str() {
                "bad" => Err(WireError::Upstream {
                    kind: "overloaded_error".into(),
                    message: "Overloaded".into(),
                }),
                "stop" => Ok(vec![json!({"choices": [{"finish_reason": "stop"}]})]),
                "role" => Ok(vec![
                    json!({"choices": [{"delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}),
                ]),
                text => Ok(vec![
                    json!({"choices": [{"delta": {"content": text}, "finish_reason": null}]}),
                ]),
            }
        }
    }

    async fn run(parts: &[&'static str]) -> (String, Option<String>) {
        let chunks: Chunks = Box::pin(futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p.as_bytes())))
                .collect::<Vec<_>>(),
        ));
        let mut s = stream("t", chunks, Echo);
        let mut text = String::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => text.push_str(std::str::from_utf8(&b).expect("utf-8")),
                Err(e) => return (text, Some(e.code().to_string())),
            }
        }
        (text, None)
    }

    #[tokio::test]
    async fn a_finished_stream_ends_in_done() {
        let (text, err) = run(&["data: a\n\nda", "ta: stop\n\n"]).await;
        assert_eq!(err, None);
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        assert_eq!(text.matches("data: ").count(), 3);
    }

    #[tokio::test]
    async fn an_unfinished_or_failed_stream_ends_in_an_error_after_what_came() {
        let (text, err) = run(&["data: a\n\n", "data: b\n\n"]).await;
        assert_eq!(err.as_deref(), Some("upstream_stream_broken"));
        assert_eq!(text.matches("data: ").count(), 2);
        let (text, err) = run(&["data: a\n\ndata: bad\n\ndata: c\n\n"]).await;
        assert_eq!(err.as_deref(), Some("upstream_error"));
        assert!(text.contains("\"a\"") && !text.contains("\"c\""));
    }

    #[tokio::test]
    async fn a_failure_before_any_content_lets_nothing_out() {
        for parts in [
            &["data: role\n\n", "data: bad\n\n"][..],
            &["data: role\n\n"][..],
        ] {
            let (text, err) = run(parts).await;
            assert!(text.is_empty(), "{text}");
            assert!(err.is_some());
        }
        let (text, err) = run(&["data: role\n\ndata: x\n\n", "data: stop\n\n"]).await;
        assert_eq!(err, None);
        assert!(
            text.starts_with("data: {\"choices\":[{\"delta\":{\"role\""),
            "{text}"
        );
    }
}
