use serde_json::{Value, json};

use super::*;

fn meta() -> Meta {
    Meta {
        id: "chatcmpl-local".into(),
        created: 1_700_000_000,
    }
}

fn wired(request: Value) -> Value {
    match to_wire(&request, "claude-test") {
        Ok(v) => v,
        Err(e) => panic!("to_wire failed: {e}"),
    }
}

fn param_of(result: Result<Value, WireError>) -> String {
    match result {
        Err(WireError::Unsupported { param, .. }) => param,
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn cache_markers_on_parts_messages_and_tools_pass_through() {
    let mark = json!({"type": "ephemeral"});
    let body = wired(json!({
        "messages": [
            {"role": "system", "content": [
                {"type": "text", "text": "rules", "cache_control": mark},
            ]},
            {"role": "user", "content": "a long document", "cache_control": mark},
            {"role": "assistant", "content": "noted"},
            {"role": "user", "content": [
                {"type": "text", "text": "one"},
                {"type": "text", "text": "two", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            ]},
        ],
        "tools": [{"type": "function", "cache_control": mark,
                   "function": {"name": "f", "parameters": {"type": "object"}}}],
    }));
    assert_eq!(
        body["system"],
        json!([{"type": "text", "text": "rules", "cache_control": mark}])
    );
    assert_eq!(
        body["messages"][0]["content"],
        json!([{"type": "text", "text": "a long document", "cache_control": mark}])
    );
    assert_eq!(body["messages"][1]["content"], "noted");
    assert_eq!(
        body["messages"][2]["content"][1]["cache_control"],
        json!({"type": "ephemeral", "ttl": "1h"})
    );
    assert!(
        body["messages"][2]["content"][0]
            .get("cache_control")
            .is_none()
    );
    assert_eq!(body["tools"][0]["cache_control"], mark);
}

#[test]
fn a_message_marker_goes_on_its_last_block() {
    let body = wired(json!({"messages": [
        {"role": "user", "cache_control": {"type": "ephemeral"}, "content": [
            {"type": "text", "text": "a"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ]},
    ]}));
    let content = &body["messages"][0]["content"];
    assert!(content[0].get("cache_control").is_none());
    assert_eq!(content[1]["cache_control"], json!({"type": "ephemeral"}));
    assert_eq!(
        content[1]["source"],
        json!({"type": "url", "url": "https://example.com/cat.png"})
    );
}

#[test]
fn system_prompts_without_markers_join_into_a_string() {
    let body = wired(json!({"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": [{"type": "text", "text": "be kind"}]},
        {"role": "user", "content": "hi"},
    ]}));
    assert_eq!(body["system"], "be brief\n\nbe kind");
    assert_eq!(body["max_tokens"], 4096, "Anthropic requires it");
}

#[test]
fn consecutive_turns_of_one_role_merge_and_tool_results_join_the_user_turn() {
    let body = wired(json!({"messages": [
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}},
            {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "one"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "two"}]},
        {"role": "user", "content": "and so?"},
    ]}));
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "first"},
                {"type": "text", "text": "second"},
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "f", "input": {"x": 1}},
                {"type": "tool_use", "id": "call_2", "name": "g", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "one"},
                {"type": "tool_result", "tool_use_id": "call_2",
                 "content": [{"type": "text", "text": "two"}]},
                {"type": "text", "text": "and so?"},
            ]},
        ])
    );
}

#[test]
fn arguments_that_are_not_an_object_are_refused_by_path() {
    for arguments in ["{not json", "[1, 2]"] {
        let result = to_wire(
            &json!({"messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "b", "type": "function", "function": {"name": "f", "arguments": arguments}},
                ]},
            ]}),
            "claude-test",
        );
        assert_eq!(
            param_of(result),
            "messages[1].tool_calls[1].function.arguments"
        );
    }
}

#[test]
fn what_anthropic_cannot_honour_is_refused_and_what_it_ignores_is_dropped() {
    let base = json!({"messages": [{"role": "user", "content": "hi"}]});
    let with = |key: &str, value: Value| {
        let mut request = base.clone();
        request[key] = value;
        to_wire(&request, "claude-test")
    };
    assert_eq!(param_of(with("n", json!(2))), "n");
    assert_eq!(param_of(with("logprobs", json!(true))), "logprobs");
    assert_eq!(param_of(with("temperature", json!(1.5))), "temperature");
    assert_eq!(
        with("temperature", json!(0.7)).map(|b| b["temperature"].clone()),
        Ok(json!(0.7))
    );
    let schema = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}});
    assert_eq!(param_of(with("response_format", schema)), "response_format");
    let object = json!({"type": "json_object"});
    assert_eq!(param_of(with("response_format", object)), "response_format");
    let kept = with("seed", json!(7)).map(|b| b.get("seed").is_none());
    assert_eq!(kept, Ok(true));
    let kept = with("frequency_penalty", json!(0.5)).map(|b| b.as_object().map(|m| m.len()));
    assert_eq!(kept, Ok(Some(3)), "model, max_tokens, messages");
}

