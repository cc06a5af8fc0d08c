//! OpenAI Chat Completions ↔ Anthropic Messages (`anthropic-version: 2023-06-01`).
//!
//! - [`to_wire`]: a chat completion request → a Messages request.
//! - [`from_wire`]: a Messages response → a `chat.completion`.
//! - [`Stream`]: Messages stream events → `chat.completion.chunk`s.
//! - [`error_from_wire`]: an Anthropic error body → an OpenAI error body.
//!
//! `cache_control` is Anthropic's, not OpenAI's, but clients that know Claude is behind the
//! gateway put it on content parts, messages and tools; it passes through untouched, so prompt
//! caching works through the gateway and its writes show in the usage.

use serde_json::{Value, json};

use crate::wire::{self, Meta, WireError, malformed, str_field, unsupported};

mod request;
mod stream;
#[cfg(test)]
mod tests;

pub use request::to_wire;
pub use stream::Stream;

/// A Messages response → a `chat.completion`: text blocks joined into `content`, `tool_use`
/// blocks as tool calls; thinking and server-tool blocks have no place in an OpenAI message and
/// are left out.
pub fn from_wire(response: &Value, meta: &Meta) -> Result<Value, WireError> {
    let content = response
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("a message without a `content` array"))?;
    let mut text: Option<String> = None;
    let mut calls = Vec::new();
    for (k, block) in content.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let part = str_field(block, "text")
                    .ok_or_else(|| malformed(format!("`content[{k}]` is text without `text`")))?;
                text.get_or_insert_default().push_str(part);
            }
            Some("tool_use") => {
                let (Some(id), Some(name)) = (str_field(block, "id"), str_field(block, "name"))
                else {
                    return Err(malformed(format!(
                        "`content[{k}]` is a tool use without id or name"
                    )));
                };
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(wire::tool_call(id, name, input.to_string()));
            }
            Some(_) => {}
            None => return Err(malformed(format!("`content[{k}]` has no `type`"))),
        }
    }
    let mut usage = Usage::default();
    if let Some(given) = response.get("usage") {
        usage.update(given)?;
    }
    let finish = str_field(response, "stop_reason").map(finish_reason);
    Ok(json!({
        "id": str_field(response, "id").unwrap_or(&meta.id),
        "object": "chat.completion",
        "created": meta.created,
        "model": str_field(response, "model").unwrap_or_default(),
        "choices": [{
            "index": 0,
            "message": wire::assistant_message(text, calls),
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": usage.to_openai(),
    }))
}

/// An Anthropic error body (`{"type": "error", "error": {"type", "message"}}`) → an OpenAI
/// error body whose `type` and `code` are Anthropic's error type (`rate_limit_error`,
/// `overloaded_error`, …). Any other body still gives an OpenAI error, naming the status.
pub fn error_from_wire(status: u16, body: &[u8]) -> Value {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let kind = error.and_then(|e| str_field(e, "type"));
    let message = error.and_then(|e| str_field(e, "message"));
    match (kind, message) {
        (Some(kind), Some(message)) => wire::error_body(message, kind, kind.into()),
        _ => wire::unrecognised_error(status, body),
    }
}

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`.
fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // `end_turn`, `stop_sequence`, `pause_turn` (a server tool loop paused: the answer so
        // far is whole), and stop reasons added later.
        _ => "stop",
    }
}

/// Token counts as Anthropic reports them: `input_tokens` excludes the cached prefix, which is
/// counted apart as read from or written to the cache.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    input: u64,
    output: u64,
    cache_read: Option<u64>,
    cache_creation: Option<u64>,
}

impl Usage {
    /// Takes the counts `usage` gives, keeping the others (a stream reports them in two parts).
    fn update(&mut self, usage: &Value) -> Result<(), WireError> {
        if !usage.is_object() {
            return Err(malformed("`usage` is not an object"));
        }
        if let Some(n) = wire::count(usage, "usage", "input_tokens")? {
            self.input = n;
        }
        if let Some(n) = wire::count(usage, "usage", "output_tokens")? {
            self.output = n;
        }
        if let Some(n) = wire::count(usage, "usage", "cache_read_input_tokens")? {
            self.cache_read = Some(n);
        }
        if let Some(n) = wire::count(usage, "usage", "cache_creation_input_tokens")? {
            self.cache_creation = Some(n);
        }
        Ok(())
    }

    /// OpenAI's usage, whose `prompt_tokens` include cached ones. Anthropic's cache counts are
    /// kept beside it: OpenAI has no field for cache writes, which cost more than input.
    fn to_openai(self) -> Value {
        let read = self.cache_read.unwrap_or(0);
        let prompt = self.input + read + self.cache_creation.unwrap_or(0);
        let mut usage = json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt + self.output,
            "prompt_tokens_details": {"cached_tokens": read},
        });
        if let Some(n) = self.cache_read {
            usage["cache_read_input_tokens"] = n.into();
        }
        if let Some(n) = self.cache_creation {
            usage["cache_creation_input_tokens"] = n.into();
        }
        usage
    }
}
