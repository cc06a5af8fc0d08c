//! A remote tier's backend: one try at a chat completion, answered in OpenAI's format
//! whatever the provider speaks.
//!
//! Retries, the circuit breaker and failover are not here but in [`crate::remote`], which
//! drives a backend by [`BackendError::is_retryable`].

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::time::Instant;

use crate::wire::WireError;

/// A boxed future, so that backends can sit behind `dyn Backend`.
pub type BoxFuture<'a, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// OpenAI SSE bytes (`data: {chunk}\n\n` … `data: [DONE]\n\n`); an error item means the stream
/// broke after it began, and nothing follows it.
pub type AnswerStream = Pin<Box<dyn Stream<Item = Result<Bytes, BackendError>> + Send>>;

/// A successful answer in OpenAI's format.
pub enum Answer {
    /// A whole `chat.completion` object.
    Json(Bytes),
    /// `chat.completion.chunk` events; the first has already arrived.
    Stream(AnswerStream),
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Json(b) => write!(f, "Json({} bytes)", b.len()),
            Answer::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// An API a request can arrive in and a backend can speak natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OpenAI Chat Completions.
    OpenAiChat,
    /// Anthropic Messages.
    AnthropicMessages,
    /// OpenAI's legacy Completions (`/v1/completions`), which has no chat equivalent.
    OpenAiCompletions,
    /// OpenAI's Embeddings (`/v1/embeddings`).
    OpenAiEmbeddings,
}

/// A request in its ingress's own protocol, to pass through untouched to a backend that
/// speaks it.
#[derive(Debug, Clone)]
pub struct Native {
    pub protocol: Protocol,
    /// The body as the client sent it.
    pub body: Bytes,
    pub stream: bool,
    /// Request headers of the protocol's own (`anthropic-version`, `anthropic-beta`), kept.
    pub headers: Vec<(String, String)>,
}

/// One way of reaching a provider.
pub trait Backend: Send + Sync + fmt::Debug {
    /// The model requests are sent for.
    fn model(&self) -> &str;

    /// Whether requests in `protocol` can be passed to this backend as they are.
    fn speaks(&self, protocol: Protocol) -> bool {
        protocol == Protocol::OpenAiChat
    }

    /// One try at a request in its own protocol ([`speaks`](Self::speaks) said yes), its
    /// answer in the same protocol. Only the `model` is put in the backend's terms.
    fn pass<'a>(
        &'a self,
        native: &'a Native,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Answer, BackendError>> {
        let _ = (native, deadline);
        Box::pin(async {
            Err(BackendError::Wire {
                tier: String::new(),
                source: WireError::Unsupported {
                    param: "model".into(),
                    message: "this tier does not take requests in this protocol".into(),
                },
            })
        })
    }

    /// One try at `request` (an OpenAI chat completion body, as the client sent it), to be
    /// over by `deadline`. A stream is returned only once its first event has arrived, so a
    /// stream that breaks before that is a failed try, which can be retried.
    fn chat<'a>(
        &'a self,
        request: &'a Bytes,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Answer, BackendError>>;
}

