//! A chat completion request → a Messages request.

use serde_json::{Map, Value, json};

use super::{str_field, unsupported};
use crate::wire::{self, WireError};

/// Anthropic requires `max_tokens`; OpenAI lets a client leave it out.
const DEFAULT_MAX_TOKENS: u64 = 4096;

/// A chat completion request → a Messages request for `model`.
///
/// System and developer messages, wherever they stand, become the top-level `system`: a string,
/// or text blocks when one of them carries `cache_control`. Consecutive messages of one role
/// are merged into one turn, and tool results go in a user turn, because Anthropic requires
/// turns to alternate. Fields that mean nothing to Anthropic (`seed`, penalties,
/// `stream_options`, …) are dropped; fields whose meaning Anthropic cannot honour (`n` > 1,
/// `logprobs`, a JSON `response_format`) are refused, and the caller decides what to do.
pub fn to_wire(request: &Value, model: &str) -> Result<Value, WireError> {
    refuse_unsupported(request)?;
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| unsupported("messages", "`messages` must be an array of messages"))?;
    let mut system = Vec::new();
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (role, mut blocks) = match role {
            "system" | "developer" => ("system", system_blocks(message, i)?),
            "user" => ("user", content_blocks(message.get("content"), i)?),
            "assistant" => ("assistant", assistant_blocks(message, i)?),
            "tool" => ("user", vec![tool_result(message, i)?]),
            _ => {
                return Err(unsupported(
                    format!("messages[{i}].role"),
                    format!("Anthropic has no message role `{role}`"),
                ));
            }
        };
        if let (Some(mark), Some(last)) = (marker(message), blocks.last_mut()) {
            last["cache_control"] = mark.clone();
        }
        if role == "system" {
            system.extend(blocks);
            continue;
        }
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, previous)) if *last == role => previous.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }

    let mut body = Map::new();
    body.insert("model".into(), model.into());
    body.insert("max_tokens".into(), max_tokens(request)?.into());
    if let Some(system) = system_prompt(system) {
        body.insert("system".into(), system);
    }
    let turns = turns
        .into_iter()
        .map(|(role, blocks)| json!({"role": role, "content": collapse(blocks)}));
    body.insert("messages".into(), turns.collect());
    if let Some(tools) = request.get("tools").filter(|t| !t.is_null()) {
        let tools = wire_tools(tools)?;
        if !tools.is_empty() {
            // A tool choice without tools means nothing, to Anthropic as to OpenAI.
            let parallel = request.get("parallel_tool_calls").and_then(Value::as_bool);
            let choice = tool_choice(request.get("tool_choice"), parallel)?;
            body.insert("tools".into(), tools.into());
            if let Some(choice) = choice {
                body.insert("tool_choice".into(), choice);
            }
        }
    }
    if let Some(stop) = stop_sequences(request.get("stop"))? {
        body.insert("stop_sequences".into(), stop);
    }
    for key in ["temperature", "top_p"] {
        if let Some(value) = request.get(key).filter(|v| v.is_number()) {
            body.insert(key.into(), value.clone());
        }
    }
    if let Some(stream) = request.get("stream").filter(|v| v.is_boolean()) {
        body.insert("stream".into(), stream.clone());
    }
    if let Some(user) = request.get("user").and_then(Value::as_str) {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    Ok(Value::Object(body))
}

fn refuse_unsupported(request: &Value) -> Result<(), WireError> {
    if request
        .get("n")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return Err(unsupported(
            "n",
            "Anthropic gives one choice: `n` must be 1",
        ));
    }
    if request.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported(
            "logprobs",
            "Anthropic does not return log-probabilities",
        ));
    }
    // OpenAI takes up to 2; Anthropic refuses more than 1. Said here, before anything is sent.
    if let Some(t) = request
        .get("temperature")
        .and_then(Value::as_f64)
        .filter(|&t| t > 1.0)
    {
        return Err(unsupported(
            "temperature",
            format!("Anthropic takes `temperature` from 0 to 1, got {t}"),
        ));
    }
    match request
        .pointer("/response_format/type")
        .and_then(Value::as_str)
    {
        None | Some("text") => Ok(()),
        Some(kind) => Err(unsupported(
            "response_format",
            format!("Anthropic has no `{kind}` response format"),
        )),
    }
}

