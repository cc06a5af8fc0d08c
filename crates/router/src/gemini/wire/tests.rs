use serde_json::{Value, json};

use super::*;

fn meta() -> Meta {
    Meta {
        id: "chatcmpl-local".into(),
        created: 1_700_000_000,
    }
}

fn wired(request: Value) -> Value {
    match to_wire(&request) {
        Ok(v) => v,
        Err(e) => panic!("to_wire failed: {e}"),
    }
}

fn completion(response: Value) -> Value {
    match from_wire(&response, &meta(), "gemini-test") {
        Ok(v) => v,
        Err(e) => panic!("from_wire failed: {e}"),
    }
}

fn param_of(result: Result<Value, WireError>) -> String {
    match result {
        Err(WireError::Unsupported { param, .. }) => param,
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn consecutive_turns_merge_and_tool_results_answer_by_name() {
    let body = wired(json!({"messages": [
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "lookup", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "a", "content": [{"type": "text", "text": "[1, 2]"}]},
        {"role": "tool", "tool_call_id": "unknown", "name": "legacy", "content": "{\"ok\": true}"},
    ]}));
    assert_eq!(
        body["contents"],
        json!([
            {"role": "user", "parts": [{"text": "first"}, {"text": "second"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {}}}]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "lookup", "response": {"content": "[1, 2]"}}},
                {"functionResponse": {"name": "legacy", "response": {"ok": true}}},
            ]},
        ])
    );
    assert!(body.get("generationConfig").is_none());
}

#[test]
fn a_tool_result_that_answers_no_call_is_refused() {
    let result = to_wire(&json!({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "nowhere", "content": "42"},
    ]}));
    assert_eq!(param_of(result), "messages[1].tool_call_id");
}

#[test]
fn arguments_that_are_not_an_object_are_refused_by_path() {
    let result = to_wire(&json!({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "\"text\""}},
        ]},
    ]}));
    assert_eq!(
        param_of(result),
        "messages[1].tool_calls[0].function.arguments"
    );
}

#[test]
fn what_gemini_cannot_take_is_refused() {
    let user = json!({"role": "user", "content": "hi"});
    let result = to_wire(&json!({"messages": [user], "logprobs": true}));
    assert_eq!(param_of(result), "logprobs");
    let image = json!({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}});
    let result = to_wire(&json!({"messages": [
        {"role": "system", "content": [image]},
        user,
    ]}));
    assert_eq!(param_of(result), "messages[0].content");
    let result = to_wire(&json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}},
    ]}]}));
    assert_eq!(param_of(result), "messages[0].content[0].image_url.url");
}

#[test]
fn thoughts_are_left_out_and_call_ids_stay_unique_across_candidates() {
    let body = completion(json!({
        "candidates": [
            {"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": [
                {"text": "planning…", "thought": true},
                {"functionCall": {"name": "f", "args": {"x": 1}}},
            ]}},
            {"index": 1, "finishReason": "STOP", "content": {"role": "model", "parts": [
                {"functionCall": {"id": "given", "name": "f"}},
                {"functionCall": {"name": "g", "args": {}}},
            ]}},
        ],
    }));
    let ids: Vec<&Value> = body["choices"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["message"]["tool_calls"].as_array().into_iter().flatten())
        .map(|call| &call["id"])
        .collect();
    assert_eq!(ids, [&json!("call_0"), &json!("given"), &json!("call_2")]);
    assert_eq!(body["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(body["choices"][1]["index"], 1);
    assert_eq!(
        body["choices"][1]["message"]["tool_calls"][0]["function"]["arguments"],
        "{}"
    );
    assert_eq!(body["id"], "chatcmpl-local", "no responseId");
    assert_eq!(body["model"], "gemini-test", "no modelVersion");
    assert_eq!(body["usage"]["total_tokens"], 0);
}

#[test]
fn finish_reasons_map() {
    let finish = |reason: &str| {
        let body = completion(json!({"candidates": [{"finishReason": reason}]}));
        body["choices"][0]["finish_reason"].clone()
    };
    assert_eq!(finish("MAX_TOKENS"), "length");
    assert_eq!(finish("SAFETY"), "content_filter");
    assert_eq!(finish("RECITATION"), "content_filter");
    assert_eq!(finish("MALFORMED_FUNCTION_CALL"), "stop");
    assert_eq!(finish("SOMETHING_NEW"), "stop");
}

#[test]
fn a_response_in_the_wrong_shape_is_malformed() {
    let cases = [
        json!([]),
        json!({}),
        json!({"candidates": {}}),
        json!({"candidates": [{"content": {"parts": {"text": "x"}}}]}),
        json!({"candidates": [{"content": {"parts": [{"text": 1}]}}]}),
        json!({"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]}),
        json!({"candidates": [], "usageMetadata": {"promptTokenCount": -1}}),
    ];
    for response in cases {
        assert!(
            matches!(
                from_wire(&response, &meta(), "m"),
                Err(WireError::Malformed(_))
            ),
            "{response}"
        );
    }
}

#[test]
fn an_error_mid_stream_is_an_upstream_error() {
    let mut stream = Stream::new(meta(), "gemini-test", true);
    let error = json!({"error": {"code": 503, "message": "The model is overloaded.",
                                 "status": "UNAVAILABLE"}});
    assert_eq!(
        stream.event(&error),
        Err(WireError::Upstream {
            kind: "UNAVAILABLE".into(),
            message: "The model is overloaded.".into()
        })
    );
}

#[test]
fn a_blocked_prompt_streams_a_filtered_finish_and_its_usage() {
    let mut stream = Stream::new(meta(), "gemini-test", true);
    let chunks = stream.event(&json!({
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5},
    }));
    let chunks = chunks.unwrap_or_default();
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(chunks[2]["usage"]["prompt_tokens"], 5);
    assert_eq!(chunks[2]["model"], "gemini-test");
    assert_eq!(stream.finish(), Vec::<Value>::new(), "usage goes out once");
}

#[test]
fn usage_still_owed_at_the_end_goes_out_from_finish() {
    let mut stream = Stream::new(meta(), "gemini-test", true);
    let chunks = stream.event(&json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "thinking", "thought": true},
            {"executableCode": {"language": "PYTHON", "code": "1+1"}},
            {"text": "Hi"},
        ]}}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1,
                          "cachedContentTokenCount": 2, "totalTokenCount": 4},
    }));
    let contents: Vec<Value> = chunks
        .unwrap_or_default()
        .iter()
        .map(|c| c["choices"][0]["delta"].clone())
        .collect();
    assert_eq!(
        contents,
        [
            json!({"role": "assistant", "content": ""}),
            json!({"content": "Hi"})
        ]
    );
    let rest = stream.finish();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["choices"], json!([]));
    assert_eq!(
        rest[0]["usage"]["prompt_tokens_details"]["cached_tokens"],
        2
    );
    assert_eq!(stream.finish(), Vec::<Value>::new());
}

#[test]
fn error_bodies_in_an_array_or_in_no_known_shape_still_become_openai_errors() {
    let body = br#"[{"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}}]"#;
    let error = error_from_wire(400, body);
    assert_eq!(
        error,
        json!({"error": {"message": "API key not valid.", "type": "invalid_argument",
                         "param": null, "code": "INVALID_ARGUMENT"}})
    );
    let error = error_from_wire(502, b"Bad Gateway");
    assert_eq!(
        error["error"]["message"],
        "the upstream answered HTTP 502: Bad Gateway"
    );
}
