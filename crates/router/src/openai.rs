//! The `openai` backend: any OpenAI-compatible server (OpenAI, Ollama, vLLM, llama.cpp server,
//! another smallfirst). The request goes through as the client sent it, with only `model`
//! replaced by the tier's and spliced in without re-serializing the rest; the answer comes
//! back as the upstream sent it, checked but not rebuilt.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use tokio::time::Instant;
use url::Url;

use crate::Secret;
use crate::backend::{
    Answer, AnswerStream, Backend, BackendError, BoxFuture, Native, Protocol, primed,
};
use crate::config::{Faults, Remote};
use crate::http::{Http, endpoint};
use crate::splice::with_model;
use crate::wire::WireError;

#[derive(Debug)]
pub struct OpenAiBackend {
    model: String,
    endpoint: Url,
    /// `/completions` and `/embeddings`, beside the chat endpoint.
    completions: Url,
    embeddings: Url,
    key: Option<Secret>,
    http: Http,
}

impl OpenAiBackend {
    pub fn new(tier: &str, remote: &Remote, faults: &Faults) -> Result<Self, BackendError> {
        Ok(OpenAiBackend {
            model: remote.model.clone(),
            endpoint: endpoint(&remote.base_url, "chat/completions"),
            completions: endpoint(&remote.base_url, "completions"),
            embeddings: endpoint(&remote.base_url, "embeddings"),
            key: Secret::from_env(tier, remote.api_key_env.as_deref())?,
            http: Http::new(tier, faults)?,
        })
    }

    async fn try_chat(&self, request: &Bytes, deadline: Instant) -> Result<Answer, BackendError> {
        self.post(self.endpoint.clone(), request, deadline).await
    }

    async fn post(
        &self,
        url: Url,
        request: &Bytes,
        deadline: Instant,
    ) -> Result<Answer, BackendError> {
        let (body, stream) = with_model(request, &self.model)?;
        let mut post = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = &self.key {
            post = post.bearer_auth(key.expose());
        }
        let response = self
            .http
            .send(post, deadline, stream, error_from_wire)
            .await?;
        let sse = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if sse {
            let chunks = self.http.chunks(response, deadline);
            return primed(self.http.tier(), until_done(self.http.tier(), chunks)).await;
        }
        let body = self.http.body(response, deadline).await?;
        // Checked, not rebuilt: a truncated or garbled answer is a failed try.
        if let Err(e) = serde_json::from_slice::<IgnoredAny>(&body) {
            return Err(BackendError::Wire {
                tier: self.http.tier().into(),
                source: WireError::Malformed(format!("not JSON: {e}")),
            });
        }
        Ok(Answer::Json(body))
    }
}

impl Backend for OpenAiBackend {
    fn model(&self) -> &str {
        &self.model
    }

    fn speaks(&self, protocol: Protocol) -> bool {
        matches!(
            protocol,
            Protocol::OpenAiChat | Protocol::OpenAiCompletions | Protocol::OpenAiEmbeddings
        )
    }

    fn pass<'a>(
        &'a self,
        native: &'a Native,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Answer, BackendError>> {
        let url = match native.protocol {
            Protocol::OpenAiCompletions => self.completions.clone(),
            Protocol::OpenAiEmbeddings => self.embeddings.clone(),
            _ => self.endpoint.clone(),
        };
        Box::pin(async move { self.post(url, &native.body, deadline).await })
    }

    fn chat<'a>(
        &'a self,
        request: &'a Bytes,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Answer, BackendError>> {
        Box::pin(self.try_chat(request, deadline))
    }
}

