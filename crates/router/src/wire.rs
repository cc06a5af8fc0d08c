//! What the provider translations share: their error and the identity of the OpenAI objects
//! they build.
//!
//! A translation is pure: an OpenAI request in, a provider's request out (`to_wire`); a
//! provider's response or stream event in, OpenAI objects out (`from_wire`). HTTP, retries and
//! deadlines are elsewhere, so each translation is tested offline against documented examples.

use serde_json::{Value, json};

/// Why a translation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The client's request asks for something the provider cannot express; a 400 naming
    /// `param`.
    #[error("{message}")]
    Unsupported { param: String, message: String },
    /// The provider sent something that is not in its documented shape; the tier failed.
    #[error("the upstream sent a malformed response: {0}")]
    Malformed(String),
    /// The provider reported an error inside a successful response (an `error` stream event).
    #[error("the upstream reported `{kind}`: {message}")]
    Upstream { kind: String, message: String },
}

/// Identity for the OpenAI objects a translation builds, when the provider gives none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// `chatcmpl-…`, used when the provider's response carries no id.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
}

/// A `data:` URL's media type and base64 payload; `None` for any other URL, and for a `data:`
/// URL whose payload is not marked base64 (both providers take only base64 inline data).
pub(crate) fn data_url(url: &str) -> Option<(&str, &str)> {
    let (head, data) = url.strip_prefix("data:")?.split_once(',')?;
    let head = head.strip_suffix(";base64")?;
    let mime = head.split(';').next().unwrap_or(head);
    Some((mime, data))
}

/// An OpenAI error body.
pub(crate) fn error_body(message: &str, kind: &str, code: Value) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// An OpenAI error body for an answer not in the provider's error shape (a proxy's HTML page,
/// an empty body): the status, its OpenAI error type, and the start of what came.
pub(crate) fn unrecognised_error(status: u16, body: &[u8]) -> Value {
    const EXCERPT_CHARS: usize = 300;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = if text.is_empty() {
        format!("the upstream answered HTTP {status} with an empty body")
    } else if text.chars().count() > EXCERPT_CHARS {
        let excerpt: String = text.chars().take(EXCERPT_CHARS - 1).collect();
        format!("the upstream answered HTTP {status}: {excerpt}…")
    } else {
        format!("the upstream answered HTTP {status}: {text}")
    };
    error_body(&message, status_kind(status), Value::Null)
}

/// OpenAI's error type for an HTTP status.
fn status_kind(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500..=599 => "api_error",
        _ => "upstream_error",
    }
}

/// An OpenAI assistant message: `content` is null when the model wrote no text, and
/// `tool_calls` is left out when it called nothing.
pub(crate) fn assistant_message(content: Option<String>, tool_calls: Vec<Value>) -> Value {
    let mut message = json!({"role": "assistant", "content": content});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    message["refusal"] = Value::Null;
    message
}

/// An OpenAI tool call; `arguments` is a JSON text, as OpenAI sends it.
pub(crate) fn tool_call(id: &str, name: &str, arguments: String) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

/// What every chunk of one streamed completion shares.
#[derive(Debug, Clone)]
pub(crate) struct ChunkHead {
    pub(crate) id: String,
    pub(crate) created: u64,
    pub(crate) model: String,
}

impl ChunkHead {
    /// A `chat.completion.chunk` with one choice.
    pub(crate) fn choice(&self, index: u64, delta: Value, finish_reason: Option<&str>) -> Value {
        self.chunk(json!([{
            "index": index,
            "delta": delta,
            "logprobs": null,
            "finish_reason": finish_reason,
        }]))
    }

    /// The last chunk of a stream whose client asked for usage: no choices.
    pub(crate) fn usage(&self, usage: Value) -> Value {
        let mut chunk = self.chunk(json!([]));
        chunk["usage"] = usage;
        chunk
    }

    fn chunk(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }
}

/// A string member of a JSON object.
pub(crate) fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// A request member the provider cannot express.
pub(crate) fn unsupported(param: impl Into<String>, message: impl Into<String>) -> WireError {
    WireError::Unsupported {
        param: param.into(),
        message: message.into(),
    }
}

pub(crate) fn malformed(what: impl Into<String>) -> WireError {
    WireError::Malformed(what.into())
}

/// A token count in a provider's usage object (`object` names it in errors); absent and null
/// are the same.
pub(crate) fn count(usage: &Value, object: &str, key: &str) -> Result<Option<u64>, WireError> {
    match usage.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| malformed(format!("`{object}.{key}` is not a count"))),
    }
}

/// One function tool of a request's `tools`, checked: its name, description and parameters.
pub(crate) struct FunctionTool<'a> {
    pub tool: &'a Value,
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub parameters: Option<&'a Value>,
}

/// A request's `tools`, each a function tool with a name, or an error naming the one that is
/// not (`provider` says who refuses it).
pub(crate) fn function_tools<'a>(
    tools: &'a Value,
    provider: &str,
) -> Result<Vec<FunctionTool<'a>>, WireError> {
    let tools = tools
        .as_array()
        .ok_or_else(|| unsupported("tools", "`tools` must be an array"))?;
    tools
        .iter()
        .enumerate()
        .map(|(k, tool)| {
            if str_field(tool, "type").is_some_and(|t| t != "function") {
                return Err(unsupported(
                    format!("tools[{k}].type"),
                    format!("{provider} takes only function tools here"),
                ));
            }
            let function = tool.get("function");
            let name = function.and_then(|f| str_field(f, "name")).ok_or_else(|| {
                unsupported(
                    format!("tools[{k}].function.name"),
                    "a tool needs a function name",
                )
            })?;
            Ok(FunctionTool {
                tool,
                name,
                description: function.and_then(|f| str_field(f, "description")),
                parameters: function
                    .and_then(|f| f.get("parameters"))
                    .filter(|p| !p.is_null()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_give_their_type_and_payload() {
        assert_eq!(
            data_url("data:image/png;base64,iVBO"),
            Some(("image/png", "iVBO"))
        );
        assert_eq!(
            data_url("data:image/svg+xml;charset=utf-8;base64,PHN2"),
            Some(("image/svg+xml", "PHN2"))
        );
        assert_eq!(data_url("data:text/plain,hello"), None);
        assert_eq!(data_url("https://example.com/a.png"), None);
    }

    #[test]
    fn an_unrecognised_error_keeps_the_status_and_a_short_excerpt() {
        let body = "x".repeat(1000);
        let error = unrecognised_error(502, body.as_bytes());
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("the upstream answered HTTP 502: xxx"));
        assert!(message.chars().count() < 300 + 40);
        assert_eq!(error["error"]["type"], "api_error");
        let empty = unrecognised_error(429, b"");
        assert_eq!(
            empty["error"]["message"],
            "the upstream answered HTTP 429 with an empty body"
        );
        assert_eq!(empty["error"]["type"], "rate_limit_error");
    }
}
