//! OpenAI Responses ⇄ chat completions, pure: a request's `instructions`, `input` items,
//! function tools and `text.format` become the chat request the core answers; a completion (or
//! its chunks) comes back as a `response` object (or the Responses stream events).

use serde_json::{Value, json};
use smallfirst_protocol::chat::{ContentPart, StreamOptions};
use smallfirst_protocol::responses::{ResponsesRequest, TextFormat};
use smallfirst_protocol::tools::{
    FunctionDef, FunctionName, JsonSchemaFormat, NamedToolChoice, ResponseFormat, Tool,
    ToolChoiceMode,
};
use smallfirst_protocol::{
    ChatCompletion, ChatRequest, FinishReason, FunctionCall, FunctionKind, Message, MessageContent,
    Role, ToolCall, ToolChoice, Usage,
};

use crate::ApiError;

/// The request as an OpenAI chat completion.
pub(crate) fn to_chat(req: &ResponsesRequest) -> Result<ChatRequest, ApiError> {
    if req.previous_response_id.is_some() {
        return Err(ApiError::unsupported(
            "previous_response_id",
            "responses are not stored (`store: false`), so there is no earlier response to \
             continue: send the whole conversation in `input`",
        ));
    }
    let mut messages = Vec::new();
    if let Some(text) = &req.instructions {
        messages.push(message(
            Role::System,
            Some(MessageContent::Text(text.clone())),
        ));
    }
    match &req.input {
        Value::String(text) => {
            messages.push(message(
                Role::User,
                Some(MessageContent::Text(text.clone())),
            ));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, &format!("input[{i}]"), &mut messages)?;
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "input",
                "`input` must be a string or a list of items",
            ));
        }
    }
    let tools = match &req.tools {
        None => None,
        Some(tools) => Some(
            tools
                .iter()
                .enumerate()
                .map(|(i, t)| tool(t, &format!("tools[{i}]")))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let tool_choice = req.tool_choice.as_ref().map(tool_choice).transpose()?;
    let response_format = match req.text.as_ref().and_then(|t| t.format.as_ref()) {
        None | Some(TextFormat::Text) => None,
        Some(TextFormat::JsonObject) => Some(ResponseFormat::JsonObject),
        Some(TextFormat::JsonSchema {
            name,
            schema,
            description,
            strict,
        }) => Some(ResponseFormat::JsonSchema {
            json_schema: JsonSchemaFormat {
                name: name.clone(),
                description: description.clone(),
                schema: Some(schema.clone()),
                strict: *strict,
            },
        }),
    };
    let stream = req.stream.unwrap_or(false);
    let mut extra = req.extra.clone();
    if let Some(text) = &req.text {
        extra.extend(
            text.extra
                .iter()
                .map(|(k, v)| (format!("text.{k}"), v.clone())),
        );
    }
    Ok(ChatRequest {
        model: req.model.clone(),
        messages,
        stream: Some(stream),
        stream_options: stream.then_some(StreamOptions {
            include_usage: Some(true),
        }),
        temperature: req.temperature,
        top_p: req.top_p,
        max_completion_tokens: req.max_output_tokens,
        response_format,
        tools,
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls,
        metadata: req.metadata.clone(),
        user: req.user.clone(),
        extra,
        ..ChatRequest::default()
    })
}

fn message(role: Role, content: Option<MessageContent>) -> Message {
    Message {
        role,
        content,
        name: None,
        tool_calls: None,
        tool_call_id: None,
        refusal: None,
        extra: serde_json::Map::new(),
    }
}

fn text_field<'a>(v: &'a Value, key: &str, place: &str) -> Result<&'a str, ApiError> {
    v[key].as_str().ok_or_else(|| {
        ApiError::invalid(
            format!("{place}.{key}"),
            format!("`{key}` must be a string"),
        )
    })
}

