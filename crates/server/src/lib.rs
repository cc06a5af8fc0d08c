//! The HTTP server: an OpenAI-compatible API in front of the embedded engine.
//!
//! # Overview
//! - [`app`] builds the axum `Router` from an [`AppState`]; tests drive it with `oneshot`.
//! - [`serve`] runs it on a listener until a shutdown future resolves.
//! - [`ApiError`] maps every failure to the OpenAI error body with the right status.
//! - [`structure`] turns `response_format` / `tools` into the engine's constraint (the CLI
//!   uses it too, so both refuse the same schemas the same way).
//!
//! - [`serve`] accepts connections itself (`listen`): a cap on open ones, deadlines for heads,
//!   bodies and idle keep-alive. Every request passes the guard (`guard`: Host, Origin, API
//!   [`Keys`], JSON bodies, the body read whole) and gets an `x-request-id` (`observe`).
//!
//! Routes: `POST /v1/chat/completions` (JSON or SSE), `GET /v1/models`, `GET /v1/models/{id}`,
//! `GET /health`, `GET /metrics`. Unknown routes and methods answer in the same error shape. A
//! request whose `model` names a remote tier goes to it, and down its fallback chain if it
//! fails (`gateway`); `model: "auto"` is routed by the policy, a local answer judged by its
//! confidence and escalated below the threshold (`routing`). Local requests pass a bounded
//! queue and a time limit ([`Limits`], `metrics`).

mod answer;
pub mod auth;
mod chat;
mod convert;
mod error;
pub mod gateway;
mod guard;
mod listen;
mod messages;
mod metrics;
mod observe;
mod options;
mod render;
mod responses;
mod routes;
mod state;
pub mod structured;

pub use auth::{KeyError, Keys};
pub use error::ApiError;
pub use gateway::{EmbeddedTier, Gateway, Outcome};
pub use guard::KeyName;
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
    convert::plan(&req, n_vocab).map(|plan| plan.structure)
}
