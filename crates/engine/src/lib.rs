//! The in-process llama.cpp engine.
//!
//! # Overview
//! - [`Engine`]: a handle to the engine thread. The llama.cpp context is not `Send`, so **one
//!   OS thread owns it**; requests arrive on a channel, each with its own reply channel, wait
//!   for one of a fixed number of slots, and then decode together with the others, one llama
//!   batch per step (continuous batching, chunked prefill, prompt prefixes kept per slot and
//!   shared across slots). A dropped receiver (the client went away) ends its sequence at the
//!   next step. [`Engine::generate_n`] runs `n` choices of one prompt, prefilled once (the
//!   later choices copy the first one's KV cache); [`Engine::tokenize_text`],
//!   [`Engine::fim_prompt`] and [`Engine::token_prompt`] make prompts without a chat template
//!   (the completions API); [`Engine::embed`] gives pooled, normalized embeddings from a second
//!   context on the same loaded weights.
//! - [`ChatTemplate`]: the model's Jinja chat template, rendered in a sandbox.
//! - [`Sampler`] / [`SamplingParams`]: temperature, top-k, top-p, min-p, penalties, seed, in
//!   Rust. [`SamplingDefaults`]: what a request that leaves a parameter out gets (the model
//!   file's `general.sampling.*` keys, else the catalog's, else llama.cpp's).
//! - [`logprobs`]: vectorised log-softmax pieces, computed only when asked.
//! - [`TextStream`]: UTF-8-safe streaming with stop strings that may span tokens.
//! - [`fit`]: whether a model fits in memory with the engine's settings, checked before every
//!   load (after the file's safety checks).
//! - [`Constraint`]: a grammar the answer must follow (a JSON Schema from [`schema`], tool
//!   calls from [`tools`]), enforced token by token with llguidance.

mod compiler;
mod constraint;
mod engine;
mod error;
pub mod fit;
pub mod logprobs;
mod runner;
mod sampling;
pub mod schema;
mod score;
mod sequence;
mod slots;
mod template;
mod text;
mod tokenizer;
pub mod tools;

pub use compiler::check_offline;
pub use constraint::Constraint;
pub use engine::{
    Delta, Done, Engine, EngineConfig, Event, FinishReason, GenerateParams, Generation, Load,
    ModelInfo, Pooling, Prompt, StepProb, TokenLogprob, default_threads,
};
pub use error::{EngineError, gib};
pub use runner::{BenchReport, BenchRun, DEFAULT_PREFILL_CHUNK, DEFAULT_SLOTS};
pub use sampling::defaults::{Origin, Recommended, SamplingDefaults, Setting};
pub use sampling::{Sampler, SamplingParams};
pub use smallfirst_inspect::Severity;
pub use template::{CHATML, ChatMessage, ChatTemplate};
pub use text::{Released, TextStream};
