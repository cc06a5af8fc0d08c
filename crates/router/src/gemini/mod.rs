//! Google's Gemini API as a tier: a client speaks OpenAI Chat Completions, Gemini answers.
//!
//! [`wire`] translates requests, responses, stream events and error bodies, and names the
//! method path a request goes to.

pub mod wire;
