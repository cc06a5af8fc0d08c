//! `POST /v1/messages` (Anthropic Messages) and `POST /v1/messages/count_tokens`: the body
//! parsed once, translated to the chat request the core answers (`wire`), and the outcome
//! rendered as a message, or as Anthropic's stream events. A request whose tier speaks
//! Anthropic's protocol passes through untouched (`cache_control`, `thinking`, beta headers
//! kept), its answer too. Errors have Anthropic's shape, here and from the guard.

mod events;
mod wire;

pub(crate) use wire::to_chat;

use std::convert::Infallible;

use axum::Extension;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use smallfirst_protocol::ChatCompletion;
use smallfirst_protocol::messages::{AnthropicError, CountTokensRequest, MessagesRequest};
use smallfirst_router::{Answer, AnswerStream, Native, Protocol};

use crate::chat::{parse_as, translated};
use crate::error::LoggedError;
use crate::gateway::{Failure, Outcome, Reply, Request};
use crate::guard::KeyName;
use crate::{ApiError, AppState, answer, render};

/// Marks a response whose error body is already in Anthropic's shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnthropicShaped;

/// `metadata` members that are smallfirst's hints (privacy, task, labels), not the provider's.
const HINTS: [&str; 3] = ["privacy", "task", "labels"];

/// Request headers of Anthropic's own, sent on to an Anthropic tier.
const PASSED_HEADERS: [&str; 2] = ["anthropic-version", "anthropic-beta"];

pub(crate) async fn create(
    State(state): State<AppState>,
    key: Option<Extension<KeyName>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (mut request, stream, model) = match request(&state, &headers, body) {
        Ok(r) => r,
        Err(e) => {
            let outcome = Outcome::refused(e, "rejected");
            return respond(outcome, false, "");
        }
    };
    request.key = key.map(|k| k.0.0);
    let outcome = state.inner.gateway.complete(request).await;
    respond(outcome, stream, &model)
}

fn request(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Request, bool, String), ApiError> {
    let (messages, mut request, body) = translated(
        state,
        headers,
        body,
        |m: &MessagesRequest| m.metadata.as_ref(),
        wire::to_chat,
    )?;
    let stream = messages.stream.unwrap_or(false);
    // smallfirst's own hints are for this gateway; Anthropic's `metadata` takes `user_id` only.
    let body = smallfirst_router::splice::without_metadata(&body, &HINTS).map_or(body, Bytes::from);
    request.native = Some(Native {
        protocol: Protocol::AnthropicMessages,
        body,
        stream,
        headers: PASSED_HEADERS
            .iter()
            .filter_map(|name| {
                let v = headers.get(*name)?.to_str().ok()?;
                Some(((*name).to_string(), v.to_string()))
            })
            .collect(),
    });
    Ok((request, stream, messages.model))
}

/// The outcome as a message (or its events), or an error in Anthropic's shape.
fn respond(mut outcome: Outcome, stream: bool, model: &str) -> Response {
    let answer = outcome.take_answer();
    let mut response = match answer {
        Ok(Reply::Completion(c)) if stream => events(answer::replay(*c, true), model),
        Ok(Reply::Completion(c)) => message(&c),
        Ok(Reply::Json(bytes)) => match serde_json::from_slice::<ChatCompletion>(&bytes) {
            Ok(c) => message(&c),
            Err(e) => error(
                StatusCode::BAD_GATEWAY,
                &format!("the tier's answer could not be read: {e}"),
            ),
        },
        Ok(Reply::Stream(s)) => events(s, model),
        Ok(Reply::Native(Answer::Json(bytes))) => {
            ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
        }
        Ok(Reply::Native(Answer::Stream(s))) => {
            render::event_stream(Body::from_stream(s.map(|item| {
                Ok::<_, Infallible>(item.unwrap_or_else(|e| {
                    wire::error_event(render::tier_status(&e).as_u16(), &e.to_string())
                }))
            })))
        }
        Err(Failure::Request(e)) => {
            let mut r = error(e.status(), &message_of(&e));
            if let Some(v) = e.retry_after() {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Err(Failure::Tier(e)) => {
            let message = match &e {
                smallfirst_router::BackendError::Status { message, .. } => message.clone(),
                other => other.to_string(),
            };
            let mut r = error(render::tier_status(&e), &message);
            if let Some(v) = render::retry_after(&e) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
    };
    render::mark(&mut response, &outcome);
    response
}

fn message(c: &ChatCompletion) -> Response {
    Json(wire::from_completion(c)).into_response()
}

/// An error in Anthropic's shape, logged once by the request log.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    let mut r = (status, Json(AnthropicError::new(status.as_u16(), message))).into_response();
    r.extensions_mut().insert(LoggedError(message.to_string()));
    r.extensions_mut().insert(AnthropicShaped);
    r
}

/// An OpenAI chunk stream as Anthropic's events.
fn events(stream: AnswerStream, model: &str) -> Response {
    render::translated(stream, events::Events::new(model))
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens on the embedded model, or estimated
/// without one.
pub(crate) async fn count_tokens(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match count(&state, body).await {
        Ok(n) => Json(json!({ "input_tokens": n })).into_response(),
        Err(e) => error(e.status(), &message_of(&e)),
    }
}

/// An error's message, naming the parameter it is about (Anthropic's errors have no `param`).
fn message_of(e: &ApiError) -> String {
    match e {
        ApiError::InvalidRequest {
            message,
            param: Some(p),
            ..
        } if !message.contains(p.as_str()) => format!("{p}: {message}"),
        other => other.to_string(),
    }
}

async fn count(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<u32, ApiError> {
    let body =
        body.map_err(|e| ApiError::TooLarge(format!("could not read the request body: {e}")))?;
    let req: CountTokensRequest = parse_as(&body)?;
    let messages = MessagesRequest {
        model: req.model,
        max_tokens: 1,
        messages: req.messages,
        system: req.system,
        stop_sequences: None,
        stream: None,
        temperature: None,
        top_p: None,
        top_k: None,
        tools: req.tools,
        tool_choice: req.tool_choice,
        metadata: None,
        extra: req.extra,
    };
    let chat = wire::to_chat(&messages)?;
    state.inner.gateway.count_tokens(&chat).await
}

/// An error body of another shape (the guard's, an unknown route's) in Anthropic's, for every
/// path under `/v1/messages`.
pub(crate) async fn reshape(response: Response) -> Response {
    if response.status().is_success() || response.extensions().get::<AnthropicShaped>().is_some() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    let body = serde_json::to_vec(&AnthropicError::new(parts.status.as_u16(), message))
        .unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}
