//! Successful requests: JSON and SSE bodies in OpenAI's shape.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::{chat, send, user};

#[tokio::test]
async fn non_streaming_completion_has_openai_shape() {
    let r = chat(json!({"model": "smollm2-135m-instruct", "messages": user("Say hi."), "max_tokens": 8, "temperature": 0})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers.get("x-smallfirst-tier").map(|v| v.as_bytes()),
        Some(&b"local"[..])
    );
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().is_some_and(|s| s.starts_with("chatcmpl-")));
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["refusal"].is_null());
    assert!(
        choice["message"]
            .as_object()
            .is_some_and(|m| m.contains_key("refusal"))
    );
    assert!(choice["logprobs"].is_null());
    let usage = &v["usage"];
    let (p, c) = (
        usage["prompt_tokens"].as_u64(),
        usage["completion_tokens"].as_u64(),
    );
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(p.unwrap_or(0) + c.unwrap_or(0))
    );
    assert!(c.is_some_and(|c| (1..=8).contains(&c)));
}

/// `data:` payloads of an SSE body, in order.
fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
        .collect()
}

#[tokio::test]
async fn streaming_sends_role_first_usage_last_then_done() {
    let r = chat(json!({"model": "local", "messages": user("Count to five."), "max_tokens": 10,
                        "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}))
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
    );
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("chunk is JSON"))
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    let first = &chunks[0]["choices"][0]["delta"];
    assert_eq!(first["role"], "assistant");
    // Every chunk but the last carries `usage: null`; the last has no choices and the usage.
    let (last, rest) = chunks.split_last().expect("chunks");
    assert!(rest.iter().all(|c| c["usage"].is_null() && c.as_object().is_some_and(|o| o.contains_key("usage"))));
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 10);
    let finish = &rest.last().expect("finish chunk")["choices"][0];
    assert_eq!(finish["finish_reason"], "length");
    let text: String = rest
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!text.is_empty());
    // Same request without streaming gives the same text (greedy).
    let plain = chat(json!({"model": "local", "messages": user("Count to five."), "max_tokens": 10, "temperature": 0})).await;
    assert_eq!(
        plain.json()["choices"][0]["message"]["content"].as_str(),
        Some(text.as_str())
    );
}

#[tokio::test]
async fn streaming_without_include_usage_has_no_usage_key() {
    let r =
        chat(json!({"model": "local", "messages": user("Hi"), "max_tokens": 3, "stream": true}))
            .await;
    let data = sse_data(&r.body);
    for d in &data[..data.len() - 1] {
        let v: Value = serde_json::from_str(d).expect("chunk is JSON");
        assert!(
            !v.as_object().is_some_and(|o| o.contains_key("usage")),
            "{v}"
        );
    }
}

#[tokio::test]
async fn logprobs_per_token_with_top_alternatives() {
    let r = chat(
        json!({"model": "local", "messages": user("Say hello."), "max_tokens": 6, "temperature": 0,
                        "logprobs": true, "top_logprobs": 2}),
    )
    .await;
    let v = r.json();
    let content = v["choices"][0]["logprobs"]["content"]
        .as_array()
        .cloned()
        .expect("logprobs.content");
    assert_eq!(
        content.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap_or(0)
    );
    for t in &content {
        assert!(t["logprob"].as_f64().is_some_and(|l| l <= 0.0));
        assert_eq!(t["top_logprobs"].as_array().map(Vec::len), Some(2));
        assert!(t["bytes"].is_array());
    }
}

#[tokio::test]
async fn models_and_health() {
    let r = send("GET", "/v1/models", "").await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "smollm2-135m-instruct");
    assert_eq!(
        send("GET", "/v1/models/smollm2-135m-instruct", "")
            .await
            .status,
        StatusCode::OK
    );
    let h = send("GET", "/health", "").await;
    assert_eq!(h.json()["status"], "ok");
}