fn max_tokens(request: &Value) -> Result<u64, WireError> {
    for key in ["max_completion_tokens", "max_tokens"] {
        match request.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => {
                return v
                    .as_u64()
                    .ok_or_else(|| unsupported(key, format!("`{key}` must be a whole number")));
            }
        }
    }
    Ok(DEFAULT_MAX_TOKENS)
}

/// Message `i`'s content as Anthropic blocks, each part's `cache_control` kept.
fn content_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, WireError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![json!({"type": "text", "text": text})]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| part_block(part, i, j))
            .collect(),
        Some(_) => Err(unsupported(
            format!("messages[{i}].content"),
            "content must be a string or an array of parts",
        )),
    }
}

fn part_block(part: &Value, i: usize, j: usize) -> Result<Value, WireError> {
    let param = |suffix: &str| format!("messages[{i}].content[{j}]{suffix}");
    let kind = str_field(part, "type").unwrap_or_default();
    let mut block = match kind {
        "text" | "refusal" => {
            let text = str_field(part, kind).ok_or_else(|| {
                unsupported(param(""), format!("a `{kind}` part needs its `{kind}`"))
            })?;
            json!({"type": "text", "text": text})
        }
        "image_url" => {
            let image = part.get("image_url");
            let url = image
                .and_then(|v| v.as_str().or_else(|| str_field(v, "url")))
                .unwrap_or_default();
            image_block(url).ok_or_else(|| {
                unsupported(
                    param(".image_url.url"),
                    "an image must be a base64 `data:` URL or an http(s) URL",
                )
            })?
        }
        "file" => {
            let data = part.pointer("/file/file_data").and_then(Value::as_str);
            match data.and_then(wire::data_url) {
                Some((mime @ "application/pdf", data)) => json!({
                    "type": "document",
                    "source": {"type": "base64", "media_type": mime, "data": data},
                }),
                _ => {
                    return Err(unsupported(
                        param(".file"),
                        "Anthropic takes a file only as a PDF `data:` URL in `file_data`",
                    ));
                }
            }
        }
        _ => {
            return Err(unsupported(
                param(".type"),
                format!("Anthropic has no content part of type `{kind}`"),
            ));
        }
    };
    if let Some(mark) = marker(part) {
        block["cache_control"] = mark.clone();
    }
    Ok(block)
}

fn image_block(url: &str) -> Option<Value> {
    let source = if let Some((mime, data)) = wire::data_url(url) {
        json!({"type": "base64", "media_type": mime, "data": data})
    } else if url.starts_with("https://") || url.starts_with("http://") {
        json!({"type": "url", "url": url})
    } else {
        return None;
    };
    Some(json!({"type": "image", "source": source}))
}

fn system_blocks(message: &Value, i: usize) -> Result<Vec<Value>, WireError> {
    let blocks = content_blocks(message.get("content"), i)?;
    if blocks.iter().any(|b| b["type"] != "text") {
        return Err(unsupported(
            format!("messages[{i}].content"),
            "Anthropic's system prompt takes only text",
        ));
    }
    Ok(blocks)
}

fn assistant_blocks(message: &Value, i: usize) -> Result<Vec<Value>, WireError> {
    // Anthropic refuses empty text blocks; OpenAI clients send `""` beside tool calls.
    let mut blocks: Vec<Value> = content_blocks(message.get("content"), i)?
        .into_iter()
        .filter(|b| !(b["text"] == "" && b.get("cache_control").is_none()))
        .collect();
    let Some(calls) = message.get("tool_calls").filter(|v| !v.is_null()) else {
        return Ok(blocks);
    };
    let calls = calls.as_array().ok_or_else(|| {
        unsupported(
            format!("messages[{i}].tool_calls"),
            "`tool_calls` must be an array",
        )
    })?;
    for (j, call) in calls.iter().enumerate() {
        blocks.push(tool_use(call, i, j)?);
    }
    Ok(blocks)
}

