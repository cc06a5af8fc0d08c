//! The router's public API, without a model or a network.

mod anthropic;
mod config;
mod fixtures;
mod gemini;
