//! Tiers and the path a request takes to them.
//!
//! # Overview
//! - [`Config`] ([`config`]): `smallfirst.toml` validated: the server's address and the
//!   [`Tier`]s, each with its [`BackendConfig`], prices, context window, capabilities, whether
//!   it is local, its fallback, and its [`Faults`] (retries, deadlines, breaker). Errors
//!   ([`ConfigError`]) name the field path and line.
//! - [`Backend`] ([`backend`]): one try at a chat completion against a provider, answered in
//!   OpenAI's format ([`Answer`]) or failed with a [`BackendError`] that says whether it is
//!   retryable. [`OpenAiBackend`] ([`openai`]) passes requests through to any
//!   OpenAI-compatible server; [`anthropic`] and [`gemini`] translate with their `wire`
//!   modules (`to_wire`, `from_wire`, a `Stream` of chunks, `error_from_wire`), pure and
//!   tested against fixtures. All backends share the pooled HTTP and deadlines of `http`.
//! - [`RemoteTier`] ([`remote`]): a backend behind retries with backoff, a [`Breaker`]
//!   ([`breaker`]) and a total deadline; [`remote::build`] is the one place a backend kind
//!   becomes a running backend.
//! - [`Policy`] ([`policy`]): `decide(&Features) -> Route`, pure: which tier answers a
//!   `model: "auto"` request first, whether and where to escalate, and why ([`Reason`]);
//!   [`features`] reads a request's task, size, needs and privacy; [`confidence`] turns the
//!   local answer's token probabilities into a number in [0, 1].
//! - [`sse`]: server-sent events read incrementally; [`wire`]: what translations share
//!   ([`Meta`], [`WireError`]).

pub mod anthropic;
pub mod backend;
pub mod breaker;
pub mod confidence;
pub mod config;
pub mod features;
pub mod gemini;
mod http;
pub mod openai;
pub mod policy;
pub mod privacy;
pub mod remote;
mod secret;
pub mod splice;
pub mod sse;
mod translated;
pub mod wire;

pub use anthropic::AnthropicBackend;
pub use backend::{Answer, AnswerStream, Backend, BackendError, Native, Protocol};
pub use breaker::{Breaker, Circuit};
pub use config::{
    BackendConfig, Capabilities, Config, ConfigError, Faults, LedgerConfig, Prices, Remote,
    ServerConfig, Tier,
};
pub use features::{Features, Hints};
pub use gemini::GeminiBackend;
pub use openai::OpenAiBackend;
pub use policy::{NoRoute, Policy, PolicyConfig, Reason, Route};
pub use privacy::Privacy;
pub use remote::RemoteTier;
pub use secret::Secret;
pub use wire::{Meta, WireError};