fn tool_use(call: &Value, i: usize, j: usize) -> Result<Value, WireError> {
    let param = |suffix: &str| format!("messages[{i}].tool_calls[{j}]{suffix}");
    if str_field(call, "type").is_some_and(|t| t != "function") {
        return Err(unsupported(
            param(".type"),
            "Anthropic takes only function tool calls",
        ));
    }
    let id = str_field(call, "id")
        .ok_or_else(|| unsupported(param(".id"), "a tool call needs an `id`"))?;
    let name = call
        .pointer("/function/name")
        .and_then(Value::as_str)
        .ok_or_else(|| unsupported(param(".function.name"), "a tool call needs a name"))?;
    let arguments = call
        .pointer("/function/arguments")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let input = arguments_object(arguments).ok_or_else(|| {
        unsupported(
            param(".function.arguments"),
            "Anthropic needs tool call arguments to be a JSON object",
        )
    })?;
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

/// Tool call arguments as a JSON object; empty arguments are the empty object.
fn arguments_object(arguments: &str) -> Option<Value> {
    if arguments.trim().is_empty() {
        return Some(json!({}));
    }
    serde_json::from_str::<Value>(arguments)
        .ok()
        .filter(Value::is_object)
}

fn tool_result(message: &Value, i: usize) -> Result<Value, WireError> {
    let id = str_field(message, "tool_call_id").ok_or_else(|| {
        unsupported(
            format!("messages[{i}].tool_call_id"),
            "a tool message needs the `tool_call_id` it answers",
        )
    })?;
    let mut block = json!({"type": "tool_result", "tool_use_id": id});
    match message.get("content") {
        Some(Value::String(text)) => block["content"] = text.as_str().into(),
        Some(Value::Array(_)) => {
            block["content"] = content_blocks(message.get("content"), i)?.into();
        }
        _ => {}
    }
    Ok(block)
}

/// The top-level `system`: a string unless a block carries a cache marker, which only a block
/// can hold.
fn system_prompt(blocks: Vec<Value>) -> Option<Value> {
    if blocks.is_empty() {
        return None;
    }
    if blocks.iter().any(|b| b.get("cache_control").is_some()) {
        return Some(blocks.into());
    }
    let texts: Vec<&str> = blocks.iter().filter_map(|b| str_field(b, "text")).collect();
    Some(texts.join("\n\n").into())
}

/// A turn's content: a lone unmarked text block reads as the plain string it came from.
fn collapse(blocks: Vec<Value>) -> Value {
    if let [block] = blocks.as_slice()
        && block["type"] == "text"
        && block.get("cache_control").is_none()
    {
        return block["text"].clone();
    }
    blocks.into()
}

fn wire_tools(tools: &Value) -> Result<Vec<Value>, WireError> {
    let tools = wire::function_tools(tools, "Anthropic")?;
    Ok(tools
        .into_iter()
        .map(|t| {
            let mut wired = json!({"name": t.name});
            if let Some(description) = t.description {
                wired["description"] = description.into();
            }
            wired["input_schema"] = t
                .parameters
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            if let Some(mark) = marker(t.tool).or_else(|| t.tool.get("function").and_then(marker)) {
                wired["cache_control"] = mark.clone();
            }
            wired
        })
        .collect())
}

fn tool_choice(choice: Option<&Value>, parallel: Option<bool>) -> Result<Option<Value>, WireError> {
    let mut wired = match choice {
        None | Some(Value::Null) if parallel == Some(false) => json!({"type": "auto"}),
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            _ => {
                return Err(unsupported(
                    "tool_choice",
                    format!("unknown tool choice `{mode}`"),
                ));
            }
        },
        Some(named) => {
            let name = named
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    unsupported("tool_choice", "a named tool choice needs `function.name`")
                })?;
            json!({"type": "tool", "name": name})
        }
    };
    if parallel == Some(false) && wired["type"] != "none" {
        wired["disable_parallel_tool_use"] = true.into();
    }
    Ok(Some(wired))
}

fn stop_sequences(stop: Option<&Value>) -> Result<Option<Value>, WireError> {
    match stop {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(json!([s]))),
        Some(Value::Array(all)) if all.iter().all(Value::is_string) => {
            Ok((!all.is_empty()).then(|| all.clone().into()))
        }
        Some(_) => Err(unsupported(
            "stop",
            "`stop` must be a string or an array of strings",
        )),
    }
}

/// A `cache_control` marker, if `value` carries one.
fn marker(value: &Value) -> Option<&Value> {
    value.get("cache_control").filter(|m| !m.is_null())
}
