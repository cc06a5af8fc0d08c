//! Messages stream events → `chat.completion.chunk`s, one event at a time.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{Usage, finish_reason, malformed, str_field};
use crate::wire::{ChunkHead, Meta, WireError};

/// One streamed Messages response becoming OpenAI chunks.
///
/// Feed it each SSE event (its `event:` name and parsed `data:`) in order. Anthropic's content
/// blocks are numbered among all blocks; OpenAI numbers tool calls among tool calls, so the
/// stream remembers which block is which call.
#[derive(Debug)]
pub struct Stream {
    head: ChunkHead,
    include_usage: bool,
    usage: Usage,
    /// Anthropic content block index → OpenAI tool call index.
    tool_calls: HashMap<u64, u64>,
    usage_sent: bool,
}

impl Stream {
    /// `meta.id` stands until `message_start` gives Anthropic's id; `include_usage` is the
    /// client's `stream_options.include_usage`.
    pub fn new(meta: Meta, include_usage: bool) -> Self {
        Stream {
            head: ChunkHead {
                id: meta.id,
                created: meta.created,
                model: String::new(),
            },
            include_usage,
            usage: Usage::default(),
            tool_calls: HashMap::new(),
            usage_sent: false,
        }
    }

    /// The chunks one event produces (often none). An `error` event is
    /// [`WireError::Upstream`]; an event name this code does not know is ignored, as Anthropic
    /// asks of clients, since it may add event types.
    pub fn event(&mut self, name: &str, data: &Value) -> Result<Vec<Value>, WireError> {
        match name {
            "message_start" => self.message_start(data),
            "content_block_start" => self.block_start(data),
            "content_block_delta" => self.block_delta(data),
            "message_delta" => self.message_delta(data),
            "message_stop" if self.include_usage && !self.usage_sent => {
                self.usage_sent = true;
                Ok(vec![self.head.usage(self.usage.to_openai())])
            }
            "error" => {
                let error = data.get("error");
                Err(WireError::Upstream {
                    kind: error
                        .and_then(|e| str_field(e, "type"))
                        .unwrap_or("error")
                        .into(),
                    message: error
                        .and_then(|e| str_field(e, "message"))
                        .unwrap_or_default()
                        .into(),
                })
            }
            // `ping`, `content_block_stop`, and events added later.
            _ => Ok(Vec::new()),
        }
    }

    fn message_start(&mut self, data: &Value) -> Result<Vec<Value>, WireError> {
        let message = data
            .get("message")
            .filter(|m| m.is_object())
            .ok_or_else(|| malformed("`message_start` without a message"))?;
        if let Some(id) = str_field(message, "id") {
            self.head.id = id.into();
        }
        if let Some(model) = str_field(message, "model") {
            self.head.model = model.into();
        }
        if let Some(usage) = message.get("usage") {
            self.usage.update(usage)?;
        }
        Ok(vec![
            self.content(json!({"role": "assistant", "content": ""})),
        ])
    }

    fn block_start(&mut self, data: &Value) -> Result<Vec<Value>, WireError> {
        let index = block_index(data)?;
        let block = data
            .get("content_block")
            .ok_or_else(|| malformed("`content_block_start` without a block"))?;
        match str_field(block, "type") {
            Some("text") => Ok(self.text(str_field(block, "text").unwrap_or_default())),
            Some("tool_use") => {
                let (Some(id), Some(name)) = (str_field(block, "id"), str_field(block, "name"))
                else {
                    return Err(malformed("a streamed tool use without id or name"));
                };
                let call = self.tool_calls.len() as u64;
                self.tool_calls.insert(index, call);
                Ok(vec![self.content(json!({"tool_calls": [{
                    "index": call,
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }]}))])
            }
            // Thinking and server-tool blocks have no place in an OpenAI message.
            _ => Ok(Vec::new()),
        }
    }

    fn block_delta(&mut self, data: &Value) -> Result<Vec<Value>, WireError> {
        let index = block_index(data)?;
        let delta = data
            .get("delta")
            .ok_or_else(|| malformed("`content_block_delta` without a delta"))?;
        match str_field(delta, "type") {
            Some("text_delta") => Ok(self.text(str_field(delta, "text").unwrap_or_default())),
            Some("input_json_delta") => {
                let call = *self.tool_calls.get(&index).ok_or_else(|| {
                    malformed(format!(
                        "tool input for block {index}, which is no tool use"
                    ))
                })?;
                let partial = str_field(delta, "partial_json").unwrap_or_default();
                if partial.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(vec![self.content(json!({"tool_calls": [{
                    "index": call,
                    "function": {"arguments": partial},
                }]}))])
            }
            _ => Ok(Vec::new()),
        }
    }

    fn message_delta(&mut self, data: &Value) -> Result<Vec<Value>, WireError> {
        if let Some(usage) = data.get("usage") {
            self.usage.update(usage)?;
        }
        let Some(stop_reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) else {
            return Ok(Vec::new());
        };
        Ok(vec![self.head.choice(
            0,
            json!({}),
            Some(finish_reason(stop_reason)),
        )])
    }

    fn text(&self, text: &str) -> Vec<Value> {
        if text.is_empty() {
            return Vec::new();
        }
        vec![self.content(json!({"content": text}))]
    }

    fn content(&self, delta: Value) -> Value {
        self.head.choice(0, delta, None)
    }
}

fn block_index(data: &Value) -> Result<u64, WireError> {
    data.get("index")
        .and_then(Value::as_u64)
        .ok_or_else(|| malformed("a content block event without an index"))
}
