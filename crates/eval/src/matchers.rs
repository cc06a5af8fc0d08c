//! Matchers: whether an answer meets its row's [`Expectation`], and whether it was valid
//! (its JSON against the row's schema; its calls against the offered functions).

use serde_json::Value;

use crate::set::{Expectation, ExpectedCall};

/// An answer as a tier gave it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// The message's text.
    pub text: String,
    /// Tool calls: each one's name and its arguments as sent (a JSON string).
    pub calls: Vec<(String, String)>,
    /// The label a classification chose, when the tier reported one.
    pub label: Option<String>,
}

/// How an answer did against its row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grade {
    /// Right by the row's expectation; `None`: not graded (free text without a judge).
    pub right: Option<bool>,
    /// The answer is valid JSON against the row's schema; `None` for rows without one.
    pub schema_valid: Option<bool>,
    /// Every call names an offered function and its arguments validate against that
    /// function's parameters (and at least one call was made where calls are expected);
    /// `None` for rows without functions.
    pub executable: Option<bool>,
}

/// The answer graded against the row's expectation.
pub fn grade(expect: &Expectation, answer: &Answer) -> Grade {
    match expect {
        Expectation::Text(expected) => Grade {
            right: Some(normalize(&answer.text) == normalize(expected)),
            ..Grade::default()
        },
        Expectation::Label { expected, .. } => {
            let said = answer.label.as_deref().unwrap_or(&answer.text);
            Grade {
                right: Some(normalize(said) == normalize(expected)),
                ..Grade::default()
            }
        }
        Expectation::Json { schema, expected } => {
            let parsed = parse_json(&answer.text);
            let schema_valid = schema.as_ref().map(|s| match &parsed {
                Some(v) => validates(s, v),
                None => false,
            });
            let right = match (expected, &parsed) {
                (Some(e), Some(v)) => json_equal(e, v) && schema_valid != Some(false),
                (Some(_), None) => false,
                (None, _) => schema_valid.unwrap_or(false),
            };
            Grade {
                right: Some(right),
                schema_valid,
                executable: None,
            }
        }
        Expectation::Calls { schemas, expected } => {
            let mut parsed = Vec::new();
            let mut valid = !answer.calls.is_empty() || expected.is_empty();
            for (name, arguments) in &answer.calls {
                let args: Option<Value> = serde_json::from_str(arguments).ok();
                let ok = match (schemas.get(name), &args) {
                    (Some(s), Some(a)) => a.is_object() && validates(s, a),
                    _ => false,
                };
                valid &= ok;
                parsed.push((name.as_str(), args.unwrap_or(Value::Null)));
            }
            Grade {
                right: Some(calls_match(&parsed, expected)),
                schema_valid: None,
                executable: Some(valid),
            }
        }
        Expectation::FreeText { .. } => Grade::default(),
    }
}

/// Text as compared: trimmed, lowercased, runs of whitespace made one space, and surrounding
/// quotes and a final full stop dropped.
pub fn normalize(s: &str) -> String {
    let words: Vec<&str> = s.split_whitespace().collect();
    let joined = words.join(" ").to_lowercase();
    let trimmed = joined
        .trim_matches(|c| matches!(c, '"' | '\'' | '`'))
        .trim_end_matches('.')
        .trim();
    trimmed.to_string()
}

/// The answer's JSON: the whole text, else the text inside a fenced code block.
fn parse_json(text: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str(text.trim()) {
        return Some(v);
    }
    let start = text.find("```")?;
    let body = &text[start + 3..];
    let body = body.strip_prefix("json").unwrap_or(body);
    let end = body.find("```")?;
    serde_json::from_str(body[..end].trim()).ok()
}

/// Whether `value` validates against `schema`; a schema that does not compile validates
/// nothing.
fn validates(schema: &Value, value: &Value) -> bool {
    jsonschema::validator_for(schema).is_ok_and(|v| v.is_valid(value))
}

/// JSON equality as a person grading would read it: strings normalized, numbers by value,
/// lists as multisets, objects key by key.
pub fn json_equal(expected: &Value, got: &Value) -> bool {
    match (expected, got) {
        (Value::String(a), Value::String(b)) => normalize(a) == normalize(b),
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        // A number written as a string in one and not the other (`"9.00"` and `9`).
        (Value::String(a), Value::Number(b)) | (Value::Number(b), Value::String(a)) => {
            a.trim().parse::<f64>().ok() == b.as_f64()
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                return false;
            }
            let mut left: Vec<&Value> = b.iter().collect();
            a.iter()
                .all(|x| match left.iter().position(|y| json_equal(x, y)) {
                    Some(i) => {
                        left.swap_remove(i);
                        true
                    }
                    None => false,
                })
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, x)| b.get(k).is_some_and(|y| json_equal(x, y)))
        }
        (a, b) => a == b,
    }
}

/// One call against one expected call (BFCL's AST rules): the same function, every argument
/// given among its accepted values, every argument left out allowed to be, nothing extra.
fn call_matches(name: &str, args: &Value, expected: &ExpectedCall) -> bool {
    if name != expected.name {
        return false;
    }
    let Value::Object(args) = args else {
        return false;
    };
    let given_ok = args.iter().all(|(k, v)| {
        expected.arguments.get(k).is_some_and(|accepted| {
            accepted
                .iter()
                .any(|a| !(a.is_string() && a.as_str() == Some("")) && json_equal(a, v))
        })
    });
    let missing_ok = expected
        .arguments
        .iter()
        .filter(|(k, _)| !args.contains_key(*k))
        .all(|(_, accepted)| accepted.iter().any(|a| a.as_str() == Some("")));
    given_ok && missing_ok
}

