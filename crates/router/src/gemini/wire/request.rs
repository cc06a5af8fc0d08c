//! A chat completion request → a `GenerateContentRequest`.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::{str_field, unsupported};
use crate::wire::{self, WireError};

/// A chat completion request → a `GenerateContentRequest`. It takes no model: Gemini's is in
/// the [`path`](super::path), and `stream` is too.
///
/// System and developer messages, wherever they stand, become `systemInstruction`; assistant
/// turns are `model` turns; tool results are `functionResponse` parts of a `user` turn, named
/// by the assistant tool call they answer; consecutive turns of one role are merged. Tool
/// parameters go as `parametersJsonSchema`, not `parameters`: OpenAI tools carry full JSON
/// Schema (`additionalProperties`, `$ref`, …), which Gemini's OpenAPI-subset `parameters`
/// refuses. `logprobs` is refused; `user`, `parallel_tool_calls` and `stream_options` mean
/// nothing to Gemini and are dropped.
pub fn to_wire(request: &Value) -> Result<Value, WireError> {
    if request.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported(
            "logprobs",
            "log-probabilities are not translated for Gemini",
        ));
    }
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| unsupported("messages", "`messages` must be an array of messages"))?;
    let mut system = Vec::new();
    let mut contents: Vec<(&str, Vec<Value>)> = Vec::new();
    // Tool call id → function name, for the tool results that answer them.
    let mut called: HashMap<&str, &str> = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        let role = str_field(message, "role").unwrap_or_default();
        let (role, parts) = match role {
            "system" | "developer" => {
                let parts = content_parts(message.get("content"), i)?;
                if parts.iter().any(|p| p.get("text").is_none()) {
                    return Err(unsupported(
                        format!("messages[{i}].content"),
                        "Gemini's system instruction takes only text",
                    ));
                }
                system.extend(parts);
                continue;
            }
            "user" => ("user", content_parts(message.get("content"), i)?),
            "assistant" => ("model", model_parts(message, i, &mut called)?),
            "tool" => ("user", vec![function_response(message, i, &called)?]),
            _ => {
                return Err(unsupported(
                    format!("messages[{i}].role"),
                    format!("Gemini has no message role `{role}`"),
                ));
            }
        };
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some((last, previous)) if *last == role => previous.extend(parts),
            _ => contents.push((role, parts)),
        }
    }

    let mut body = Map::new();
    let contents = contents
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}));
    body.insert("contents".into(), contents.collect());
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system}));
    }
    if let Some(tools) = request.get("tools").filter(|t| !t.is_null()) {
        let declarations = function_declarations(tools)?;
        if !declarations.is_empty() {
            let config = tool_config(request.get("tool_choice"))?;
            body.insert(
                "tools".into(),
                json!([{"functionDeclarations": declarations}]),
            );
            if let Some(config) = config {
                body.insert("toolConfig".into(), config);
            }
        }
    }
    let config = generation_config(request)?;
    if !config.is_empty() {
        body.insert("generationConfig".into(), config.into());
    }
    Ok(Value::Object(body))
}

/// Message `i`'s content as Gemini parts. Empty text is left out: Gemini refuses it.
fn content_parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>, WireError> {
    let parts = match content {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(text)) => vec![json!({"text": text})],
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| wire_part(part, i, j))
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(unsupported(
                format!("messages[{i}].content"),
                "content must be a string or an array of parts",
            ));
        }
    };
    Ok(parts.into_iter().filter(|p| p["text"] != "").collect())
}

fn wire_part(part: &Value, i: usize, j: usize) -> Result<Value, WireError> {
    let param = |suffix: &str| format!("messages[{i}].content[{j}]{suffix}");
    let kind = str_field(part, "type").unwrap_or_default();
    match kind {
        "text" | "refusal" => str_field(part, kind)
            .map(|text| json!({"text": text}))
            .ok_or_else(|| unsupported(param(""), format!("a `{kind}` part needs its `{kind}`"))),
        "image_url" => {
            let image = part.get("image_url");
            let url = image
                .and_then(|v| v.as_str().or_else(|| str_field(v, "url")))
                .unwrap_or_default();
            media_part(url).ok_or_else(|| {
                unsupported(
                    param(".image_url.url"),
                    "an image must be a base64 `data:` URL or an http(s) URL",
                )
            })
        }
        "input_audio" => {
            let audio = part.get("input_audio");
            let data = audio.and_then(|a| str_field(a, "data"));
            let format = audio.and_then(|a| str_field(a, "format"));
            match (data, format) {
                (Some(data), Some(format)) => Ok(json!({
                    "inlineData": {"mimeType": format!("audio/{format}"), "data": data},
                })),
                _ => Err(unsupported(
                    param(".input_audio"),
                    "audio needs its `data` and `format`",
                )),
            }
        }
        "file" => part
            .pointer("/file/file_data")
            .and_then(Value::as_str)
            .and_then(wire::data_url)
            .map(|(mime, data)| json!({"inlineData": {"mimeType": mime, "data": data}}))
            .ok_or_else(|| {
                unsupported(
                    param(".file"),
                    "Gemini takes a file only as a `data:` URL in `file_data`",
                )
            }),
        _ => Err(unsupported(
            param(".type"),
            format!("Gemini has no content part of type `{kind}`"),
        )),
    }
}

