//! Anthropic Messages ⇄ OpenAI chat completions, pure: a request in, the chat request the core
//! answers; a completion (or its stream of chunks) back out as a message (or Anthropic's
//! stream events).

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};
use smallfirst_protocol::chat::{ContentPart, StreamOptions};
use smallfirst_protocol::messages::{
    AnthropicError, AnthropicMessage, AnthropicRole, AnthropicToolChoice, AnthropicUsage, Block,
    Content, ImageSource, MessageResponse, MessagesRequest,
};
use smallfirst_protocol::tools::{FunctionDef, NamedToolChoice, Tool, ToolChoiceMode};
use smallfirst_protocol::{
    ChatCompletion, ChatRequest, FinishReason, FunctionCall, FunctionKind, Message, MessageContent,
    Role, Stop, ToolCall, ToolChoice, Usage,
};

use crate::ApiError;

/// The request as an OpenAI chat completion.
pub(crate) fn to_chat(req: &MessagesRequest) -> Result<ChatRequest, ApiError> {
    let mut messages = Vec::new();
    if let Some(system) = &req.system {
        messages.push(message(Role::System, text_of(system, "system")?));
    }
    for (i, m) in req.messages.iter().enumerate() {
        translate_message(m, i, &mut messages)?;
    }
    let tools = req.tools.as_ref().map(|tools| {
        tools
            .iter()
            .map(|t| Tool::Function {
                function: FunctionDef {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    parameters: Some(t.input_schema.clone()),
                    strict: None,
                },
            })
            .collect()
    });
    let (tool_choice, parallel) = match &req.tool_choice {
        None => (None, None),
        Some(AnthropicToolChoice::Auto {
            disable_parallel_tool_use,
        }) => (
            Some(ToolChoice::Mode(ToolChoiceMode::Auto)),
            *disable_parallel_tool_use,
        ),
        Some(AnthropicToolChoice::Any {
            disable_parallel_tool_use,
        }) => (
            Some(ToolChoice::Mode(ToolChoiceMode::Required)),
            *disable_parallel_tool_use,
        ),
        Some(AnthropicToolChoice::Tool {
            name,
            disable_parallel_tool_use,
        }) => (
            Some(ToolChoice::Named(NamedToolChoice {
                kind: FunctionKind::Function,
                function: smallfirst_protocol::tools::FunctionName { name: name.clone() },
            })),
            *disable_parallel_tool_use,
        ),
        Some(AnthropicToolChoice::None) => (Some(ToolChoice::Mode(ToolChoiceMode::None)), None),
    };
    let stream = req.stream.unwrap_or(false);
    Ok(ChatRequest {
        model: req.model.clone(),
        messages,
        stream: Some(stream),
        stream_options: stream.then_some(StreamOptions {
            include_usage: Some(true),
        }),
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        max_tokens: Some(req.max_tokens),
        stop: req.stop_sequences.clone().map(Stop::Many),
        tools,
        tool_choice,
        parallel_tool_calls: parallel.map(|disable| !disable),
        metadata: req.metadata.clone(),
        extra: req.extra.clone(),
        ..ChatRequest::default()
    })
}

fn message(role: Role, text: String) -> Message {
    Message {
        role,
        content: Some(MessageContent::Text(text)),
        name: None,
        tool_calls: None,
        tool_call_id: None,
        refusal: None,
        extra: serde_json::Map::new(),
    }
}

/// A system prompt or tool result's text: a string, or text blocks joined.
fn text_of(content: &Content, param: &str) -> Result<String, ApiError> {
    match content {
        Content::Text(t) => Ok(t.clone()),
        Content::Blocks(blocks) => {
            let mut out = Vec::new();
            for b in blocks {
                match b {
                    Block::Text { text, .. } => out.push(text.as_str()),
                    other => {
                        return Err(ApiError::unsupported(
                            param,
                            format!("`{}` blocks are not supported here", block_kind(other)),
                        ));
                    }
                }
            }
            Ok(out.join("\n"))
        }
    }
}