/// The calls match the expected ones one to one, in any order.
fn calls_match(calls: &[(&str, Value)], expected: &[ExpectedCall]) -> bool {
    if calls.len() != expected.len() {
        return false;
    }
    let mut left: Vec<&ExpectedCall> = expected.iter().collect();
    calls.iter().all(
        |(name, args)| match left.iter().position(|e| call_matches(name, args, e)) {
            Some(i) => {
                left.swap_remove(i);
                true
            }
            None => false,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::set::row;
    use serde_json::json;

    fn text(t: &str) -> Answer {
        Answer {
            text: t.into(),
            ..Answer::default()
        }
    }

    #[test]
    fn text_and_labels_match_normalized() {
        let e = Expectation::Text("D".into());
        assert_eq!(grade(&e, &text(" d.\n")).right, Some(true));
        assert_eq!(grade(&e, &text("C")).right, Some(false));
        let e = Expectation::Label {
            expected: "card_arrival".into(),
            labels: None,
        };
        let a = Answer {
            label: Some("card_arrival".into()),
            text: "something else".into(),
            ..Answer::default()
        };
        assert_eq!(grade(&e, &a).right, Some(true));
        assert_eq!(grade(&e, &text("\"Card_Arrival\"")).right, Some(true));
        assert_eq!(normalize("  Two\n words. "), "two words");
    }

    #[test]
    fn json_answers_are_checked_against_schema_and_fields() {
        let r = row(
            &json!({"input": "r", "schema": {"type": "object", "required": ["total"], "properties": {"total": {"type": "string"}}},
                    "expected": {"total": "9.00"}}),
            1,
        )
        .expect("ok");
        let g = grade(&r.expect, &text("{\"total\": \"9.00\"}"));
        assert_eq!((g.right, g.schema_valid), (Some(true), Some(true)));
        let g = grade(&r.expect, &text("```json\n{\"total\": \"9.0\"}\n```"));
        assert_eq!((g.right, g.schema_valid), (Some(false), Some(true)));
        let g = grade(&r.expect, &text("{\"total\": 9}"));
        assert_eq!(g.schema_valid, Some(false));
        assert_eq!(g.right, Some(false), "right needs valid");
        let g = grade(&r.expect, &text("not json"));
        assert_eq!((g.right, g.schema_valid), (Some(false), Some(false)));
        // Lists compare as multisets.
        let e = Expectation::Json {
            schema: None,
            expected: Some(json!([{"t": "a"}, {"t": "b"}])),
        };
        assert_eq!(
            grade(&e, &text("[{\"t\": \"B\"}, {\"t\": \"a\"}]")).right,
            Some(true)
        );
        assert_eq!(grade(&e, &text("[{\"t\": \"a\"}]")).right, Some(false));
    }

    #[test]
    fn calls_follow_bfcl_rules_and_validate() {
        let r = row(
            &json!({"messages": [{"role": "user", "content": "x"}],
                    "functions": [{"name": "area", "parameters": {"type": "dict", "required": ["b"],
                        "properties": {"b": {"type": "integer"}, "unit": {"type": "string"}}}}],
                    "expected": [{"area": {"b": [10], "unit": ["m", ""]}}]}),
            1,
        )
        .expect("ok");
        let call = |args: &str| Answer {
            calls: vec![("area".into(), args.into())],
            ..Answer::default()
        };
        let g = grade(&r.expect, &call("{\"b\": 10}"));
        assert_eq!((g.right, g.executable), (Some(true), Some(true)));
        let g = grade(&r.expect, &call("{\"b\": 10, \"unit\": \"M\"}"));
        assert_eq!(g.right, Some(true));
        let g = grade(&r.expect, &call("{\"b\": 11}"));
        assert_eq!((g.right, g.executable), (Some(false), Some(true)));
        let g = grade(&r.expect, &call("{\"b\": \"ten\"}"));
        assert_eq!(
            g.executable,
            Some(false),
            "a string where an integer is asked"
        );
        let g = grade(&r.expect, &call("{\"b\": 10, \"extra\": 1}"));
        assert_eq!(g.right, Some(false));
        let g = grade(
            &r.expect,
            &Answer {
                calls: vec![("nope".into(), "{}".into())],
                ..Answer::default()
            },
        );
        assert_eq!(g.executable, Some(false));
        let g = grade(&r.expect, &text("I would call area"));
        assert_eq!((g.right, g.executable), (Some(false), Some(false)));
        // No call expected: answering without one is right.
        let none = row(
            &json!({"input": "x", "functions": [{"name": "f"}], "expected": []}),
            1,
        )
        .expect("ok");
        let g = grade(&none.expect, &text("I cannot help with that"));
        assert_eq!((g.right, g.executable), (Some(true), Some(true)));
    }

    #[test]
    fn free_text_is_left_to_a_judge() {
        let e = Expectation::FreeText {
            rubric: None,
            references: vec!["x".into()],
        };
        assert_eq!(grade(&e, &text("x")), Grade::default());
    }
}
