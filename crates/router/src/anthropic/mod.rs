//! Anthropic's Messages API as a tier: a client speaks OpenAI Chat Completions, Claude answers.
//!
//! [`wire`] translates requests, responses, stream events and error bodies.

pub mod wire;