/// One input item: a message (`role` and `content`), a `function_call` the model made, or a
/// `function_call_output` answering one.
fn input_item(item: &Value, place: &str, out: &mut Vec<Message>) -> Result<(), ApiError> {
    let kind = item["type"].as_str().unwrap_or("message");
    match kind {
        "message" => {
            let role = match text_field(item, "role", place)? {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "system" => Role::System,
                "developer" => Role::Developer,
                other => {
                    return Err(ApiError::invalid(
                        format!("{place}.role"),
                        format!("unknown role `{}`", other.escape_debug()),
                    ));
                }
            };
            let content = match &item["content"] {
                Value::String(t) => MessageContent::Text(t.clone()),
                Value::Array(parts) => {
                    let mut out_parts = Vec::new();
                    for (j, p) in parts.iter().enumerate() {
                        out_parts.push(part(p, &format!("{place}.content[{j}]"))?);
                    }
                    if out_parts
                        .iter()
                        .all(|p| matches!(p, ContentPart::Text { .. }))
                    {
                        let texts: Vec<String> = out_parts
                            .into_iter()
                            .filter_map(|p| match p {
                                ContentPart::Text { text } => Some(text),
                                _ => None,
                            })
                            .collect();
                        MessageContent::Text(texts.join("\n"))
                    } else {
                        MessageContent::Parts(out_parts)
                    }
                }
                _ => {
                    return Err(ApiError::invalid(
                        format!("{place}.content"),
                        "`content` must be a string or a list of parts",
                    ));
                }
            };
            out.push(message(role, Some(content)));
        }
        "function_call" => {
            let call = ToolCall {
                id: text_field(item, "call_id", place)?.to_string(),
                kind: FunctionKind::Function,
                function: FunctionCall {
                    name: text_field(item, "name", place)?.to_string(),
                    arguments: text_field(item, "arguments", place)?.to_string(),
                },
            };
            // Calls made together are one assistant turn.
            match out.last_mut() {
                Some(m) if m.role == Role::Assistant && m.tool_calls.is_some() => {
                    m.tool_calls.get_or_insert_with(Vec::new).push(call);
                }
                _ => {
                    let mut m = message(Role::Assistant, None);
                    m.tool_calls = Some(vec![call]);
                    out.push(m);
                }
            }
        }
        "function_call_output" => {
            let output = match &item["output"] {
                Value::String(t) => t.clone(),
                other => other.to_string(),
            };
            let mut m = message(Role::Tool, Some(MessageContent::Text(output)));
            m.tool_call_id = Some(text_field(item, "call_id", place)?.to_string());
            out.push(m);
        }
        other => {
            return Err(ApiError::unsupported(
                format!("{place}.type"),
                format!(
                    "input items of type `{}` are not supported",
                    other.escape_debug()
                ),
            ));
        }
    }
    Ok(())
}

fn part(p: &Value, place: &str) -> Result<ContentPart, ApiError> {
    match p["type"].as_str().unwrap_or("") {
        "input_text" | "output_text" | "text" => Ok(ContentPart::Text {
            text: text_field(p, "text", place)?.to_string(),
        }),
        "input_image" => Ok(ContentPart::ImageUrl {
            image_url: json!({"url": text_field(p, "image_url", place)?}),
        }),
        other => Err(ApiError::unsupported(
            format!("{place}.type"),
            format!(
                "content parts of type `{}` are not supported",
                other.escape_debug()
            ),
        )),
    }
}

fn tool(t: &Value, place: &str) -> Result<Tool, ApiError> {
    if t["type"] != "function" {
        return Err(ApiError::unsupported(
            format!("{place}.type"),
            "only `function` tools are supported",
        ));
    }
    Ok(Tool::Function {
        function: FunctionDef {
            name: text_field(t, "name", place)?.to_string(),
            description: t["description"].as_str().map(str::to_string),
            parameters: t.get("parameters").cloned(),
            strict: t["strict"].as_bool(),
        },
    })
}

fn tool_choice(v: &Value) -> Result<ToolChoice, ApiError> {
    let mode = |m| Ok(ToolChoice::Mode(m));
    match v {
        Value::String(s) if s == "auto" => mode(ToolChoiceMode::Auto),
        Value::String(s) if s == "none" => mode(ToolChoiceMode::None),
        Value::String(s) if s == "required" => mode(ToolChoiceMode::Required),
        Value::Object(_) if v["type"] == "function" => Ok(ToolChoice::Named(NamedToolChoice {
            kind: FunctionKind::Function,
            function: FunctionName {
                name: text_field(v, "name", "tool_choice")?.to_string(),
            },
        })),
        _ => Err(ApiError::unsupported(
            "tool_choice",
            "expected `auto`, `none`, `required` or {\"type\": \"function\", \"name\": …}",
        )),
    }
}

/// A response id from a completion's.
pub(super) fn response_id(id: &str) -> String {
    format!("resp_{}", id.strip_prefix("chatcmpl-").unwrap_or(id))
}

pub(super) fn usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens()},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens()},
        "total_tokens": u.total_tokens,
    })
}

