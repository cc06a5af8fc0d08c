//! Tiers and the path a request takes to them.
//!
//! # Overview
//! - [`Config`] ([`config`]): `smallfirst.toml` validated: the server's address and the
//!   [`Tier`]s, each with its [`BackendConfig`], prices, context window, capabilities, whether
//!   it is local, and its fallback. Errors ([`ConfigError`]) name the field path and line.

pub mod config;

pub use config::{
    BackendConfig, Capabilities, Config, ConfigError, Prices, Remote, ServerConfig, Tier,
};
