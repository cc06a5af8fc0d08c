//! JSON Schemas as the engine enforces them: which keywords it can enforce, what it refuses
//! (by keyword and path, never silently dropped), and the rewrite that makes OpenAI's strict
//! mode and a small model's habits fit the grammar.
//!
//! The grammar engine (llguidance) implements types, `enum`/`const`, `anyOf`/`oneOf`/`allOf`,
//! local `$ref`, object and array shape and bounds, string length, `pattern` and common
//! `format`s, and numeric bounds. Keywords outside that set that JSON Schema defines (`not`,
//! `if`, `uniqueItems`, …) cannot be enforced token by token, so a schema using them is
//! refused with the keyword and its path rather than decoded unconstrained. Keywords JSON
//! Schema does not define (`x-…`, vendor annotations) are ignored, as validators do.

use serde_json::{Map, Value};

pub mod limits;

pub use limits::Budget;

/// Keywords JSON Schema defines that cannot be enforced while decoding.
const UNSUPPORTED: &[&str] = &[
    "not",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "$dynamicRef",
    "$dynamicAnchor",
    "$recursiveRef",
    "$recursiveAnchor",
    "contentSchema",
];

/// String formats the grammar knows.
const FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "uuid",
    "uri",
];

const TYPES: &[&str] = &[
    "object", "array", "string", "number", "integer", "boolean", "null",
];

/// Why a schema cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("the keyword `{keyword}` at `{path}` cannot be enforced while decoding")]
    Unsupported { keyword: String, path: String },
    #[error("invalid schema at `{path}`: {reason}")]
    Invalid { path: String, reason: String },
    /// Past one of the [`limits`]: the grammar it needs would be too large to build safely.
    #[error("the schema is too complex at `{path}`: {reason}")]
    TooComplex { path: String, reason: String },
}

impl SchemaError {
    /// The JSON Pointer (`#/properties/a`) of the offending part.
    pub fn path(&self) -> &str {
        match self {
            SchemaError::Unsupported { path, .. }
            | SchemaError::Invalid { path, .. }
            | SchemaError::TooComplex { path, .. } => path,
        }
    }
}

/// Checks `schema` and returns it ready to compile: with `strict`, every object schema that
/// does not say otherwise gets `additionalProperties: false`, as in OpenAI's strict mode.
/// One schema checked against a [`Budget`] of its own.
pub fn prepare(schema: &Value, strict: bool) -> Result<Value, SchemaError> {
    prepare_in(schema, strict, &mut Budget::new())
}

/// [`prepare`], counting against `budget`, which the other schemas of the same request share:
/// the [`limits`] hold for all of them together.
pub fn prepare_in(schema: &Value, strict: bool, budget: &mut Budget) -> Result<Value, SchemaError> {
    // The walk below recurses; the budget bounds its depth before it goes down a level.
    let mut schema = schema.clone();
    walk(&mut schema, "#", strict, 0, budget)?;
    limits::refs(&schema)?;
    Ok(schema)
}

/// The options the grammar compiles JSON with: one space after `,` and `:` and no other
/// whitespace between tokens. Free whitespace is where small models loop (newline after
/// newline) until `max_tokens`; this layout is also what `json.dumps` and most chat
/// templates print, so the model has seen it.
pub fn layout() -> Value {
    serde_json::json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
    })
}

/// `schema` with [`layout`] attached where the grammar compiler reads it (`x-guidance`).
pub fn with_layout(schema: &Value) -> Value {
    let mut schema = schema.clone();
    if let Value::Object(map) = &mut schema {
        map.insert("x-guidance".into(), layout());
    }
    schema
}

fn invalid(path: &str, reason: impl Into<String>) -> SchemaError {
    SchemaError::Invalid {
        path: path.to_string(),
        reason: reason.into(),
    }
}