/// The upstream's SSE bytes passed on whole events at a time (a break mid-event never leaves
/// half an event before the error), ending at `data: [DONE]`, or in an error when the stream
/// stops before it. Events are held back until one carries content, a tool call or a finish
/// (keep-alive comments and the role-only first chunk do not count), so that an upstream that
/// fails after those fails the try, which is retried, rather than a stream under way.
fn until_done(tier: &str, chunks: crate::http::Chunks) -> AnswerStream {
    struct State {
        chunks: crate::http::Chunks,
        /// Bytes of an event not yet complete.
        carry: BytesMut,
        /// Whole events held until one carries something; `None` once one has.
        held: Option<BytesMut>,
        tier: String,
        over: bool,
    }
    let state = State {
        chunks,
        carry: BytesMut::new(),
        held: Some(BytesMut::new()),
        tier: tier.into(),
        over: false,
    };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.over {
                return None;
            }
            match s.chunks.next().await {
                Some(Ok(chunk)) => {
                    let whole = if s.carry.is_empty() && complete_end(&chunk) == Some(chunk.len()) {
                        // The common case: the chunk is whole events, passed on as it is.
                        chunk
                    } else {
                        s.carry.extend_from_slice(&chunk);
                        match complete_end(&s.carry) {
                            Some(end) => s.carry.split_to(end).freeze(),
                            None => continue,
                        }
                    };
                    s.over = has_done(&whole);
                    if let Some(held) = &mut s.held {
                        held.extend_from_slice(&whole);
                        if !s.over && !carries_something(&whole) {
                            continue;
                        }
                        let out = held.split().freeze();
                        s.held = None;
                        return Some((Ok(out), s));
                    }
                    return Some((Ok(whole), s));
                }
                Some(Err(e)) => {
                    s.over = true;
                    return Some((Err(e), s));
                }
                None => {
                    s.over = true;
                    if has_done(&s.carry) {
                        let mut rest = s.held.take().unwrap_or_default();
                        rest.extend_from_slice(&s.carry.split());
                        return Some((Ok(rest.freeze()), s));
                    }
                    let e = BackendError::StreamBroken {
                        tier: s.tier.clone(),
                        reason: "it ended before `data: [DONE]`".into(),
                    };
                    return Some((Err(e), s));
                }
            }
        }
    }))
}

/// Whether whole `events` hold one with content, a tool call, a finish or an error: the parsed
/// look is only taken until the first such event.
fn carries_something(events: &[u8]) -> bool {
    let text = String::from_utf8_lossy(events);
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .any(|data| {
            let Ok(v) = serde_json::from_str::<Value>(data.trim()) else {
                return false;
            };
            v.get("error").is_some()
                || v["choices"].as_array().is_some_and(|cs| {
                    cs.iter().any(|c| {
                        let d = &c["delta"];
                        !c["finish_reason"].is_null()
                            || c["text"].as_str().is_some_and(|t| !t.is_empty())
                            || d["content"].as_str().is_some_and(|t| !t.is_empty())
                            || d["tool_calls"].is_array()
                            || d["refusal"].as_str().is_some_and(|t| !t.is_empty())
                    })
                })
        })
}

/// Where the last complete event in `bytes` ends (just past its blank line), if any.
fn complete_end(bytes: &[u8]) -> Option<usize> {
    (1..bytes.len())
        .rev()
        .find(|&i| {
            bytes[i] == b'\n'
                && (bytes[i - 1] == b'\n'
                    || (i >= 2 && bytes[i - 1] == b'\r' && bytes[i - 2] == b'\n'))
        })
        .map(|i| i + 1)
}

/// Whether `events` hold the end of the stream, `data: [DONE]` (with or without the space).
fn has_done(events: &[u8]) -> bool {
    events.windows(11).any(|w| w == b"data:[DONE]")
        || events.windows(12).any(|w| w == b"data: [DONE]")
}

