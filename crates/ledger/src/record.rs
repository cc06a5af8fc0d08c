//! [`Record`]: one request as the ledger keeps it.

use serde::Serialize;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A tier answered, whole or streamed to its end.
    Answered,
    /// Refused before any tier answered: invalid, over a limit, kept local and refused.
    Refused,
    /// The tiers tried failed, or a stream broke.
    Failed,
    /// The client went away before the answer was complete.
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Answered => "answered",
            Status::Refused => "refused",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "answered" => Status::Answered,
            "refused" => Status::Refused,
            "failed" => Status::Failed,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }
}

/// Tokens one request took, as the answering tier counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tokens {
    pub prompt: u64,
    /// Prompt tokens read from a cache.
    pub cached: u64,
    /// Prompt tokens written to a provider's cache.
    pub cache_write: u64,
    pub completion: u64,
    /// Completion tokens spent reasoning (counted in `completion` too).
    pub reasoning: u64,
}

/// One request, as the ledger keeps it: no prompt or answer text unless the configuration
/// asks for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// When the request arrived, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The request's `x-request-id`.
    pub request_id: String,
    /// Which server wrote the record (`host:pid`), so that replicas sharing a store can be
    /// told apart.
    pub replica: String,
    /// The API key's name, when keys are required.
    pub key: Option<String>,
    /// The API it came through: `chat`, `messages`, `responses`, `completions`, `embeddings`.
    pub ingress: String,
    pub task: Option<String>,
    /// How the task was known: `header`, `metadata`, `inferred`.
    pub task_source: Option<String>,
    /// The route's reason code (`task=classify`, `model=frontier`, `low_confidence`, …).
    pub reason: String,
    /// The tier that answered, or the last one tried.
    pub tier: Option<String>,
    /// That tier's model.
    pub model: Option<String>,
    /// Whether that tier runs on this machine.
    pub on_machine: bool,
    /// Every tier the request was sent to, in order (escalations and failovers included).
    pub tried: Vec<String>,
    pub escalated: bool,
    /// The embedded answer's confidence and how it was measured, when it was judged.
    pub confidence: Option<f64>,
    pub method: Option<String>,
    pub tokens: Tokens,
    /// US dollars at the answering tier's prices.
    pub cost: f64,
    /// US dollars the same tokens would have cost on the baseline tier; `None` without one.
    pub baseline_cost: Option<f64>,
    /// From arrival to the last byte of the answer.
    pub latency_ms: f64,
    /// From arrival to the first byte of a streamed answer.
    pub ttft_ms: Option<f64>,
    /// The HTTP status the client got.
    pub http_status: u16,
    pub status: Status,
    /// The prompt and the answer, only with `[ledger] store_text = true`.
    pub prompt: Option<String>,
    pub answer: Option<String>,
}

/// The columns records are stored in, in the order both stores write and read them.
pub(crate) const COLUMNS: &str = "at_ms, request_id, replica, key, ingress, task, task_source, \
    reason, tier, model, on_machine, tried, escalated, confidence, method, prompt_tokens, \
    cached_tokens, cache_write_tokens, completion_tokens, reasoning_tokens, cost, \
    baseline_cost, latency_ms, ttft_ms, http_status, status, prompt, answer";

/// A stored row, read column by column in [`COLUMNS`] order, whatever the store's own types.
pub(crate) trait Columns {
    type Error;
    fn text(&self, i: usize) -> Result<Option<String>, Self::Error>;
    fn int(&self, i: usize) -> Result<i64, Self::Error>;
    fn real(&self, i: usize) -> Result<Option<f64>, Self::Error>;
    fn flag(&self, i: usize) -> Result<bool, Self::Error>;
}

impl Record {
    /// `tried` as a column holds it: tier names (letters, digits, `_`, `-`) joined by commas.
    pub(crate) fn tried_text(&self) -> String {
        self.tried.join(",")
    }

    /// The record a stored row holds.
    pub(crate) fn from_columns<C: Columns>(c: &C) -> Result<Record, C::Error> {
        let text = |i| c.text(i).map(Option::unwrap_or_default);
        let count = |i| c.int(i).map(|n| n.max(0) as u64);
        Ok(Record {
            at_ms: c.int(0)?,
            request_id: text(1)?,
            replica: text(2)?,
            key: c.text(3)?,
            ingress: text(4)?,
            task: c.text(5)?,
            task_source: c.text(6)?,
            reason: text(7)?,
            tier: c.text(8)?,
            model: c.text(9)?,
            on_machine: c.flag(10)?,
            tried: text(11)?
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            escalated: c.flag(12)?,
            confidence: c.real(13)?,
            method: c.text(14)?,
            tokens: Tokens {
                prompt: count(15)?,
                cached: count(16)?,
                cache_write: count(17)?,
                completion: count(18)?,
                reasoning: count(19)?,
            },
            cost: c.real(20)?.unwrap_or(0.0),
            baseline_cost: c.real(21)?,
            latency_ms: c.real(22)?.unwrap_or(0.0),
            ttft_ms: c.real(23)?,
            http_status: u16::try_from(c.int(24)?).unwrap_or(0),
            status: Status::parse(&text(25)?).unwrap_or(Status::Failed),
            prompt: c.text(26)?,
            answer: c.text(27)?,
        })
    }
}
