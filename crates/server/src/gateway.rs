//! Requests for a remote tier. The tier retries what it can ([`RemoteTier::chat`]); when it
//! still fails in a way another tier may not, the request goes down the tier's fallback chain,
//! ending at the embedded model if the chain leads there. The answer, JSON or SSE, streams back
//! as the tier produced it; a stream that breaks after it began ends with an error event.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use smallfirst_router::{Answer, AnswerStream, BackendError, RemoteTier, WireError};

use crate::{ApiError, AppState, chat};

/// Where a request goes: the tier its `model` names, then that tier's fallbacks.
/// How far down the fallback chain a request may go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chain {
    /// Stop before any tier that is not on this machine.
    pub local_only: bool,
    /// Whether the chain may end at the embedded model. An escalation may not: the local
    /// answer it escalates from already exists and stands if the chain fails.
    pub embedded: bool,
}

pub(crate) async fn forward(
    state: &AppState,
    first: &Arc<RemoteTier>,
    body: &Bytes,
    chain: Chain,
) -> Result<Response, ApiError> {
    let local_only = chain.local_only;
    let mut tier = Arc::clone(first);
    // Tiers that failed on the way, as `name:code`, for the `x-smallfirst-failover` header.
    let mut failed: Vec<String> = Vec::new();
    loop {
        let e = match tier.chat(body).await {
            Ok(answer) => return Ok(respond(tier.name(), answer, &failed)),
            Err(e) => e,
        };
        let next = if e.fails_over() {
            tier.fallback()
        } else {
            None
        };
        let next = next.filter(|n| {
            !local_only || state.is_local_tier(n) || state.remote(n).is_some_and(|t| t.is_local())
        });
        let Some(next) = next else {
            let mut response = error_response(&e);
            stamp(&mut response, tier.name(), &failed);
            return Ok(response);
        };
        tracing::warn!(tier = %tier.name(), fallback = %next, error = %e, "failing over");
        failed.push(format!("{}:{}", tier.name(), e.code()));
        if state.is_local_tier(next) {
            if !chain.embedded {
                let mut response = error_response(&e);
                stamp(&mut response, tier.name(), &failed);
                return Ok(response);
            }
            let mut response = chat::local(state, body, true).await?;
            stamp(&mut response, next, &failed);
            return Ok(response);
        }
        match state.remote(next) {
            Some(t) => tier = Arc::clone(t),
            // Config validation makes every fallback name a tier; keep the error if not.
            None => {
                let mut response = error_response(&e);
                stamp(&mut response, tier.name(), &failed);
                return Ok(response);
            }
        }
    }
}

fn respond(tier: &str, answer: Answer, failed: &[String]) -> Response {
    let mut response = match answer {
        Answer::Json(bytes) => {
            ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
        }
        Answer::Stream(stream) => {
            let mut r = Response::new(Body::from_stream(with_error_event(stream)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
    };
    stamp(&mut response, tier, failed);
    response
}

/// Marks which tier answered and which failed before it.
fn stamp(response: &mut Response, tier: &str, failed: &[String]) {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(tier) {
        headers.insert("x-smallfirst-tier", v);
    }
    if !failed.is_empty()
        && let Ok(v) = HeaderValue::from_str(&failed.join(", "))
    {
        headers.insert("x-smallfirst-failover", v);
    }
}

/// The stream's bytes, its failure (if it fails) turned into a last `data: {"error": …}` event
/// that OpenAI's clients raise as an error, rather than a connection that just ends.
fn with_error_event(
    stream: AnswerStream,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    stream.map(|item| {
        Ok(match item {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(error = %e, "upstream stream broke after it began");
                let event = json!({"error": {
                    "message": e.to_string(),
                    "type": "upstream_error",
                    "param": null,
                    "code": e.code(),
                }});
                Bytes::from(format!("data: {event}\n\n"))
            }
        })
    })
}

/// A failed tier's error as the client sees it.
fn error_response(e: &BackendError) -> Response {
    match e {
        BackendError::Status {
            status,
            body,
            retry_after,
            ..
        } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut r = (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                body.clone(),
            )
                .into_response();
            if let Some(after) = retry_after
                && let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
            {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        BackendError::Wire {
            source: WireError::Unsupported { param, message },
            ..
        } => ApiError::unsupported(param.clone(), message.clone()).into_response(),
        BackendError::Body => ApiError::InvalidJson(e.to_string()).into_response(),
        BackendError::CircuitOpen { retry_in, .. } => {
            let mut r = ApiError::Upstream {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                code: e.code(),
            }
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&retry_in.as_secs().max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        BackendError::MissingKey { .. } | BackendError::Client { .. } => {
            ApiError::Internal(e.to_string()).into_response()
        }
        BackendError::Timeout { .. } => ApiError::Upstream {
            status: StatusCode::GATEWAY_TIMEOUT,
            message: e.to_string(),
            code: e.code(),
        }
        .into_response(),
        BackendError::Unreachable { .. }
        | BackendError::Wire { .. }
        | BackendError::StreamBroken { .. } => ApiError::Upstream {
            status: StatusCode::BAD_GATEWAY,
            message: e.to_string(),
            code: e.code(),
        }
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;
    use serde_json::Value;

    use super::*;

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
        let r = error_response(&e);
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
            let (status, v) = json(error_response(&e)).await;
            assert_eq!(status, want_status, "{e}");
            assert_eq!(v["error"]["code"], want_code, "{e}");
        }
        let (status, v) = json(error_response(&BackendError::Wire {
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
        let r = respond("f", Answer::Stream(stream), &["g:upstream_timeout".into()]);
        assert_eq!(r.headers()["x-smallfirst-failover"], "g:upstream_timeout");
        let bytes = r.into_body().collect().await.expect("body").to_bytes();
        let text = std::str::from_utf8(&bytes).expect("utf-8");
        let last = text.trim_end().rsplit("\n\n").next().expect("an event");
        let v: Value = serde_json::from_str(last.trim_start_matches("data: ")).expect("json event");
        assert_eq!(v["error"]["code"], "upstream_stream_broken");
    }
}
