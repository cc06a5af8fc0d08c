//! The router's public API, without a model or a network.

mod config;