fn walk(
    schema: &mut Value,
    path: &str,
    strict: bool,
    depth: usize,
    budget: &mut Budget,
) -> Result<(), SchemaError> {
    let map = match schema {
        Value::Bool(_) => return Ok(()),
        Value::Object(map) => map,
        _ => return Err(invalid(path, "a schema must be an object or a boolean")),
    };
    budget.node(map, path, depth)?;
    let below = depth + 1;
    for key in map.keys() {
        if UNSUPPORTED.contains(&key.as_str()) {
            return Err(SchemaError::Unsupported {
                keyword: key.clone(),
                path: path.to_string(),
            });
        }
    }
    check_values(map, path)?;
    if strict && is_object_schema(map) && !map.contains_key("additionalProperties") {
        // A closed object cannot have a required key it does not define.
        let defined = |k: &str| map.get("properties").is_some_and(|p| p.get(k).is_some());
        let required = map.get("required").and_then(Value::as_array);
        if let Some(missing) = required
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|k| !defined(k))
        {
            return Err(invalid(
                &format!("{path}/required"),
                format!(
                    "`{missing}` is required but not in `properties`; strict mode closes objects \
                     (`additionalProperties: false`), so it could never be given"
                ),
            ));
        }
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, value) in map.iter_mut() {
        let here = format!("{path}/{}", escape(key));
        match key.as_str() {
            "properties" | "patternProperties" | "$defs" | "definitions" => {
                let Value::Object(children) = value else {
                    return Err(invalid(&here, format!("`{key}` must be an object")));
                };
                for (name, child) in children.iter_mut() {
                    walk(
                        child,
                        &format!("{here}/{}", escape(name)),
                        strict,
                        below,
                        budget,
                    )?;
                }
            }
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => {
                let Value::Array(items) = value else {
                    return Err(invalid(&here, format!("`{key}` must be an array")));
                };
                if items.is_empty() && key != "prefixItems" {
                    return Err(invalid(&here, format!("`{key}` must not be empty")));
                }
                for (i, child) in items.iter_mut().enumerate() {
                    walk(child, &format!("{here}/{i}"), strict, below, budget)?;
                }
            }
            "items" if value.is_array() => {
                // Draft 4–2019 tuple form.
                if let Value::Array(items) = value {
                    for (i, child) in items.iter_mut().enumerate() {
                        walk(child, &format!("{here}/{i}"), strict, below, budget)?;
                    }
                }
            }
            "items" | "additionalProperties" | "additionalItems" => {
                walk(value, &here, strict, below, budget)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_object_schema(map: &Map<String, Value>) -> bool {
    match map.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        _ => map.contains_key("properties"),
    }
}

/// Checks the values of the keywords that are not subschemas.
fn check_values(map: &Map<String, Value>, path: &str) -> Result<(), SchemaError> {
    for (key, value) in map {
        let here = format!("{path}/{}", escape(key));
        if let Some(keyword) = unsupported_value(key, value) {
            return Err(SchemaError::Unsupported {
                keyword,
                path: here,
            });
        }
        if let Some(reason) = value_problem(key, value) {
            return Err(invalid(&here, reason));
        }
    }
    Ok(())
}

/// A `format` the grammar does not know, or a `$ref` outside the document.
fn unsupported_value(key: &str, value: &Value) -> Option<String> {
    let s = value.as_str()?;
    match key {
        "format" if !FORMATS.contains(&s) => Some(format!("format: {s}")),
        "$ref" if !(s == "#" || s.starts_with("#/")) => Some(format!("$ref: {s}")),
        _ => None,
    }
}

/// Why a keyword's value is malformed, if it is. Keywords not checked here are annotations,
/// or not JSON Schema keywords at all, and are ignored as validators ignore them.
fn value_problem(key: &str, value: &Value) -> Option<String> {
    let known_type = |t: &Value| t.as_str().is_some_and(|t| TYPES.contains(&t));
    let ok = match key {
        "type" => match value {
            Value::Array(ts) => !ts.is_empty() && ts.iter().all(known_type),
            t => known_type(t),
        },
        "enum" => value.as_array().is_some_and(|a| !a.is_empty()),
        "required" => value
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string)),
        "minLength" | "maxLength" | "minItems" | "maxItems" | "minProperties" | "maxProperties" => {
            value.as_u64().is_some()
        }
        // Draft 4 spelled the exclusive bounds as booleans.
        "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
            value.is_number() || (key.starts_with("exclusive") && value.is_boolean())
        }
        "multipleOf" => value.as_f64().is_some_and(|v| v > 0.0),
        "pattern" | "format" | "$ref" => value.is_string(),
        _ => true,
    };
    if ok {
        return None;
    }
    Some(match key {
        "type" => format!(
            "`type` must be one of {} (or a list of them), got {value}",
            TYPES.join(", ")
        ),
        "enum" => "`enum` must be a non-empty array".into(),
        "required" => "`required` must be an array of strings".into(),
        "multipleOf" => format!("`multipleOf` must be a positive number, got {value}"),
        "pattern" | "format" | "$ref" => format!("`{key}` must be a string"),
        "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
            format!("`{key}` must be a number, got {value}")
        }
        _ => format!("`{key}` must be a non-negative integer, got {value}"),
    })
}

