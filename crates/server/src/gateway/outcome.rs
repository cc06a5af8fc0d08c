//! [`Outcome`]: the typed facts of one answered (or failed) request, produced once by the core
//! and rendered by each consumer in one place: the ingress's body and headers, logs, and the
//! ledger.

use std::time::Duration;

use bytes::Bytes;
use smallfirst_protocol::{ChatCompletion, Usage};
use smallfirst_router::confidence::Confidence;
use smallfirst_router::features::TaskSource;
use smallfirst_router::{AnswerStream, BackendError, Reason};

use crate::ApiError;

/// What happened to one request.
#[derive(Debug)]
pub struct Outcome {
    /// The answer, or why there is none.
    pub answer: Result<Reply, Failure>,
    /// The tier that answered (or, on failure, the last one tried); `None` when no tier was
    /// reached.
    pub tier: Option<String>,
    /// Why this tier: the route's reason, an escalation's, or why the request was refused.
    pub reason: Reason,
    /// The embedded answer's confidence, when it was judged.
    pub confidence: Option<Confidence>,
    /// The label a classification chose, with its probability.
    pub label: Option<Label>,
    /// The answer came from a tier the request escalated to.
    pub escalated: bool,
    /// The tier whose answer was escalated from, when one was.
    pub escalated_from: Option<String>,
    /// Tiers that failed on the way, in order.
    pub failover: Vec<Failover>,
    /// Tokens, when the answer is whole (a stream counts its own).
    pub usage: Option<Usage>,
    /// The task the policy routed by, and where it came from.
    pub task: Option<(String, TaskSource)>,
    pub timings: Timings,
    /// A budget that kept the request from a tier it would have spent on.
    pub(crate) budget: Option<crate::budget::Exhausted>,
    /// The answer was a tier's failure, when it has been taken to be rendered.
    taken_tier_failure: bool,
}

/// An answer in OpenAI's chat format, whatever tier produced it, or in the ingress's own
/// protocol when the request passed through to a tier that speaks it.
pub enum Reply {
    /// A whole completion built here (the embedded tier's).
    Completion(Box<ChatCompletion>),
    /// A whole `chat.completion` as a tier sent it.
    Json(Bytes),
    /// `chat.completion.chunk` SSE events ending in `data: [DONE]`; an error item means the
    /// stream broke after it began.
    Stream(AnswerStream),
    /// The tier's answer in the ingress's protocol, untouched (JSON or SSE bytes).
    Native(smallfirst_router::Answer),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Completion(c) => write!(f, "Completion({})", c.id),
            Reply::Json(b) => write!(f, "Json({} bytes)", b.len()),
            Reply::Stream(_) => f.write_str("Stream"),
            Reply::Native(a) => write!(f, "Native({a:?})"),
        }
    }
}

/// Why a request has no answer.
#[derive(Debug)]
pub enum Failure {
    /// The request itself: invalid, too long, refused by privacy, the queue full.
    Request(ApiError),
    /// The last tier tried failed, and no other could take over.
    Tier(BackendError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Request(e) => e.fmt(f),
            Failure::Tier(e) => e.fmt(f),
        }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Request(e)
    }
}

/// A tier that failed, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    pub tier: String,
    /// The failure's stable code ([`BackendError::code`]).
    pub code: &'static str,
}

/// A classification's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub label: String,
    pub probability: f64,
    pub margin: Option<f64>,
}

/// How long the core's steps took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Reading the features and deciding the route (`model: "auto"` only).
    pub decide: Option<Duration>,
}

impl Outcome {
    /// An outcome for `reason` with nothing answered yet.
    pub(crate) fn new(reason: Reason) -> Self {
        Outcome {
            answer: Err(Failure::Request(ApiError::Internal(
                "the request was not answered".into(),
            ))),
            tier: None,
            reason,
            confidence: None,
            label: None,
            escalated: false,
            escalated_from: None,
            failover: Vec::new(),
            usage: None,
            task: None,
            timings: Timings::default(),
            budget: None,
            taken_tier_failure: false,
        }
    }

    /// The answer, taken out to be rendered; what is left says only whether it was a tier's
    /// failure ([`Outcome::tier_failed`]).
    pub fn take_answer(&mut self) -> Result<Reply, Failure> {
        let answer = std::mem::replace(
            &mut self.answer,
            Err(Failure::Request(ApiError::Internal(
                "the answer was rendered".into(),
            ))),
        );
        self.taken_tier_failure = matches!(answer, Err(Failure::Tier(_)));
        answer
    }

    /// Whether the request failed at a tier (rather than being refused before one), whether
    /// or not the answer has been taken.
    pub fn tier_failed(&self) -> bool {
        self.taken_tier_failure || matches!(self.answer, Err(Failure::Tier(_)))
    }

    /// A request refused before any tier: why, in the reason too.
    pub fn refused(e: ApiError, code: &str) -> Self {
        let mut o = Outcome::new(Reason {
            code: code.to_string(),
            words: e.to_string(),
        });
        o.answer = Err(Failure::Request(e));
        o
    }
}

/// The tokens of a whole answer: the completion's own, or read from a tier's JSON.
pub(crate) fn usage_of(answer: &Result<Reply, Failure>) -> Option<Usage> {
    match answer {
        Ok(Reply::Completion(c)) => Some(c.usage),
        Ok(Reply::Json(bytes)) => {
            #[derive(serde::Deserialize)]
            struct WithUsage {
                usage: Option<Usage>,
            }
            serde_json::from_slice::<WithUsage>(bytes).ok()?.usage
        }
        _ => None,
    }
}