fn block_kind(b: &Block) -> &'static str {
    match b {
        Block::Text { .. } => "text",
        Block::Image { .. } => "image",
        Block::ToolUse { .. } => "tool_use",
        Block::ToolResult { .. } => "tool_result",
        Block::Thinking { .. } => "thinking",
        Block::RedactedThinking { .. } => "redacted_thinking",
    }
}

/// One Anthropic message as chat messages: a user turn's tool results become `tool` messages
/// (before its other content), an assistant turn's `tool_use` blocks its tool calls. Thinking
/// blocks, the model's own, are not sent on.
fn translate_message(
    m: &AnthropicMessage,
    i: usize,
    out: &mut Vec<Message>,
) -> Result<(), ApiError> {
    let param = format!("messages[{i}].content");
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for block in m.content.blocks() {
        match (m.role, block) {
            (_, Block::Text { text, .. }) => parts.push(ContentPart::Text { text }),
            (AnthropicRole::User, Block::Image { source, .. }) => {
                let url = match source {
                    ImageSource::Base64 { media_type, data } => {
                        format!("data:{media_type};base64,{data}")
                    }
                    ImageSource::Url { url } => url,
                };
                parts.push(ContentPart::ImageUrl {
                    image_url: json!({ "url": url }),
                });
            }
            (
                AnthropicRole::User,
                Block::ToolResult {
                    tool_use_id,
                    content,
                    is_error,
                    ..
                },
            ) => {
                let mut text = match &content {
                    Some(c) => text_of(c, &param)?,
                    None => String::new(),
                };
                if is_error == Some(true) {
                    text = format!("Error: {text}");
                }
                let mut tool = message(Role::Tool, text);
                tool.tool_call_id = Some(tool_use_id);
                out.push(tool);
            }
            (
                AnthropicRole::Assistant,
                Block::ToolUse {
                    id, name, input, ..
                },
            ) => {
                calls.push(ToolCall {
                    id,
                    kind: FunctionKind::Function,
                    function: FunctionCall {
                        name,
                        arguments: input.to_string(),
                    },
                });
            }
            (AnthropicRole::Assistant, Block::Thinking { .. } | Block::RedactedThinking { .. }) => {
            }
            (role, other) => {
                return Err(ApiError::invalid(
                    param,
                    format!(
                        "a `{}` block cannot be in a{} message",
                        block_kind(&other),
                        if role == AnthropicRole::User {
                            " user"
                        } else {
                            "n assistant"
                        }
                    ),
                ));
            }
        }
    }
    let role = match m.role {
        AnthropicRole::User => Role::User,
        AnthropicRole::Assistant => Role::Assistant,
    };
    if parts.is_empty() && calls.is_empty() {
        return Ok(());
    }
    let only_text = parts.iter().all(|p| matches!(p, ContentPart::Text { .. }));
    let content = if parts.is_empty() {
        None
    } else if only_text {
        let texts: Vec<String> = parts
            .into_iter()
            .filter_map(|p| match p {
                ContentPart::Text { text } => Some(text),
                _ => None,
            })
            .collect();
        Some(MessageContent::Text(texts.join("\n")))
    } else {
        Some(MessageContent::Parts(parts))
    };
    out.push(Message {
        role,
        content,
        name: None,
        tool_calls: (!calls.is_empty()).then_some(calls),
        tool_call_id: None,
        refusal: None,
        extra: serde_json::Map::new(),
    });
    Ok(())
}

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`.
pub(super) fn stop_reason(f: &str) -> &'static str {
    match f {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

fn finish_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Other => "other",
    }
}

/// Anthropic's usage: input tokens exclude those read from a cache.
pub(super) fn usage(u: &Usage) -> AnthropicUsage {
    let cached = u.cached_tokens();
    AnthropicUsage {
        input_tokens: u.prompt_tokens.saturating_sub(cached),
        output_tokens: u.completion_tokens,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: cached,
    }
}

/// A message id from a completion's.
pub(super) fn message_id(id: &str) -> String {
    let tail = id.strip_prefix("chatcmpl-").unwrap_or(id);
    format!("msg_{tail}")
}

/// A tool call's arguments as the `input` object (a text that is not JSON kept as a string).
fn input_of(arguments: &str) -> Value {
    serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_string()))
}

/// A whole completion as a message.
pub(crate) fn from_completion(c: &ChatCompletion) -> MessageResponse {
    let mut content = Vec::new();
    let mut finish = "stop";
    if let Some(choice) = c.choices.first() {
        finish = finish_name(choice.finish_reason);
        if let Some(text) = choice.message.content.as_deref().filter(|t| !t.is_empty()) {
            content.push(Block::Text {
                text: text.to_string(),
                cache_control: None,
            });
        }
        for call in choice.message.tool_calls.iter().flatten() {
            content.push(Block::ToolUse {
                id: call.id.clone(),
                name: call.function.name.clone(),
                input: input_of(&call.function.arguments),
                cache_control: None,
            });
        }
    }
    MessageResponse {
        id: message_id(&c.id),
        kind: "message".into(),
        role: AnthropicRole::Assistant,
        model: c.model.clone(),
        content,
        stop_reason: Some(stop_reason(finish).into()),
        stop_sequence: None,
        usage: usage(&c.usage),
    }
}

/// One Anthropic stream event.
pub(super) fn event(out: &mut BytesMut, value: &Value) {
    let name = value["type"].as_str().unwrap_or("error");
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\ndata: ");
    // Writing a `Value` to memory cannot fail.
    let _ = serde_json::to_writer((&mut *out).writer(), value);
    out.put_slice(b"\n\n");
}

/// An error as a stream event.
pub(crate) fn error_event(status: u16, message: &str) -> Bytes {
    let mut out = BytesMut::new();
    let e = serde_json::to_value(AnthropicError::new(status, message)).unwrap_or(Value::Null);
    event(&mut out, &e);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(v: Value) -> MessagesRequest {
        serde_json::from_value(v).expect("a messages request")
    }

    #[test]
    fn a_conversation_with_tools_becomes_chat_messages() {
        let chat = to_chat(&request(json!({
            "model": "auto", "max_tokens": 64,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"},
                    {"type": "text", "text": "And tomorrow?"}]},
            ],
            "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["END"],
        })))
        .expect("translates");
        let v = serde_json::to_value(&chat).expect("serializes");
        assert_eq!(
            v["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            v["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(
            v["messages"][3],
            json!({"role": "tool", "content": "18 C", "tool_call_id": "toolu_1"})
        );
        assert_eq!(v["messages"][4]["content"], "And tomorrow?");
        assert_eq!(v["tool_choice"], "required");
        assert_eq!(v["parallel_tool_calls"], false);
        assert_eq!(v["stop"], json!(["END"]));
        assert_eq!(v["max_tokens"], 64);
    }

    #[test]
    fn blocks_in_the_wrong_turn_are_refused_by_place() {
        let e = to_chat(&request(json!({
            "model": "m", "max_tokens": 8,
            "messages": [{"role": "user", "content": [
                {"type": "tool_use", "id": "x", "name": "f", "input": {}}]}],
        })))
        .expect_err("a user turn cannot call");
        assert!(
            matches!(e, ApiError::InvalidRequest { ref param, .. } if param.as_deref() == Some("messages[0].content")),
            "{e}"
        );
    }

    #[test]
    fn an_upstream_answer_with_its_own_finish_and_no_usage_is_read() {
        let c: ChatCompletion = serde_json::from_value(json!({
            "id": "chatcmpl-x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "function_call",
                "message": {"role": "assistant", "content": "hi", "refusal": null}}],
        }))
        .expect("lenient");
        let m = from_completion(&c);
        assert_eq!(m.stop_reason.as_deref(), Some("end_turn"));
        assert_eq!(m.usage, AnthropicUsage::default());
    }
}
