//! Structured output on the wire: `response_format`, `tools`, and the tool calls of a
//! response or stream chunk.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `response_format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemaFormat {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// One entry of `tools`. Another kind (`custom`, a provider's built-in tool) is kept only
/// by its `type`: the request goes on to a remote tier as it was sent, and the embedded tier
/// refuses it by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Tool {
    Function {
        function: FunctionDef,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `tool_choice`: `"none"`, `"auto"`, `"required"`, or one named function. Other forms the
/// API has (`allowed_tools`, `custom`) are kept by their `type`, so that they are refused by
/// name rather than as a shape that did not parse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[serde(try_from = "Value")]
pub enum ToolChoice {
    Mode(ToolChoiceMode),
    Named(NamedToolChoice),
    /// A form this server does not implement: the object as it was sent.
    Other(Value),
}

impl ToolChoice {
    /// The `type` of an [`Other`](ToolChoice::Other) form.
    pub fn other_kind(&self) -> Option<&str> {
        match self {
            ToolChoice::Other(v) => v.get("type").and_then(Value::as_str),
            _ => None,
        }
    }
}

impl TryFrom<Value> for ToolChoice {
    type Error = String;

    fn try_from(v: Value) -> Result<Self, String> {
        const EXPECTED: &str = "expected `none`, `auto`, `required`, or \
            {\"type\": \"function\", \"function\": {\"name\": …}}";
        match v {
            Value::String(s) => match s.as_str() {
                "none" => Ok(ToolChoice::Mode(ToolChoiceMode::None)),
                "auto" => Ok(ToolChoice::Mode(ToolChoiceMode::Auto)),
                "required" => Ok(ToolChoice::Mode(ToolChoiceMode::Required)),
                other => Err(format!(
                    "unknown mode `{}`: {EXPECTED}",
                    other.escape_debug()
                )),
            },
            Value::Object(ref map) => match map.get("type").and_then(Value::as_str) {
                Some("function") => serde_json::from_value(v)
                    .map(ToolChoice::Named)
                    .map_err(|e| format!("{e}: {EXPECTED}")),
                Some(_) => Ok(ToolChoice::Other(v)),
                None => Err(format!("an object needs a string `type`: {EXPECTED}")),
            },
            other => Err(format!("got {}: {EXPECTED}", crate::shape::kind(&other))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoiceMode {
    None,
    Auto,
    Required,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedToolChoice {
    #[serde(rename = "type")]
    pub kind: FunctionKind,
    pub function: FunctionName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionKind {
    Function,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionName {
    pub name: String,
}

/// A call in an assistant message (request history or response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: FunctionKind,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments as a JSON text, as OpenAI sends them.
    pub arguments: String,
}

/// A call, or a piece of one, in a stream chunk's delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FunctionKind>,
    pub function: FunctionCallDelta,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_what_the_sdk_sends() {
        let f: ResponseFormat = serde_json::from_value(json!({
            "type": "json_schema",
            "json_schema": {"name": "Item", "schema": {"type": "object"}, "strict": true}
        }))
        .expect("json_schema");
        assert!(
            matches!(f, ResponseFormat::JsonSchema { ref json_schema } if json_schema.strict == Some(true))
        );
        let f: ResponseFormat =
            serde_json::from_value(json!({"type": "json_object"})).expect("json_object");
        assert_eq!(f, ResponseFormat::JsonObject);

        let t: Tool = serde_json::from_value(json!({
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object"}, "strict": false}
        }))
        .expect("tool");
        let Tool::Function { function } = t else {
            panic!("a function tool");
        };
        assert_eq!(function.name, "f");
        let other: Tool =
            serde_json::from_value(json!({"type": "custom", "custom": {"name": "x"}}))
                .expect("kept by its kind");
        assert_eq!(other, Tool::Other);

        let c: ToolChoice = serde_json::from_value(json!("required")).expect("mode");
        assert_eq!(c, ToolChoice::Mode(ToolChoiceMode::Required));
        let c: ToolChoice =
            serde_json::from_value(json!({"type": "function", "function": {"name": "f"}}))
                .expect("named");
        assert!(matches!(c, ToolChoice::Named(ref n) if n.function.name == "f"));
        assert!(serde_json::from_value::<ToolChoice>(json!("sometimes")).is_err());
        let c: ToolChoice = serde_json::from_value(
            json!({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}),
        )
        .expect("kept by its type");
        assert_eq!(c.other_kind(), Some("allowed_tools"));
        let e = serde_json::from_value::<ToolChoice>(json!({"type": "function"}))
            .expect_err("no function");
        assert!(e.to_string().contains("missing field `function`"), "{e}");
    }

    #[test]
    fn stream_delta_leaves_out_what_it_does_not_carry() {
        let d = ToolCallDelta {
            index: 0,
            id: None,
            kind: None,
            function: FunctionCallDelta {
                name: None,
                arguments: Some("{\"a\"".into()),
            },
        };
        assert_eq!(
            serde_json::to_value(&d).expect("serializes"),
            json!({"index": 0, "function": {"arguments": "{\"a\""}})
        );
    }
}