/// An image (or document) by URL: inline when it is a `data:` URL, by reference when it is on
/// the web, its type guessed from the file name since Gemini wants one.
fn media_part(url: &str) -> Option<Value> {
    if let Some((mime, data)) = wire::data_url(url) {
        return Some(json!({"inlineData": {"mimeType": mime, "data": data}}));
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return None;
    }
    let mut file = json!({});
    if let Some(mime) = mime_from_name(url) {
        file["mimeType"] = mime.into();
    }
    file["fileUri"] = url.into();
    Some(json!({"fileData": file}))
}

fn mime_from_name(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let extension = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

fn model_parts<'a>(
    message: &'a Value,
    i: usize,
    called: &mut HashMap<&'a str, &'a str>,
) -> Result<Vec<Value>, WireError> {
    let mut parts = content_parts(message.get("content"), i)?;
    let Some(calls) = message.get("tool_calls").filter(|v| !v.is_null()) else {
        return Ok(parts);
    };
    let calls = calls.as_array().ok_or_else(|| {
        unsupported(
            format!("messages[{i}].tool_calls"),
            "`tool_calls` must be an array",
        )
    })?;
    for (j, call) in calls.iter().enumerate() {
        let param = |suffix: &str| format!("messages[{i}].tool_calls[{j}]{suffix}");
        let name = call
            .pointer("/function/name")
            .and_then(Value::as_str)
            .ok_or_else(|| unsupported(param(".function.name"), "a tool call needs a name"))?;
        let arguments = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let args = if arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str::<Value>(arguments)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| {
                    unsupported(
                        param(".function.arguments"),
                        "Gemini needs tool call arguments to be a JSON object",
                    )
                })?
        };
        if let Some(id) = str_field(call, "id") {
            called.insert(id, name);
        }
        parts.push(json!({"functionCall": {"name": name, "args": args}}));
    }
    Ok(parts)
}

fn function_response(
    message: &Value,
    i: usize,
    called: &HashMap<&str, &str>,
) -> Result<Value, WireError> {
    let name = str_field(message, "tool_call_id")
        .and_then(|id| called.get(id).copied())
        .or_else(|| str_field(message, "name"))
        .ok_or_else(|| {
            unsupported(
                format!("messages[{i}].tool_call_id"),
                "a tool message must answer an earlier assistant tool call",
            )
        })?;
    let text = match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| str_field(p, "text")).collect(),
        _ => String::new(),
    };
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(object @ Value::Object(_)) => object,
        _ => json!({"content": text}),
    };
    Ok(json!({"functionResponse": {"name": name, "response": response}}))
}

fn function_declarations(tools: &Value) -> Result<Vec<Value>, WireError> {
    let tools = wire::function_tools(tools, "Gemini")?;
    Ok(tools
        .into_iter()
        .map(|t| {
            let mut declaration = json!({"name": t.name});
            if let Some(description) = t.description {
                declaration["description"] = description.into();
            }
            if let Some(parameters) = t.parameters {
                declaration["parametersJsonSchema"] = parameters.clone();
            }
            declaration
        })
        .collect())
}

fn tool_config(choice: Option<&Value>) -> Result<Option<Value>, WireError> {
    let config = match choice {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => json!({"mode": "AUTO"}),
            "none" => json!({"mode": "NONE"}),
            "required" => json!({"mode": "ANY"}),
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
            json!({"mode": "ANY", "allowedFunctionNames": [name]})
        }
    };
    Ok(Some(json!({"functionCallingConfig": config})))
}

fn generation_config(request: &Value) -> Result<Map<String, Value>, WireError> {
    let mut config = Map::new();
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .into_iter()
        .find_map(|key| request.get(key).filter(|v| !v.is_null()));
    if let Some(max) = max_tokens {
        config.insert("maxOutputTokens".into(), max.clone());
    }
    match request.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            config.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(all)) if all.iter().all(Value::is_string) => {
            if !all.is_empty() {
                config.insert("stopSequences".into(), all.clone().into());
            }
        }
        Some(_) => {
            return Err(unsupported(
                "stop",
                "`stop` must be a string or an array of strings",
            ));
        }
    }
    for (openai, gemini) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("n", "candidateCount"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(value) = request.get(openai).filter(|v| v.is_number()) {
            config.insert(gemini.into(), value.clone());
        }
    }
    let format = request.get("response_format");
    match format.and_then(|f| str_field(f, "type")) {
        None | Some("text") => {}
        Some("json_object") => {
            config.insert("responseMimeType".into(), "application/json".into());
        }
        Some("json_schema") => {
            let schema = format
                .and_then(|f| f.pointer("/json_schema/schema"))
                .ok_or_else(|| {
                    unsupported(
                        "response_format.json_schema.schema",
                        "a `json_schema` response format needs its schema",
                    )
                })?;
            config.insert("responseMimeType".into(), "application/json".into());
            config.insert("responseJsonSchema".into(), schema.clone());
        }
        Some(kind) => {
            return Err(unsupported(
                "response_format",
                format!("unknown response format `{kind}`"),
            ));
        }
    }
    Ok(config)
}
