//! `response_format` and `tools` → the engine's [`Constraint`]: pure checks and translation,
//! so every refusal (unsupported keyword, unknown function, bad combination) is a 400 that
//! names the parameter, before any decoding starts.

use serde_json::{Value, json};
use smallfirst_engine::Constraint;
use smallfirst_engine::schema::{self, SchemaError};
use smallfirst_engine::tools::{self, ToolChoice, ToolDef, ToolSpec};
use smallfirst_protocol::tools::{ResponseFormat, Tool, ToolChoiceMode};
use smallfirst_protocol::{ChatRequest, ToolChoice as WireChoice};

use crate::ApiError;

/// What a request asks of its answer's shape.
#[derive(Debug, Default)]
pub struct Structure {
    pub constraint: Option<Constraint>,
    /// The tools as the chat template is given them (OpenAI tool objects).
    pub tools: Vec<Value>,
    /// Whether the answer may hold tool calls to parse out.
    pub calls: bool,
    /// Whether the answer must be calls (`required`, or a named function).
    pub must_call: bool,
}

impl Structure {
    /// The parameter a grammar failure is about.
    pub fn param(&self) -> &'static str {
        if self.calls {
            "tools"
        } else {
            "response_format"
        }
    }
}

/// The most tools one request may offer (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;

pub fn structure(req: &ChatRequest) -> Result<Structure, ApiError> {
    let tools = req.tools.as_deref().unwrap_or_default();
    if tools.len() > MAX_TOOLS {
        return Err(ApiError::invalid(
            "tools",
            format!(
                "at most {MAX_TOOLS} tools may be offered, got {}",
                tools.len()
            ),
        ));
    }
    // Every schema of the request counts against one budget.
    let mut budget = schema::Budget::new();
    let format = match &req.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => Some(Constraint::json_object()),
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            let param = "response_format.json_schema";
            check_name(param, &format!("`{param}.name`"), &json_schema.name)?;
            let Some(schema) = &json_schema.schema else {
                return Err(ApiError::invalid(
                    format!("{param}.schema"),
                    format!("`{param}.schema` is required"),
                ));
            };
            let strict = json_schema.strict.unwrap_or(false);
            let prepared = schema::prepare_in(schema, strict, &mut budget)
                .map_err(|e| schema_error(&format!("{param}.schema"), &e))?;
            Some(Constraint::Json(prepared))
        }
    };
    if tools.is_empty() {
        if req.tool_choice.is_some() {
            return Err(ApiError::invalid(
                "tool_choice",
                "`tool_choice` is only allowed when `tools` are given",
            ));
        }
        return Ok(Structure {
            constraint: format,
            ..Structure::default()
        });
    }
    if format.is_some() {
        return Err(ApiError::unsupported(
            "response_format",
            "`response_format` with `tools` is not supported yet; constrain the tools' \
             `parameters` instead",
        ));
    }
    let mut defs: Vec<ToolDef> = Vec::with_capacity(tools.len());
    let mut described = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let Tool::Function { function } = tool else {
            return Err(ApiError::unsupported(
                format!("tools[{i}].type"),
                "only `function` tools are supported on the embedded tier",
            ));
        };
        let param = format!("tools[{i}].function");
        check_name(&param, "function names", &function.name)?;
        if defs.iter().any(|d| d.name == function.name) {
            return Err(ApiError::invalid(
                format!("{param}.name"),
                format!("the function `{}` is given twice", function.name),
            ));
        }
        let parameters = function
            .parameters
            .clone()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        let prepared =
            schema::prepare_in(&parameters, function.strict.unwrap_or(false), &mut budget)
                .map_err(|e| schema_error(&format!("{param}.parameters"), &e))?;
        described.push(json!({
            "type": "function",
            "function": {
                "name": function.name,
                "description": function.description,
                "parameters": parameters,
            }
        }));
        defs.push(ToolDef {
            name: function.name.clone(),
            description: function.description.clone(),
            parameters: prepared,
        });
    }
    let choice = match &req.tool_choice {
        None | Some(WireChoice::Mode(ToolChoiceMode::Auto)) => ToolChoice::Auto,
        Some(WireChoice::Mode(ToolChoiceMode::None)) => ToolChoice::None,
        Some(WireChoice::Mode(ToolChoiceMode::Required)) => ToolChoice::Required,
        Some(WireChoice::Named(named)) => {
            let name = &named.function.name;
            if !defs.iter().any(|d| &d.name == name) {
                return Err(ApiError::invalid(
                    "tool_choice.function.name",
                    format!("`tool_choice` names the function `{name}`, which is not in `tools`"),
                ));
            }
            ToolChoice::Function(name.clone())
        }
        Some(other @ WireChoice::Other(_)) => {
            return Err(ApiError::unsupported(
                "tool_choice",
                format!(
                    "`tool_choice` of type `{}` is not supported; use `none`, `auto`, `required` \
                     or a named function",
                    other.other_kind().unwrap_or("?")
                ),
            ));
        }
    };
    let calls = choice != ToolChoice::None;
    let must_call = matches!(choice, ToolChoice::Required | ToolChoice::Function(_));
    Ok(Structure {
        constraint: Some(Constraint::Tools(ToolSpec {
            tools: defs,
            choice,
            parallel: req.parallel_tool_calls.unwrap_or(true),
        })),
        tools: described,
        calls,
        must_call,
    })
}

