//! OpenAI wire types, pure serde, no I/O.
//!
//! # Layout
//! - [`chat`]: `POST /v1/chat/completions` request, response and stream chunk types.
//! - [`error`]: the error body `{"error":{"message","type","param","code"}}`.
//! - [`models`]: `GET /v1/models` list types.
//! - [`tools`]: `response_format`, `tools`, `tool_choice`, and tool calls in responses.
//!
//! Requests are parsed strictly: an unknown field is an error that names it, as OpenAI does,
//! rather than a silently ignored knob.

pub mod chat;
pub mod error;
pub mod models;
mod shape;
pub mod tools;

pub use chat::{
    ChatCompletion, ChatCompletionChunk, ChatRequest, Choice, ChunkChoice, Delta, FinishReason,
    Logprobs, Message, MessageContent, ResponseMessage, Role, Stop, TokenLogprob, TopLogprob,
    Usage,
};
pub use error::{ErrorBody, ErrorDetail};
pub use models::{ModelList, ModelObject};
pub use tools::{
    FunctionCall, FunctionCallDelta, FunctionKind, ResponseFormat, Tool, ToolCall, ToolCallDelta,
    ToolChoice, ToolChoiceMode,
};
