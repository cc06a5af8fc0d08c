//! OpenAI Chat Completions ↔ the Gemini API (`v1beta`, `generateContent` and
//! `streamGenerateContent?alt=sse`).
//!
//! - [`path`]: the method path a request goes to; the model is in the path, not the body.
//! - [`to_wire`]: a chat completion request → a `GenerateContentRequest`.
//! - [`from_wire`]: a `GenerateContentResponse` → a `chat.completion`.
//! - [`Stream`]: streamed `GenerateContentResponse`s → `chat.completion.chunk`s.
//! - [`error_from_wire`]: a Gemini error body → an OpenAI error body.
//!
//! Gemini does not number function calls; the ids OpenAI clients need are made up as
//! `call_<n>` unless Gemini gives one, and a tool result finds its function's name through the
//! assistant call it answers.

use serde_json::{Value, json};

use crate::wire::{self, Meta, WireError, malformed, str_field, unsupported};

mod request;
mod stream;
#[cfg(test)]
mod tests;

pub use request::to_wire;
pub use stream::Stream;

/// The method path, relative to `…/v1beta/`, for `model` (with or without its `models/`
/// prefix).
pub fn path(model: &str, stream: bool) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    if stream {
        format!("models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("models/{model}:generateContent")
    }
}

/// A `GenerateContentResponse` → a `chat.completion`, one choice per candidate.
///
/// `model` names the model when the response has no `modelVersion`. Thought parts are left
/// out. A prompt Gemini blocked (no candidates, a `promptFeedback.blockReason`) is one choice
/// with no content and `finish_reason: content_filter`.
pub fn from_wire(response: &Value, meta: &Meta, model: &str) -> Result<Value, WireError> {
    let mut calls_made = 0;
    let mut choices = Vec::new();
    for (position, candidate) in candidates(response)?.iter().enumerate() {
        let index = candidate_index(candidate, position);
        let mut text: Option<String> = None;
        let mut calls = Vec::new();
        for part in parts(candidate)? {
            if let Some(t) = part_text(part)? {
                text.get_or_insert_default().push_str(t);
            } else if let Some(call) = function_call(part, &mut calls_made)? {
                calls.push(wire::tool_call(&call.id, &call.name, call.arguments));
            }
        }
        let finish = finish_reason(str_field(candidate, "finishReason"), !calls.is_empty());
        choices.push(json!({
            "index": index,
            "message": wire::assistant_message(text, calls),
            "logprobs": null,
            "finish_reason": finish,
        }));
    }
    if choices.is_empty() {
        if blocked(response).is_none() {
            return Err(malformed(
                "a response with neither candidates nor a block reason",
            ));
        }
        choices.push(json!({
            "index": 0,
            "message": wire::assistant_message(None, Vec::new()),
            "logprobs": null,
            "finish_reason": "content_filter",
        }));
    }
    Ok(json!({
        "id": str_field(response, "responseId").unwrap_or(&meta.id),
        "object": "chat.completion",
        "created": meta.created,
        "model": str_field(response, "modelVersion").unwrap_or(model),
        "choices": choices,
        "usage": usage(response.get("usageMetadata"))?,
    }))
}

/// A Gemini error body (`{"error": {"code", "message", "status"}}`, or that inside a
/// one-element array, as a stream sends it) → an OpenAI error body whose `type` is the status
/// in lowercase (`resource_exhausted`) and whose `code` is the status. Any other body still
/// gives an OpenAI error, naming the HTTP status.
pub fn error_from_wire(status: u16, body: &[u8]) -> Value {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed
        .as_ref()
        .map(|v| v.as_array().and_then(|a| a.first()).unwrap_or(v))
        .and_then(|v| v.get("error"));
    let message = error.and_then(|e| str_field(e, "message"));
    let code = error.and_then(|e| str_field(e, "status"));
    match (message, code) {
        (Some(message), Some(code)) => {
            wire::error_body(message, &code.to_ascii_lowercase(), code.into())
        }
        _ => wire::unrecognised_error(status, body),
    }
}

