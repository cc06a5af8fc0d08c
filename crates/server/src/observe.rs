//! One span and one log line per request, with its id; the only place errors are logged.
//!
//! Every response carries `x-request-id`: the client's own when it sent a usable one (up to
//! 128 letters, digits and `-_.:`), else a new one, and the log line carries the same.
//! Whatever a client sent is logged with its control characters escaped, so a newline in a
//! model name cannot forge a log line.

use std::any::Any;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::error::LoggedError;
use crate::guard::KeyName;
use crate::{ApiError, AppState};

pub(crate) const REQUEST_ID: &str = "x-request-id";

pub(crate) async fn observe(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| usable_id(v))
        .map_or_else(new_id, str::to_string);
    let span = tracing::info_span!(
        "request",
        id = %id,
        %method,
        path = %escaped(&path),
        key = tracing::field::Empty
    );
    async move {
        let started = Instant::now();
        let at_ms = smallfirst_ledger::now_ms();
        let mut response = next.run(request).await;
        if path.starts_with("/v1/messages") {
            response = crate::messages::reshape(response).await;
        }
        let facts = response.extensions_mut().remove::<crate::ledger::Facts>();
        if let (Some(book), Some(facts), Some(ingress)) =
            (state.book(), facts, crate::ledger::ingress(&path))
        {
            let pending = crate::ledger::Pending {
                at_ms,
                started,
                request_id: id.clone(),
                key: response.extensions().get::<KeyName>().map(|k| k.0.clone()),
                ingress,
                http_status: response.status().as_u16(),
                facts,
            };
            response = crate::ledger::meter(std::sync::Arc::clone(book), response, pending).await;
        }
        if let Ok(v) = HeaderValue::from_str(&id) {
            response.headers_mut().insert(REQUEST_ID, v);
        }
        let status = response.status().as_u16();
        state.inner.metrics.status(status);
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match response.extensions().get::<LoggedError>() {
            Some(LoggedError(message)) if status >= 500 => {
                tracing::error!(status, ms, error = %escaped(message))
            }
            Some(LoggedError(message)) => tracing::warn!(status, ms, error = %escaped(message)),
            None => tracing::info!(status, ms),
        }
        response
    }
    .instrument(span)
    .await
}

/// A handler that panicked: a 500 for that request alone, in the error shape.
pub(crate) fn panicked(panic: Box<dyn Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    tracing::error!(panic = %escaped(&what), "a request handler panicked");
    ApiError::Internal("the server failed on this request; it keeps serving others".into())
        .into_response()
}

fn usable_id(v: &str) -> bool {
    (1..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A fresh id: `req_` and 24 hex digits nobody outside can predict.
fn new_id() -> String {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let a = std::collections::hash_map::RandomState::new().hash_one(n);
    format!("req_{a:016x}{:08x}", n as u32)
}

/// `text` with control characters escaped (`\n`, `\u{1b}`), for logs.
pub(crate) fn escaped(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_a_500_in_the_error_shape() {
        let r = panicked(Box::new("boom"));
        assert_eq!(r.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        assert!(r.extensions().get::<LoggedError>().is_some());
    }

    #[test]
    fn ids_and_escapes() {
        assert!(usable_id("abc-123_x.y:z"));
        assert!(!usable_id("a b") && !usable_id("") && !usable_id(&"a".repeat(129)));
        assert!(!usable_id("a\r\nb"));
        let (a, b) = (new_id(), new_id());
        assert!(a.starts_with("req_") && a != b && usable_id(&a));
        assert_eq!(escaped("a\r\nb\u{1b}"), "a\\r\\nb\\u{1b}");
        assert_eq!(escaped("plain"), "plain");
    }
}