/// An upstream error body as OpenAI's error object: kept as it is when it already has that
/// shape, wrapped when not.
pub(crate) fn error_from_wire(status: u16, body: &[u8]) -> Value {
    if let Ok(v) = serde_json::from_slice::<Value>(body)
        && v.get("error").is_some_and(Value::is_object)
    {
        return v;
    }
    let text = String::from_utf8_lossy(body);
    let excerpt: String = text.chars().take(300).collect();
    json!({"error": {
        "message": format!("the upstream answered {status} without an OpenAI error body: {}", excerpt.trim()),
        "type": "upstream_error",
        "param": null,
        "code": "upstream_error",
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_model_changes() {
        let body = br#"{"model":"frontier","messages":[{"role":"user","content":"hi \"there\""}],"stream":true,"x_extra":{"cache_control":{"type":"ephemeral"}}}"#;
        let (out, stream) = with_model(body, "gpt-4o-mini").expect("object");
        assert!(stream);
        assert_eq!(
            std::str::from_utf8(&out).expect("utf-8"),
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi \"there\""}],"stream":true,"x_extra":{"cache_control":{"type":"ephemeral"}}}"#,
            "every other byte as sent"
        );
        let (out, stream) =
            with_model(br#" { "messages" : [ ] , "m\u00f6del" : 1 } "#, "a\"b").expect("object");
        assert!(!stream);
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["model"], "a\"b");
        assert_eq!(
            v["mödel"], 1,
            "escaped keys are written back escaped or not, equal"
        );
        assert!(with_model(b"[1]", "m").is_err());
        assert!(with_model(b"{\"a\":1} x", "m").is_err());
        assert!(with_model(b"{\"a\":", "m").is_err());
    }

    #[test]
    fn errors_keep_an_openai_body_and_wrap_others() {
        let body = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        assert_eq!(
            error_from_wire(429, body)["error"]["code"],
            "rate_limit_exceeded"
        );
        let v = error_from_wire(502, b"<html>502 Bad Gateway</html>");
        assert_eq!(v["error"]["code"], "upstream_error");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("502 Bad Gateway"))
        );
    }

    #[tokio::test]
    async fn a_stream_without_done_ends_in_an_error() {
        async fn run(parts: &[&'static str]) -> Vec<Result<Bytes, String>> {
            let chunks: crate::http::Chunks = Box::pin(futures::stream::iter(
                parts
                    .iter()
                    .map(|p| Ok(Bytes::from_static(p.as_bytes())))
                    .collect::<Vec<_>>(),
            ));
            until_done("t", chunks)
                .map(|r| r.map_err(|e| e.code().to_string()))
                .collect()
                .await
        }
        const ROLE: &str = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
        const HI: &str =
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n";
        let whole = run(&[ROLE, HI, "data: [DO", "NE]\n\n"]).await;
        let texts: Vec<String> = whole
            .iter()
            .map(|r| String::from_utf8(r.clone().expect("ok").to_vec()).expect("utf-8"))
            .collect();
        assert_eq!(
            texts,
            [format!("{ROLE}{HI}"), "data: [DONE]\n\n".to_string()],
            "the role chunk waits for content"
        );
        let cut = run(&[ROLE, HI, "data: {\"choices\""]).await;
        assert_eq!(cut.len(), 2, "the half event is not passed on");
        assert_eq!(cut[1], Err("upstream_stream_broken".to_string()));
        // Nothing but keep-alives and the role before the break: no bytes out, a failed try.
        let early = run(&[": keep-alive\n\n", ROLE]).await;
        assert_eq!(early, [Err("upstream_stream_broken".to_string())]);
        let split = run(&[
            "data: {\"choices\":[{\"delta\":{\"content\"",
            ":\"a\"},\"finish_reason\":null}]}\n\ndata: {}\r\n\r\n",
            "data:[DONE]\n\n",
            "data: late\n\n",
        ])
        .await;
        let text: Vec<String> = split
            .iter()
            .map(|r| String::from_utf8(r.clone().expect("ok").to_vec()).expect("utf-8"))
            .collect();
        assert_eq!(
            text,
            [
                "data: {\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":null}]}\n\ndata: {}\r\n\r\n",
                "data:[DONE]\n\n"
            ],
            "ends at [DONE]"
        );
    }
}
