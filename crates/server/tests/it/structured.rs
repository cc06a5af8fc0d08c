//! `response_format` and `tools` through the app: valid answers, OpenAI's tool-call shape in
//! JSON and SSE, and 400s for what cannot be enforced.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::{chat, user};

fn add_tool() -> Value {
    json!([{"type": "function", "function": {"name": "add", "description": "Adds two integers",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                       "required": ["a", "b"]}, "strict": true}}])
}

#[tokio::test]
async fn named_tool_choice_gives_openai_tool_calls() {
    let r = chat(
        json!({"model": "local", "messages": user("Add 2 and 3."), "tools": add_tool(),
                        "tool_choice": {"type": "function", "function": {"name": "add"}},
                        "parallel_tool_calls": false, "max_tokens": 40, "temperature": 0}),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let v = r.json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    assert!(choice["message"]["content"].is_null(), "{v}");
    let calls = choice["message"]["tool_calls"]
        .as_array()
        .expect("tool_calls");
    assert_eq!(calls.len(), 1, "{v}");
    assert!(
        calls[0]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_"))
    );
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "add");
    let args: Value = serde_json::from_str(
        calls[0]["function"]["arguments"]
            .as_str()
            .expect("a string"),
    )
    .expect("arguments are JSON");
    assert!(args["a"].is_i64() && args["b"].is_i64(), "{v}");
    assert_eq!(
        args.as_object().map(|o| o.len()),
        Some(2),
        "strict: no other keys: {v}"
    );
}

#[tokio::test]
async fn streamed_tool_call_is_one_delta_with_id_name_and_arguments() {
    let r = chat(
        json!({"model": "local", "messages": user("Add 2 and 3."), "tools": add_tool(),
                        "tool_choice": "required", "parallel_tool_calls": false, "max_tokens": 40,
                        "temperature": 0, "stream": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let chunks: Vec<Value> = String::from_utf8_lossy(&r.body)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("chunk is JSON"))
        .collect();
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert!(!deltas.is_empty(), "{chunks:?}");
    for (i, d) in deltas.iter().enumerate() {
        assert_eq!(d["index"], i);
        assert_eq!(d["type"], "function");
        assert_eq!(d["function"]["name"], "add");
        let args: Value =
            serde_json::from_str(d["function"]["arguments"].as_str().expect("string"))
                .expect("JSON");
        assert!(args["a"].is_i64() && args["b"].is_i64());
    }
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, vec![&json!("tool_calls")]);
    // No content is streamed for a call.
    assert!(chunks.iter().all(|c| {
        c["choices"][0]["delta"]["content"]
            .as_str()
            .is_none_or(str::is_empty)
    }));
}

#[tokio::test]
async fn json_schema_answer_validates() {
    let schema = json!({"type": "object", "properties": {
        "color": {"enum": ["red", "green", "blue"]}, "count": {"type": "integer", "minimum": 1, "maximum": 9}},
        "required": ["color", "count"]});
    let r = chat(json!({"model": "local", "messages": user("Pick a color and a count."), "max_tokens": 30,
        "response_format": {"type": "json_schema", "json_schema": {"name": "pick", "schema": schema, "strict": true}}}))
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    let answer: Value = serde_json::from_str(text).expect("parses");
    assert!(
        ["red", "green", "blue"].contains(&answer["color"].as_str().unwrap_or("")),
        "{text}"
    );
    assert!(
        answer["count"]
            .as_i64()
            .is_some_and(|c| (1..=9).contains(&c)),
        "{text}"
    );
}

#[tokio::test]
async fn what_cannot_be_enforced_is_a_400_naming_keyword_and_path() {
    let schema =
        json!({"type": "object", "properties": {"x": {"type": "string", "format": "phone"}}});
    let r = chat(json!({"model": "local", "messages": user("x"),
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}}))
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let e = r.error();
    assert_eq!(e["param"], "response_format.json_schema.schema");
    assert_eq!(e["code"], "unsupported_value");
    let m = e["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("phone") && m.contains("#/properties/x/format"),
        "{m}"
    );
}