/// JSON Pointer escaping of one path segment.
pub(crate) fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn strict_closes_every_object_that_does_not_say_otherwise() {
        let s = json!({
            "type": "object",
            "properties": {
                "a": {"type": "object", "properties": {"x": {"type": "string"}}},
                "b": {"type": "object", "additionalProperties": {"type": "integer"}},
                "c": {"type": "array", "items": {"properties": {"y": {"type": "number"}}}}
            },
            "$defs": {"D": {"type": "object"}}
        });
        let p = prepare(&s, true).expect("supported");
        assert_eq!(p["additionalProperties"], json!(false));
        assert_eq!(p["properties"]["a"]["additionalProperties"], json!(false));
        assert_eq!(
            p["properties"]["b"]["additionalProperties"],
            json!({"type": "integer"})
        );
        assert_eq!(
            p["properties"]["c"]["items"]["additionalProperties"],
            json!(false)
        );
        assert_eq!(p["$defs"]["D"]["additionalProperties"], json!(false));
        // Non-strict follows JSON Schema: nothing is added.
        assert_eq!(prepare(&s, false).expect("supported"), s);
    }

    #[test]
    fn strict_refuses_a_required_key_it_would_close_out() {
        let s = json!({"type": "object", "properties": {"p": {"type": "object", "required": ["adults"]}}});
        let e = prepare(&s, true).expect_err("unsatisfiable when closed");
        assert_eq!(e.path(), "#/properties/p/required");
        assert!(e.to_string().contains("`adults`"), "{e}");
        assert!(prepare(&s, false).is_ok(), "open objects can have it");
    }

    #[test]
    fn unsupported_keyword_is_named_with_its_path() {
        let s = json!({"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true}}});
        let e = prepare(&s, false).expect_err("refused");
        assert_eq!(
            e,
            SchemaError::Unsupported {
                keyword: "uniqueItems".into(),
                path: "#/properties/tags".into()
            }
        );
        let s = json!({"anyOf": [{"type": "string"}, {"not": {"type": "null"}}]});
        assert_eq!(prepare(&s, false).expect_err("refused").path(), "#/anyOf/1");
        let s = json!({"properties": {"a/b": {"type": "string", "format": "credit-card"}}});
        let e = prepare(&s, false).expect_err("refused");
        assert_eq!(e.path(), "#/properties/a~1b/format");
        assert!(e.to_string().contains("credit-card"), "{e}");
        let e =
            prepare(&json!({"$ref": "https://example.com/s.json"}), false).expect_err("refused");
        assert!(e.to_string().contains("$ref"), "{e}");
    }

    #[test]
    fn invalid_schemas_say_why() {
        for (s, path) in [
            (json!({"type": "strin"}), "#/type"),
            (json!({"type": "object", "required": "a"}), "#/required"),
            (
                json!({"properties": {"a": {"maxLength": -1}}}),
                "#/properties/a/maxLength",
            ),
            (json!({"properties": []}), "#/properties"),
            (json!({"anyOf": []}), "#/anyOf"),
            (json!({"enum": []}), "#/enum"),
            (json!({"items": 3}), "#/items"),
            (json!({"multipleOf": 0}), "#/multipleOf"),
        ] {
            let e = prepare(&s, false).expect_err("invalid");
            assert!(matches!(e, SchemaError::Invalid { .. }), "{s}: {e}");
            assert_eq!(e.path(), path, "{s}: {e}");
        }
    }

    #[test]
    fn accepts_what_sdks_send() {
        // The shape the openai SDK sends for a pydantic model with a nested model and enum.
        let s = json!({
            "$defs": {"Color": {"enum": ["red", "green"], "title": "Color", "type": "string"}},
            "properties": {
                "name": {"title": "Name", "type": "string"},
                "color": {"$ref": "#/$defs/Color"},
                "tags": {"items": {"type": "string"}, "maxItems": 3, "type": "array"},
                "when": {"anyOf": [{"format": "date", "type": "string"}, {"type": "null"}]},
                "score": {"minimum": 0, "maximum": 1, "type": "number"}
            },
            "required": ["name", "color", "tags", "when", "score"],
            "title": "Item", "type": "object", "additionalProperties": false, "x-vendor": 1
        });
        assert_eq!(prepare(&s, true).expect("supported"), s);
    }
}