/// The response's candidates; none when the prompt was blocked.
fn candidates(response: &Value) -> Result<&[Value], WireError> {
    if !response.is_object() {
        return Err(malformed("the response is not an object"));
    }
    match response.get("candidates") {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(all)) => Ok(all),
        Some(_) => Err(malformed("`candidates` is not an array")),
    }
}

fn candidate_index(candidate: &Value, position: usize) -> u64 {
    candidate
        .get("index")
        .and_then(Value::as_u64)
        .unwrap_or(position as u64)
}

/// A candidate's parts; none when it stopped before writing (a safety stop).
fn parts(candidate: &Value) -> Result<&[Value], WireError> {
    match candidate.pointer("/content/parts") {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(parts)) => Ok(parts),
        Some(_) => Err(malformed("`content.parts` is not an array")),
    }
}

/// A part's answer text; `None` for a thought or a part that is not text.
fn part_text(part: &Value) -> Result<Option<&str>, WireError> {
    if part.get("thought").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    match part.get("text") {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(malformed("a part whose `text` is not a string")),
    }
}

/// A `functionCall` part's id, name and arguments (a JSON text, as OpenAI sends them);
/// `made` counts the calls so far, so that made-up ids stay unique.
fn function_call(part: &Value, made: &mut u64) -> Result<Option<Call>, WireError> {
    let Some(call) = part.get("functionCall") else {
        return Ok(None);
    };
    let name = str_field(call, "name")
        .ok_or_else(|| malformed("a `functionCall` without a name"))?
        .to_string();
    let arguments = match call.get("args") {
        None | Some(Value::Null) => "{}".to_string(),
        Some(args) => args.to_string(),
    };
    let id = match str_field(call, "id") {
        Some(id) => id.to_string(),
        None => format!("call_{made}"),
    };
    *made += 1;
    Ok(Some(Call {
        id,
        name,
        arguments,
    }))
}

struct Call {
    id: String,
    name: String,
    arguments: String,
}

/// OpenAI's `finish_reason` for Gemini's `finishReason`; a normal stop after function calls is
/// OpenAI's `tool_calls`.
fn finish_reason(reason: Option<&str>, called: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY",
        ) => "content_filter",
        None | Some("STOP") if called => "tool_calls",
        // `STOP`, `LANGUAGE`, `OTHER`, `MALFORMED_FUNCTION_CALL`, and reasons added later.
        _ => "stop",
    }
}

/// Why Gemini refused the prompt, if it did.
fn blocked(response: &Value) -> Option<&str> {
    response
        .pointer("/promptFeedback/blockReason")
        .and_then(Value::as_str)
}

/// OpenAI's usage for Gemini's `usageMetadata`: thinking counts as completion, as OpenAI counts
/// reasoning tokens, and is also given apart.
fn usage(metadata: Option<&Value>) -> Result<Value, WireError> {
    let metadata = match metadata {
        None | Some(Value::Null) => &Value::Null,
        Some(m) if m.is_object() => m,
        Some(_) => return Err(malformed("`usageMetadata` is not an object")),
    };
    let prompt = wire::count(metadata, "usageMetadata", "promptTokenCount")?.unwrap_or(0);
    let thoughts = wire::count(metadata, "usageMetadata", "thoughtsTokenCount")?;
    let completion = wire::count(metadata, "usageMetadata", "candidatesTokenCount")?.unwrap_or(0)
        + thoughts.unwrap_or(0);
    let total =
        wire::count(metadata, "usageMetadata", "totalTokenCount")?.unwrap_or(prompt + completion);
    let cached = wire::count(metadata, "usageMetadata", "cachedContentTokenCount")?.unwrap_or(0);
    let mut usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "prompt_tokens_details": {"cached_tokens": cached},
    });
    if let Some(thoughts) = thoughts {
        usage["completion_tokens_details"] = json!({"reasoning_tokens": thoughts});
    }
    Ok(usage)
}