/// What a response object repeats of its request.
#[derive(Debug, Clone)]
pub(crate) struct Echo {
    pub model: String,
    pub instructions: Option<String>,
    pub tools: Value,
    pub tool_choice: Value,
    pub text: Value,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub metadata: Value,
    pub max_output_tokens: Option<u32>,
}

impl Echo {
    pub(crate) fn of(req: &ResponsesRequest) -> Self {
        Echo {
            model: req.model.clone(),
            instructions: req.instructions.clone(),
            tools: json!(req.tools.clone().unwrap_or_default()),
            tool_choice: req.tool_choice.clone().unwrap_or(json!("auto")),
            text: req
                .text
                .as_ref()
                .and_then(|t| serde_json::to_value(t).ok())
                .unwrap_or(json!({"format": {"type": "text"}})),
            temperature: req.temperature,
            top_p: req.top_p,
            metadata: req
                .metadata
                .as_ref()
                .map_or(json!({}), |m| Value::Object(m.value.clone())),
            max_output_tokens: req.max_output_tokens,
        }
    }

    /// A response object with `status`, `output` and `usage`.
    pub(super) fn response(
        &self,
        id: &str,
        created: u64,
        status: &str,
        output: Vec<Value>,
        usage: Value,
    ) -> Value {
        json!({
            "id": id, "object": "response", "created_at": created, "status": status,
            "error": null,
            "incomplete_details": (status == "incomplete").then(|| json!({"reason": "max_output_tokens"})),
            "instructions": self.instructions, "model": self.model, "output": output,
            "parallel_tool_calls": true, "previous_response_id": null, "store": false,
            "temperature": self.temperature, "top_p": self.top_p,
            "max_output_tokens": self.max_output_tokens,
            "tool_choice": self.tool_choice, "tools": self.tools, "text": self.text,
            "truncation": "disabled", "metadata": self.metadata, "usage": usage,
        })
    }
}

pub(super) fn text_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

pub(super) fn call_item(
    id: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
    status: &str,
) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
        "arguments": arguments, "status": status})
}

/// A whole completion as a response object.
pub(crate) fn from_completion(c: &ChatCompletion, echo: &Echo) -> Value {
    let id = response_id(&c.id);
    let mut output = Vec::new();
    let mut status = "completed";
    if let Some(choice) = c.choices.first() {
        if choice.finish_reason == FinishReason::Length {
            status = "incomplete";
        }
        if let Some(text) = choice.message.content.as_deref().filter(|t| !t.is_empty()) {
            output.push(text_item(&format!("msg_{}", &id[5..]), text, "completed"));
        }
        for (i, call) in choice.message.tool_calls.iter().flatten().enumerate() {
            output.push(call_item(
                &format!("fc_{}_{i}", &id[5..]),
                &call.id,
                &call.function.name,
                &call.function.arguments,
                "completed",
            ));
        }
    }
    echo.response(&id, c.created, status, output, usage(&c.usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(v: Value) -> ResponsesRequest {
        serde_json::from_value(v).expect("a responses request")
    }

    #[test]
    fn items_become_chat_messages() {
        let chat = to_chat(&request(json!({
            "model": "auto", "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather in Oslo?"}]},
                {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Oslo\"}"},
                {"type": "function_call", "call_id": "call_2", "name": "weather", "arguments": "{\"city\":\"Bergen\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "4 C"},
            ],
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "weather"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
            "max_output_tokens": 30,
        })))
        .expect("translates");
        let v = serde_json::to_value(&chat).expect("serializes");
        assert_eq!(
            v["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            v["messages"][2]["tool_calls"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(
            v["messages"][3],
            json!({"role": "tool", "content": "4 C", "tool_call_id": "call_1"})
        );
        assert_eq!(v["tool_choice"]["function"]["name"], "weather");
        assert_eq!(v["response_format"]["json_schema"]["strict"], true);
        assert_eq!(v["max_completion_tokens"], 30);
    }

    #[test]
    fn stored_state_and_unknown_items_are_refused_by_place() {
        let e = to_chat(&request(
            json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
        ))
        .expect_err("not stored");
        assert!(
            matches!(e, ApiError::InvalidRequest { ref param, .. } if param.as_deref() == Some("previous_response_id"))
        );
        let e = to_chat(&request(
            json!({"model": "m", "input": [{"type": "reasoning", "summary": []}]}),
        ))
        .expect_err("unknown item");
        assert!(
            matches!(e, ApiError::InvalidRequest { ref param, .. } if param.as_deref() == Some("input[0].type"))
        );
    }
}
