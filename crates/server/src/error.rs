//! `ApiError`: every way a request can fail, mapped to the OpenAI error body and status.
//!
//! Errors are logged once, by the `observe` middleware, from the message this type leaves in
//! the response's extensions, not where they are built.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use smallfirst_engine::EngineError;
use smallfirst_protocol::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidJson(String),
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
        code: Option<&'static str>,
    },
    #[error("the model `{0}` does not exist")]
    ModelNotFound(String),
    #[error("{0}")]
    ContextLength(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Internal(String),
    /// The local model's queue is full: a 429 with `Retry-After`.
    #[error("{0}")]
    Busy(String),
    /// A budget the request would spend is spent: a 429 with `Retry-After` at its reset.
    #[error("{message}")]
    OverBudget { message: String, retry_after_s: u64 },
    /// The request ran past the server's time limit.
    #[error("{0}")]
    Timeout(String),
    /// No API key, or one the server does not know: a 401.
    #[error("{message}")]
    Unauthorized { message: String, code: &'static str },
    /// A request this server does not take from where it came (its `Host`, its `Origin`).
    #[error("{message}")]
    Forbidden { message: String, code: &'static str },
    /// A POST body that is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body did not arrive in time.
    #[error("{0}")]
    BodyTimeout(String),
    /// An upstream tier failed or answered without OpenAI's error shape; its status is kept
    /// where it gave one.
    #[error("{message}")]
    Upstream {
        status: StatusCode,
        message: String,
        code: &'static str,
    },
}

impl ApiError {
    /// A 400 about one parameter.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
            code: None,
        }
    }

    /// A 400 for a value this server does not support (yet), though the API allows it.
    pub fn unsupported(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
            code: Some("unsupported_value"),
        }
    }

    /// `Retry-After` for a refusal that passes: a full queue, a spent budget.
    pub(crate) fn retry_after(&self) -> Option<axum::http::HeaderValue> {
        match self {
            ApiError::Busy(_) => Some(axum::http::HeaderValue::from_static("1")),
            ApiError::OverBudget { retry_after_s, .. } => {
                Some(axum::http::HeaderValue::from(*retry_after_s))
            }
            _ => None,
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_)
            | ApiError::InvalidRequest { .. }
            | ApiError::ContextLength(_) => StatusCode::BAD_REQUEST,
            ApiError::ModelNotFound(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Busy(_) | ApiError::OverBudget { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Upstream { status, .. } => *status,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (kind, param, code) = match self {
            ApiError::InvalidJson(_) => ("invalid_request_error", None, None),
            ApiError::InvalidRequest { param, code, .. } => (
                "invalid_request_error",
                param.clone(),
                code.map(str::to_string),
            ),
            ApiError::ModelNotFound(_) => (
                "invalid_request_error",
                Some("model".into()),
                Some("model_not_found".into()),
            ),
            ApiError::ContextLength(_) => (
                "invalid_request_error",
                Some("messages".into()),
                Some("context_length_exceeded".into()),
            ),
            ApiError::NotFound(_) => ("invalid_request_error", None, Some("unknown_url".into())),
            ApiError::MethodNotAllowed(_) => (
                "invalid_request_error",
                None,
                Some("method_not_allowed".into()),
            ),
            ApiError::TooLarge(_) => (
                "invalid_request_error",
                None,
                Some("request_too_large".into()),
            ),
            ApiError::Internal(_) => ("server_error", None, None),
            ApiError::Busy(_) => ("rate_limit_error", None, Some("queue_full".into())),
            ApiError::OverBudget { .. } => {
                ("rate_limit_error", None, Some("budget_exceeded".into()))
            }
            ApiError::Timeout(_) => ("timeout_error", None, Some("request_timeout".into())),
            ApiError::Unauthorized { code, .. } => {
                ("invalid_request_error", None, Some((*code).to_string()))
            }
            ApiError::Forbidden { code, .. } => {
                ("invalid_request_error", None, Some((*code).to_string()))
            }
            ApiError::UnsupportedMediaType(_) => (
                "invalid_request_error",
                None,
                Some("unsupported_media_type".into()),
            ),
            ApiError::BodyTimeout(_) => {
                ("invalid_request_error", None, Some("body_timeout".into()))
            }
            ApiError::Upstream { code, .. } => ("upstream_error", None, Some((*code).to_string())),
        };
        ErrorBody::new(shorten(&self.to_string()), kind, param, code)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::ContextLength { .. } => ApiError::ContextLength(format!(
                "{e}. Please reduce the length of the messages or the completion."
            )),
            EngineError::Template(_) | EngineError::EmptyPrompt => ApiError::InvalidRequest {
                message: e.to_string(),
                param: Some("messages".into()),
                code: None,
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The most characters of an error message sent back: messages may quote what the client
/// sent (a model name, a schema path), and a client may send a megabyte of it.
const MAX_MESSAGE: usize = 1_000;

/// A message as sent and logged: on one line (control characters a client put in it escaped)
/// and at most [`MAX_MESSAGE`] characters.
fn shorten(message: &str) -> String {
    let mut s = String::new();
    for (i, c) in message.chars().enumerate() {
        if i == MAX_MESSAGE {
            s.push('…');
            break;
        }
        if c.is_control() {
            s.extend(c.escape_default());
        } else {
            s.push(c);
        }
    }
    s
}

/// What the `observe` middleware logs for a failed request.
#[derive(Debug, Clone)]
pub(crate) struct LoggedError(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if let Some(v) = self.retry_after() {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
        if matches!(self, ApiError::Unauthorized { .. }) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if matches!(self, ApiError::BodyTimeout(_)) {
            // The rest of the body may still come: this connection cannot carry another request.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
            .extensions_mut()
            .insert(LoggedError(shorten(&self.to_string())));
        response
    }
}
