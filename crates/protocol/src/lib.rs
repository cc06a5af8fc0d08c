//! OpenAI and Anthropic wire types, pure serde, no I/O.
//!
//! # Layout
//! - [`chat`]: `POST /v1/chat/completions` request, response and stream chunk types.
//! - [`completions`]: `POST /v1/completions` (the legacy API, with fill-in-the-middle).
//! - [`embeddings`]: `POST /v1/embeddings`.
//! - [`messages`]: `POST /v1/messages` (Anthropic Messages) request, response, usage and
//!   error types.
//! - [`responses`]: `POST /v1/responses` (OpenAI Responses) request types.
//! - [`error`]: the error body `{"error":{"message","type","param","code"}}`.
//! - [`models`]: `GET /v1/models` list types.
//! - [`tools`]: `response_format`, `tools`, `tool_choice`, and tool calls in responses.
//!
//! Requests are parsed strictly: a malformed field is an error that names it. Top-level
//! parameters a type does not name are kept (`extra`), so that a tier that knows them gets them
//! as sent and the embedded tier refuses them by name, rather than ignoring a knob.

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod error;
pub mod messages;
pub mod metadata;
pub mod models;
pub mod responses;
mod shape;
pub mod tools;

pub use chat::{
    ChatCompletion, ChatCompletionChunk, ChatRequest, Choice, ChunkChoice, CompletionTokensDetails,
    Delta, FinishReason, Logprobs, Message, MessageContent, PromptTokensDetails, ResponseMessage,
    Role, Stop, StreamOptions, TokenLogprob, TopLogprob, Usage,
};
pub use error::{ErrorBody, ErrorDetail};
pub use metadata::Metadata;
pub use models::{ModelList, ModelObject};
pub use tools::{
    FunctionCall, FunctionCallDelta, FunctionKind, ResponseFormat, Tool, ToolCall, ToolCallDelta,
    ToolChoice, ToolChoiceMode,
};
