//! Bad requests: each gets the OpenAI error shape and the right status; the app keeps serving.

use axum::http::StatusCode;
use serde_json::json;

use crate::{chat, send, user};

#[tokio::test]
async fn malformed_and_invalid_requests() {
    let cases: Vec<(String, StatusCode, Option<&str>, Option<&str>)> = vec![
        ("{not json".into(), StatusCode::BAD_REQUEST, None, None),
        (
            json!({"model": "local"}).to_string(),
            StatusCode::BAD_REQUEST,
            None,
            None,
        ),
        (
            json!({"model": "local", "messages": "hi"}).to_string(),
            StatusCode::BAD_REQUEST,
            Some("messages"),
            None,
        ),
        (
            json!({"model": "local", "messages": user("x"), "temperature": "hot"}).to_string(),
            StatusCode::BAD_REQUEST,
            Some("temperature"),
            None,
        ),
        (
            json!({"model": "local", "messages": user("x"), "temperature": 3}).to_string(),
            StatusCode::BAD_REQUEST,
            Some("temperature"),
            None,
        ),
        (
            json!({"model": "local", "messages": user("x"), "bogus": 1}).to_string(),
            StatusCode::BAD_REQUEST,
            None,
            None,
        ),
        (
            json!({"model": "local", "messages": []}).to_string(),
            StatusCode::BAD_REQUEST,
            Some("messages"),
            None,
        ),
        (
            json!({"model": "local", "messages": [{"role": "wizard", "content": "x"}]}).to_string(),
            StatusCode::BAD_REQUEST,
            Some("messages[0].role"),
            None,
        ),
        (
            json!({"model": "gpt-9", "messages": user("x")}).to_string(),
            StatusCode::NOT_FOUND,
            Some("model"),
            Some("model_not_found"),
        ),
        (
            json!({"model": "local", "messages": user("x"), "n": 17}).to_string(),
            StatusCode::BAD_REQUEST,
            Some("n"),
            None,
        ),
        (
            json!({"model": "local", "messages": user(&"many words ".repeat(300))}).to_string(),
            StatusCode::BAD_REQUEST,
            Some("messages"),
            Some("context_length_exceeded"),
        ),
        (
            json!({"model": "local", "messages": user("x"), "max_tokens": 10_000}).to_string(),
            StatusCode::BAD_REQUEST,
            Some("messages"),
            Some("context_length_exceeded"),
        ),
    ];
    for (body, status, param, code) in cases {
        let r = send("POST", "/v1/chat/completions", body.clone()).await;
        assert_eq!(
            r.status,
            status,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let e = r.error();
        assert_eq!(e["type"], "invalid_request_error", "{body}");
        if let Some(param) = param {
            assert_eq!(e["param"], param, "{body}: {e}");
        }
        if let Some(code) = code {
            assert_eq!(e["code"], code, "{body}: {e}");
        }
    }
    // Still serving.
    let ok = chat(json!({"model": "local", "messages": user("Hi"), "max_tokens": 2})).await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_and_methods_use_the_error_shape() {
    let r = send("GET", "/v1/nothing", "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error()["code"], "unknown_url");
    let r = send("GET", "/v1/chat/completions", "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    r.error();
    let r = send("GET", "/v1/models/gpt-9", "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error()["code"], "model_not_found");
}