/// OpenAI's rule for schema and function names, as a 400 on `{param}.name`.
fn check_name(param: &str, subject: &str, name: &str) -> Result<(), ApiError> {
    if tools::valid_name(name) {
        return Ok(());
    }
    Err(ApiError::invalid(
        format!("{param}.name"),
        format!("{subject} must be 1 to 64 letters, digits, `_` or `-`, got `{name}`"),
    ))
}

fn schema_error(param: &str, e: &SchemaError) -> ApiError {
    let message = format!("`{param}`: {e}");
    match e {
        SchemaError::Unsupported { .. } => ApiError::unsupported(param, message),
        SchemaError::Invalid { .. } => ApiError::invalid(param, message),
        SchemaError::TooComplex { .. } => ApiError::InvalidRequest {
            message,
            param: Some(param.to_string()),
            code: Some("schema_too_complex"),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn req(extra: Value) -> ChatRequest {
        let mut v = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        serde_json::from_value(v).expect("valid request json")
    }

    fn weather() -> Value {
        json!({"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
    }

    #[test]
    fn json_schema_strict_is_closed() {
        let s = structure(&req(json!({"response_format": {"type": "json_schema", "json_schema": {
            "name": "P", "strict": true, "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}})))
        .expect("supported");
        let Some(Constraint::Json(schema)) = s.constraint else {
            panic!("expected a JSON constraint");
        };
        assert_eq!(schema["additionalProperties"], json!(false));
        assert!(!s.calls);
    }

    #[test]
    fn tools_become_a_spec() {
        let s = structure(&req(
            json!({"tools": [weather()], "tool_choice": "required", "parallel_tool_calls": false}),
        ))
        .expect("supported");
        let Some(Constraint::Tools(spec)) = &s.constraint else {
            panic!("expected tools");
        };
        assert_eq!(spec.choice, ToolChoice::Required);
        assert!(!spec.parallel);
        assert_eq!(s.tools[0]["function"]["name"], "get_weather");
        assert!(s.calls);
    }

    #[test]
    fn refusals_name_the_parameter() {
        let cases = [
            (json!({"tool_choice": "auto"}), "tool_choice", None),
            (
                json!({"tools": [weather()], "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
                "tool_choice.function.name",
                None,
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "math.add"}}]}),
                "tools[0].function.name",
                None,
            ),
            (
                json!({"tools": [weather(), weather()]}),
                "tools[1].function.name",
                None,
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"not": {}}}}}}]}),
                "tools[0].function.parameters",
                Some("unsupported_value"),
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
                "response_format.json_schema.schema",
                None,
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "obj"}}}}),
                "response_format.json_schema.schema",
                None,
            ),
            (
                json!({"tools": [weather()], "response_format": {"type": "json_object"}}),
                "response_format",
                Some("unsupported_value"),
            ),
            (
                json!({"tools": [weather()], "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}}),
                "tool_choice",
                Some("unsupported_value"),
            ),
        ];
        for (extra, param, code) in cases {
            let e = structure(&req(extra.clone())).expect_err("refused");
            let body = e.body().error;
            assert_eq!(body.param.as_deref(), Some(param), "{extra}: {e}");
            assert_eq!(body.code.as_deref(), code, "{extra}: {e}");
        }
        let e = structure(&req(json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"properties": {"x": {"uniqueItems": true}}}}}]})))
            .expect_err("refused");
        assert!(
            e.to_string().contains("`uniqueItems`") && e.to_string().contains("#/properties/x"),
            "{e}"
        );
    }
}
