//! The gateway core and the HTTP server around it.
//!
//! # Overview
//! - [`Gateway`] ([`gateway`]): the core, without HTTP. It holds every tier (the
//!   [`EmbeddedTier`] and the remote ones), the policy, and the embedded engine's admission;
//!   [`Gateway::complete`] answers a [`gateway::Request`] (parsed once by an ingress) and
//!   returns an [`Outcome`]: the answer or its failure, the tier, the route's reason, the
//!   confidence, the escalation and failover records, the usage and the decide time. Cascade,
//!   escalation, retries and failover all happen here; evals and tests call it directly.
//! - Ingress modules parse a body once, call the core and render the outcome: `chat`
//!   (`POST /v1/chat/completions`), `messages` (`POST /v1/messages`, `/count_tokens`; Anthropic
//!   Messages, passed through untouched to an Anthropic tier) and `responses`
//!   (`POST /v1/responses`, stateless). `render` writes the `x-smallfirst-*` headers, the
//!   `smallfirst` body member and tier errors, each in one place, and turns OpenAI chunk streams
//!   into the other protocols' events. `completions` (`POST /v1/completions`, with
//!   fill-in-the-middle) and `embeddings` (`POST /v1/embeddings`) have no chat equivalent: the
//!   core picks their tier (`Gateway::other_api`, privacy rules included), the embedded engine
//!   answers them or an OpenAI-compatible tier gets the body as sent.
//! - [`app`] builds the axum `Router` from an [`AppState`]; tests drive it with `oneshot`.
//!   [`serve`] runs it on a listener until a shutdown future resolves, accepting connections
//!   itself (`listen`): a cap on open ones, deadlines for heads, bodies and idle keep-alive.
//!   Every request passes the guard (`guard`: Host, Origin, API [`Keys`], JSON bodies, the body
//!   read whole) and gets an `x-request-id` (`observe`).
//! - [`ApiError`] maps every failure to the OpenAI error body with the right status (the
//!   Anthropic ingress maps it to Anthropic's).
//! - [`structure`] turns `response_format` / `tools` into the engine's constraint (the CLI
//!   uses it too, so both refuse the same schemas the same way).
//!
//! - `ledger`: every request's record, written once the client has the whole answer (a
//!   stream at its end, or when the client leaves) from the outcome's facts that `render`
//!   puts on the response, through a [`Book`] (the ledger with the tiers' prices);
//!   `GET /v1/smallfirst/report` reads it back.
//!
//! Other routes: `GET /v1/models`, `GET /v1/models/{id}`, `GET /health`, `GET /metrics`.
//! Unknown routes and methods answer in the same error shape. Local requests pass a bounded
//! queue and a time limit ([`Limits`], `metrics`).

mod answer;
pub mod auth;
mod budget;
mod chat;
mod completions;
mod convert;
mod embeddings;
mod error;
pub mod gateway;
mod guard;
mod ledger;
mod listen;
mod messages;
mod metrics;
mod observe;
mod options;
mod render;
mod report;
mod responses;
mod routes;
mod state;
pub mod structured;

pub use auth::{KeyError, Keys};
pub use budget::Budgets;
pub use error::ApiError;
pub use gateway::{EmbeddedTier, Gateway, Outcome};
pub use guard::KeyName;
pub use ledger::Book;
pub use metrics::Limits;
pub use options::Options;
pub use routes::{app, serve};
pub use state::AppState;
pub use structured::{Structure, structure};

/// Checks a chat completion body as the server would before any work: it parses, its
/// parameters are in range, its messages, tools and schemas are within the limits; returns
/// the shape it asks of the answer. `n_vocab` bounds `logit_bias` token ids.
pub fn validate(body: &[u8], n_vocab: usize) -> Result<Structure, ApiError> {
    let req = chat::parse(body)?;
    convert::plan(
        &req,
        n_vocab,
        &smallfirst_engine::SamplingDefaults::default(),
    )
    .map(|plan| plan.structure)
}

/// [`validate`] for an Anthropic Messages body: parsed, translated to the chat request the
/// core answers, and checked as a chat completion is.
pub fn validate_messages(body: &[u8], n_vocab: usize) -> Result<Structure, ApiError> {
    let req = chat::parse_as(body)?;
    let chat = messages::to_chat(&req)?;
    convert::plan(
        &chat,
        n_vocab,
        &smallfirst_engine::SamplingDefaults::default(),
    )
    .map(|plan| plan.structure)
}

/// [`validate`] for an OpenAI Responses body.
pub fn validate_responses(body: &[u8], n_vocab: usize) -> Result<Structure, ApiError> {
    let req = chat::parse_as(body)?;
    let chat = responses::to_chat(&req)?;
    convert::plan(
        &chat,
        n_vocab,
        &smallfirst_engine::SamplingDefaults::default(),
    )
    .map(|plan| plan.structure)
}
