//! Requests for an upstream tier: the body goes through as the client sent it (only `model`
//! becomes the tier's), and the answer, JSON or SSE, streams back as the upstream sends it.
//! An upstream error that is already in OpenAI's shape keeps its body and status; any other
//! becomes one, with the upstream's status kept.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;
use smallfirst_router::{OpenAiUpstream, UpstreamError};

use crate::ApiError;

/// Most of an upstream's error body that is read to see whether it is OpenAI-shaped.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// An upstream tier the server can send requests to.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub tier: String,
    pub backend: OpenAiUpstream,
}

impl Upstream {
    /// Whether a request's `model` means this tier: its name or its model.
    pub(crate) fn answers_to(&self, model: &str) -> bool {
        model == self.tier || model == self.backend.model()
    }
}

pub(crate) async fn forward(upstream: &Upstream, body: &Bytes) -> Result<Response, ApiError> {
    let reply = upstream
        .backend
        .chat(body)
        .await
        .map_err(|e| upstream_error(&e))?;
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let tier =
        HeaderValue::from_str(&upstream.tier).unwrap_or(HeaderValue::from_static("upstream"));
    if !status.is_success() {
        let mut bytes = Vec::new();
        let mut stream = reply.body;
        while let Some(Ok(chunk)) = stream.next().await {
            bytes.extend_from_slice(&chunk);
            if bytes.len() >= ERROR_BODY_LIMIT {
                break;
            }
        }
        let mut response = error_response(&upstream.tier, status, &bytes);
        response.headers_mut().insert("x-smallfirst-tier", tier);
        return Ok(response);
    }
    let mut response = Response::new(Body::from_stream(reply.body));
    *response.status_mut() = status;
    if let Some(ct) = reply
        .content_type
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response.headers_mut().insert("x-smallfirst-tier", tier);
    Ok(response)
}

/// An upstream's error answer: passed on when it is OpenAI-shaped, wrapped when not.
fn error_response(tier: &str, status: StatusCode, body: &[u8]) -> Response {
    let shaped = serde_json::from_slice::<Value>(body)
        .ok()
        .filter(|v| v.get("error").is_some_and(Value::is_object));
    if shaped.is_some() {
        return (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_vec(),
        )
            .into_response();
    }
    let text = String::from_utf8_lossy(body);
    let excerpt: String = text.chars().take(300).collect();
    ApiError::Upstream {
        status,
        message: format!(
            "tier `{tier}` answered {status} without an OpenAI error body: {}",
            excerpt.trim()
        ),
        code: "upstream_error",
    }
    .into_response()
}

fn upstream_error(e: &UpstreamError) -> ApiError {
    let (status, code) = match e {
        UpstreamError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        UpstreamError::Body => {
            return ApiError::InvalidJson(format!("{e}"));
        }
        _ => (StatusCode::BAD_GATEWAY, "upstream_unreachable"),
    };
    ApiError::Upstream {
        status,
        message: e.to_string(),
        code,
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

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
    async fn openai_shaped_errors_pass_through_with_their_status() {
        let body = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let (status, v) = json(error_response(
            "frontier",
            StatusCode::TOO_MANY_REQUESTS,
            body,
        ))
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    }

    #[tokio::test]
    async fn other_errors_are_wrapped_keeping_the_status() {
        let (status, v) = json(error_response(
            "frontier",
            StatusCode::BAD_GATEWAY,
            b"<html>502 Bad Gateway</html>",
        ))
        .await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(v["error"]["code"], "upstream_error");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("502 Bad Gateway"))
        );
    }
}
