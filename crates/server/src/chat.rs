//! `POST /v1/chat/completions`: the body parsed once, the core called, the outcome rendered
//! as JSON or SSE.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::Response;
use smallfirst_protocol::{ChatRequest, Metadata, StreamOptions};
use smallfirst_router::privacy::{self, Privacy};
use smallfirst_router::splice::with_member;

use crate::gateway::{Outcome, Request};
use crate::guard::KeyName;
use crate::ledger::Facts;
use crate::render::{self, TASK_HEADER};
use crate::{ApiError, AppState};

pub(crate) async fn completions(
    State(state): State<AppState>,
    key: Option<Extension<KeyName>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut request = match request(&state, &headers, body) {
        Ok(r) => r,
        // Errors too say how the request was handled.
        Err(e) => return render::chat(Outcome::refused(e, "rejected"), false, false),
    };
    request.key = key.map(|k| k.0.0);
    let stream = request.chat.is_stream();
    let include_usage = request.chat.include_usage();
    // The ledger counts a stream's tokens from its usage event: asked for here, and taken
    // out again before the client sees it.
    let ask_usage = stream && !include_usage && state.book().is_some();
    if ask_usage {
        ask_for_usage(&mut request);
    }
    let outcome = state.inner.gateway.complete(request).await;
    let mut response = render::chat(outcome, stream, include_usage || ask_usage);
    if ask_usage && let Some(facts) = response.extensions_mut().get_mut::<Facts>() {
        facts.strip_usage = true;
    }
    response
}

/// `request` with `stream_options.include_usage` on, in the parsed request and in the body
/// passed through to tiers.
fn ask_for_usage(request: &mut Request) {
    request.chat.stream_options = Some(StreamOptions {
        include_usage: Some(true),
    });
    if let Some(raw) = with_member(&request.raw, "stream_options", r#"{"include_usage":true}"#) {
        request.raw = Bytes::from(raw);
    }
}

fn request(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Request, ApiError> {
    let body =
        body.map_err(|e| ApiError::TooLarge(format!("could not read the request body: {e}")))?;
    state.inner.metrics.work.parse();
    let chat = parse(&body)?;
    let privacy = privacy_of(headers, chat.metadata.as_ref())?;
    Ok(Request {
        chat,
        raw: body,
        native: None,
        privacy,
        task: task_hint(headers),
        key: None,
        only: None,
    })
}

/// A body in another API (Anthropic Messages, Responses) parsed once into `T`, and the chat
/// request the core answers translated from it by `translate`; the body comes back too.
pub(crate) fn translated<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    metadata: impl FnOnce(&T) -> Option<&Metadata>,
    translate: impl FnOnce(&T) -> Result<ChatRequest, ApiError>,
) -> Result<(T, Request, Bytes), ApiError> {
    let body =
        body.map_err(|e| ApiError::TooLarge(format!("could not read the request body: {e}")))?;
    state.inner.metrics.work.parse();
    let parsed: T = parse_as(&body)?;
    let privacy = privacy_of(headers, metadata(&parsed))?;
    let chat = translate(&parsed)?;
    let raw = serde_json::to_vec(&chat)
        .map(Bytes::from)
        .map_err(|e| ApiError::Internal(format!("cannot write the chat request: {e}")))?;
    let request = Request {
        chat,
        raw,
        native: None,
        privacy,
        task: task_hint(headers),
        key: None,
        only: None,
    };
    Ok((parsed, request, body))
}

/// `x-smallfirst-task`, when sent.
pub(crate) fn task_hint(headers: &HeaderMap) -> Option<String> {
    headers
        .get(TASK_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The request's privacy, from every `x-smallfirst-privacy` header value and every
/// `metadata.privacy` in its body (repeated keys included, seen as it was parsed), combined so
/// that it fails closed ([`Privacy::of_request`]); an unknown value is a 400 naming it.
pub(crate) fn privacy_of(
    headers: &HeaderMap,
    metadata: Option<&Metadata>,
) -> Result<Privacy, ApiError> {
    let values = headers
        .get_all(privacy::HEADER)
        .iter()
        .map(|v| v.to_str().ok());
    let in_body = metadata.map_or(&[][..], |m| m.privacy.as_slice());
    Privacy::of_request(values, in_body).map_err(|e| ApiError::InvalidRequest {
        message: e.to_string(),
        param: Some(e.place.into()),
        code: Some("invalid_privacy"),
    })
}

/// Parses the body, naming the offending field path on failure.
pub(crate) fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
    parse_as(body)
}

/// Parses a JSON body into `T`, naming the offending field path on failure.
pub(crate) fn parse_as<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
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
