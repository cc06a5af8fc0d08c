//! Tiers and the path a request takes to them.
//!
//! # Overview
//! - [`Config`] ([`config`]): `smallfirst.toml` validated: the server's address and the
//!   [`Tier`]s, each with its [`BackendConfig`], prices, context window, capabilities, whether
//!   it is local, and its fallback. Errors ([`ConfigError`]) name the field path and line.
//! - [`OpenAiUpstream`] ([`upstream`]): an OpenAI-compatible server reached over pooled HTTP,
//!   requests and answers passed through with only `model` changed.

pub mod config;
pub mod upstream;
pub mod wire;

pub use config::{
    BackendConfig, Capabilities, Config, ConfigError, Faults, Prices, Remote, ServerConfig, Tier,
};
pub use upstream::{OpenAiUpstream, Reply, Secret, UpstreamError};
pub use wire::{Meta, WireError};
