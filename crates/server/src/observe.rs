//! One span and one log line per request; the only place errors are logged.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::AppState;
use crate::error::LoggedError;

pub(crate) async fn observe(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let span = tracing::info_span!("request", %method, %path);
    async move {
        let started = Instant::now();
        let response = next.run(request).await;
        let status = response.status().as_u16();
        state.inner.metrics.status(status);
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match response.extensions().get::<LoggedError>() {
            Some(LoggedError(message)) if status >= 500 => {
                tracing::error!(status, ms, error = %message)
            }
            Some(LoggedError(message)) => tracing::warn!(status, ms, error = %message),
            None => tracing::info!(status, ms),
        }
        response
    }
    .instrument(span)
    .await
}