#[test]
fn tool_choices_map_and_parallel_calls_can_be_disabled() {
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    let choice = |choice: Value, parallel: Option<bool>| {
        let mut request = json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools});
        request["tool_choice"] = choice;
        if let Some(p) = parallel {
            request["parallel_tool_calls"] = p.into();
        }
        wired(request).get("tool_choice").cloned()
    };
    assert_eq!(choice(json!("auto"), None), Some(json!({"type": "auto"})));
    assert_eq!(
        choice(json!("none"), Some(false)),
        Some(json!({"type": "none"}))
    );
    assert_eq!(
        choice(json!("required"), Some(false)),
        Some(json!({"type": "any", "disable_parallel_tool_use": true}))
    );
    assert_eq!(
        choice(json!({"type": "function", "function": {"name": "f"}}), None),
        Some(json!({"type": "tool", "name": "f"}))
    );
    assert_eq!(
        choice(Value::Null, Some(false)),
        Some(json!({"type": "auto", "disable_parallel_tool_use": true}))
    );
    assert_eq!(choice(Value::Null, None), None);
    let body = wired(json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools}));
    assert_eq!(
        body["tools"][0]["input_schema"],
        json!({"type": "object", "properties": {}})
    );
}

#[test]
fn images_need_a_base64_data_url_or_a_web_url() {
    let body = wired(json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]}]}));
    assert_eq!(
        body["messages"][0]["content"][0]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="})
    );
    let result = to_wire(
        &json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "ftp://example.com/cat.png"}},
        ]}]}),
        "claude-test",
    );
    assert_eq!(param_of(result), "messages[0].content[1].image_url.url");
}

#[test]
fn a_response_without_content_or_with_wrong_types_is_malformed() {
    let cases = [
        json!({"id": "msg_1", "type": "message", "role": "assistant"}),
        json!({"content": "hello"}),
        json!({"content": [{"type": "text", "text": 3}]}),
        json!({"content": [{"text": "untyped"}]}),
        json!({"content": [], "usage": {"input_tokens": "ten"}}),
        json!({"content": [], "usage": 10}),
    ];
    for response in cases {
        assert!(
            matches!(from_wire(&response, &meta()), Err(WireError::Malformed(_))),
            "{response}"
        );
    }
}

#[test]
fn a_response_without_text_has_null_content_and_keeps_cache_counts() {
    let response = json!({
        "id": "msg_1", "model": "claude-test", "stop_reason": "refusal",
        "content": [{"type": "thinking", "thinking": "…", "signature": "s"}],
        "usage": {"input_tokens": 3, "output_tokens": 1,
                  "cache_read_input_tokens": 0, "cache_creation_input_tokens": 100},
    });
    let completion = from_wire(&response, &meta()).unwrap_or_default();
    assert_eq!(completion["choices"][0]["message"]["content"], Value::Null);
    assert!(
        completion["choices"][0]["message"]
            .get("tool_calls")
            .is_none()
    );
    assert_eq!(completion["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(completion["usage"]["prompt_tokens"], 103);
    assert_eq!(completion["usage"]["cache_creation_input_tokens"], 100);
}

#[test]
fn unknown_stream_events_and_pings_produce_nothing() {
    let mut stream = Stream::new(meta(), true);
    for name in ["ping", "content_block_stop", "some_future_event"] {
        assert_eq!(stream.event(name, &json!({"type": name})), Ok(Vec::new()));
    }
    let thinking = json!({"type": "content_block_delta", "index": 0,
                          "delta": {"type": "thinking_delta", "thinking": "hm"}});
    assert_eq!(
        stream.event("content_block_delta", &thinking),
        Ok(Vec::new())
    );
}

#[test]
fn an_error_event_is_an_upstream_error() {
    let mut stream = Stream::new(meta(), false);
    let error = json!({"type": "error",
                       "error": {"type": "overloaded_error", "message": "Overloaded"}});
    assert_eq!(
        stream.event("error", &error),
        Err(WireError::Upstream {
            kind: "overloaded_error".into(),
            message: "Overloaded".into()
        })
    );
}

#[test]
fn tool_input_for_a_block_that_is_no_tool_use_is_malformed() {
    let mut stream = Stream::new(meta(), false);
    let delta = json!({"type": "content_block_delta", "index": 4,
                       "delta": {"type": "input_json_delta", "partial_json": "{"}});
    assert!(matches!(
        stream.event("content_block_delta", &delta),
        Err(WireError::Malformed(_))
    ));
}

#[test]
fn an_error_body_that_is_not_anthropic_shaped_still_names_the_status() {
    let error = error_from_wire(503, b"<html>upstream connect error</html>");
    assert_eq!(
        error["error"]["message"],
        "the upstream answered HTTP 503: <html>upstream connect error</html>"
    );
    assert_eq!(error["error"]["type"], "api_error");
    assert_eq!(error["error"]["param"], Value::Null);
}
