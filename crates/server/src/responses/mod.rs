//! `POST /v1/responses` (OpenAI Responses), stateless: the body parsed once, translated to the
//! chat request the core answers (`wire`), and the outcome rendered as a `response` object or
//! the Responses stream events. Nothing is stored: `previous_response_id` is refused with a
//! 400 that says so. Errors have OpenAI's shape.

mod events;
mod wire;

pub(crate) use wire::to_chat;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use smallfirst_protocol::ChatCompletion;
use smallfirst_protocol::responses::ResponsesRequest;

use crate::chat::translated;
use crate::gateway::{Failure, Outcome, Reply, Request};
use crate::guard::KeyName;
use crate::{ApiError, AppState, answer, render};

pub(crate) async fn create(
    State(state): State<AppState>,
    key: Option<Extension<KeyName>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (mut request, echo) = match request(&state, &headers, body) {
        Ok(r) => r,
        Err(e) => return render::chat(Outcome::refused(e, "rejected"), false, false),
    };
    request.key = key.map(|k| k.0.0);
    let stream = request.chat.is_stream();
    let outcome = state.inner.gateway.complete(request).await;
    respond(outcome, stream, &echo)
}

fn request(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Request, wire::Echo), ApiError> {
    let (req, request, _) = translated(
        state,
        headers,
        body,
        |r: &ResponsesRequest| r.metadata.as_ref(),
        wire::to_chat,
    )?;
    Ok((request, wire::Echo::of(&req)))
}

fn respond(mut outcome: Outcome, stream: bool, echo: &wire::Echo) -> Response {
    let answer = outcome.take_answer();
    let whole = |c: &ChatCompletion| Json(wire::from_completion(c, echo)).into_response();
    let mut response = match answer {
        Ok(Reply::Completion(c)) if stream => {
            render::translated(answer::replay(*c, true), events::Events::new(echo.clone()))
        }
        Ok(Reply::Completion(c)) => whole(&c),
        Ok(Reply::Json(bytes)) => match serde_json::from_slice::<ChatCompletion>(&bytes) {
            Ok(c) => whole(&c),
            Err(e) => ApiError::Upstream {
                status: axum::http::StatusCode::BAD_GATEWAY,
                message: format!("the tier's answer could not be read: {e}"),
                code: "upstream_malformed",
            }
            .into_response(),
        },
        Ok(Reply::Stream(s)) => render::translated(s, events::Events::new(echo.clone())),
        Ok(Reply::Native(_)) => {
            ApiError::Internal("an answer in another protocol".into()).into_response()
        }
        Err(Failure::Request(e)) => e.into_response(),
        Err(Failure::Tier(e)) => render::tier_error(&e),
    };
    if response.headers().get(header::CONTENT_TYPE).is_none() {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
    }
    render::mark(&mut response, &outcome);
    response
}