/// Why a try failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The environment variable the tier names for its key is not set.
    #[error("tier `{tier}`: the environment variable `{var}` holding its API key is not set")]
    MissingKey { tier: String, var: String },
    #[error("tier `{tier}`: cannot build the HTTP client: {reason}")]
    Client { tier: String, reason: String },
    /// No connection, or it broke before a response head came.
    #[error("tier `{tier}`: cannot reach {url}: {reason}")]
    Unreachable {
        tier: String,
        url: String,
        reason: String,
    },
    /// A deadline passed: `what` names which.
    #[error("tier `{tier}`: {what} after {:.1} s", after.as_secs_f64())]
    Timeout {
        tier: String,
        what: &'static str,
        after: Duration,
    },
    /// The upstream answered with an error status. `body` is that error in OpenAI's shape.
    #[error("tier `{tier}` answered {status}: {message}")]
    Status {
        tier: String,
        status: u16,
        message: String,
        body: Bytes,
        retry_after: Option<Duration>,
    },
    /// The request cannot be put in the provider's terms, or its answer cannot be read.
    #[error("tier `{tier}`: {source}")]
    Wire { tier: String, source: WireError },
    /// The stream ended or failed before it was complete.
    #[error("tier `{tier}`: the stream broke: {reason}")]
    StreamBroken { tier: String, reason: String },
    /// The tier failed too often lately; it is not tried until `retry_in` has passed.
    #[error("tier `{tier}` is failing and rests for {:.1} s more", retry_in.as_secs_f64())]
    CircuitOpen { tier: String, retry_in: Duration },
    /// The request body is not a JSON object.
    #[error("the request body is not a JSON object")]
    Body,
}

impl BackendError {
    /// Whether trying again (or elsewhere) may succeed: connection failures, deadlines, 408,
    /// 409, 429 and 5xx answers, malformed answers, broken streams. A client error (400, 401,
    /// 404, …) would fail again the same way.
    pub fn is_retryable(&self) -> bool {
        match self {
            BackendError::Unreachable { .. }
            | BackendError::Timeout { .. }
            | BackendError::StreamBroken { .. } => true,
            BackendError::Status { status, .. } => {
                matches!(status, 408 | 409 | 429) || *status >= 500
            }
            BackendError::Wire { source, .. } => !matches!(source, WireError::Unsupported { .. }),
            BackendError::MissingKey { .. }
            | BackendError::Client { .. }
            | BackendError::CircuitOpen { .. }
            | BackendError::Body => false,
        }
    }

    /// Whether the try failed before anything reached the upstream (the request cannot be put
    /// in its terms, the body is not JSON, the client cannot be built).
    pub fn before_sending(&self) -> bool {
        matches!(
            self,
            BackendError::Wire {
                source: WireError::Unsupported { .. },
                ..
            } | BackendError::Body
                | BackendError::Client { .. }
                | BackendError::MissingKey { .. }
        )
    }

    /// Whether the next tier should be tried: a retryable failure, or a tier that is resting.
    pub fn fails_over(&self) -> bool {
        self.is_retryable() || matches!(self, BackendError::CircuitOpen { .. })
    }

    /// How long the upstream asked to be left alone, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            BackendError::Status { retry_after, .. } => *retry_after,
            BackendError::CircuitOpen { retry_in, .. } => Some(*retry_in),
            _ => None,
        }
    }

    /// A short stable code for logs and error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            BackendError::MissingKey { .. } | BackendError::Client { .. } => "upstream_config",
            BackendError::Unreachable { .. } => "upstream_unreachable",
            BackendError::Timeout { .. } => "upstream_timeout",
            BackendError::Status { .. } => "upstream_error",
            BackendError::Wire {
                source: WireError::Unsupported { .. },
                ..
            } => "unsupported_value",
            BackendError::Wire {
                source: WireError::Upstream { .. },
                ..
            } => "upstream_error",
            BackendError::Wire { .. } => "upstream_malformed",
            BackendError::StreamBroken { .. } => "upstream_stream_broken",
            BackendError::CircuitOpen { .. } => "upstream_circuit_open",
            BackendError::Body => "invalid_json",
        }
    }
}

/// `stream` once its first item has come: a failure or an end before that is a failed try.
pub(crate) async fn primed(tier: &str, mut stream: AnswerStream) -> Result<Answer, BackendError> {
    match stream.next().await {
        Some(Ok(first)) => Ok(Answer::Stream(Box::pin(
            futures::stream::once(async move { Ok(first) }).chain(stream),
        ))),
        Some(Err(e)) => Err(e),
        None => Err(BackendError::StreamBroken {
            tier: tier.into(),
            reason: "it ended before its first event".into(),
        }),
    }
}
