//! Tiers and the path a request takes to them.
//!
//! # Overview
//! - [`Config`] ([`config`]): `smallfirst.toml` validated: the server's address and the
//!   [`Tier`]s, each with its [`BackendConfig`], prices, context window, capabilities, whether
//!   it is local, and its fallback. Errors ([`ConfigError`]) name the field path and line.
//! - [`OpenAiUpstream`] ([`upstream`]): an OpenAI-compatible server reached over pooled HTTP,
//!   requests and answers passed through with only `model` changed.
//! - [`anthropic`] and [`gemini`]: Anthropic's Messages API and Google's Gemini API, each with
//!   its `wire` translation (`to_wire`, `from_wire`, a `Stream` of chunks, `error_from_wire`)
//!   between their formats and OpenAI's. [`Meta`] and [`WireError`] ([`wire`]) are shared.

pub mod anthropic;
pub mod config;
pub mod gemini;
pub mod upstream;
pub mod wire;

pub use config::{
    BackendConfig, Capabilities, Config, ConfigError, Prices, Remote, ServerConfig, Tier,
};
pub use upstream::{OpenAiUpstream, Reply, Secret, UpstreamError};
pub use wire::{Meta, WireError};
