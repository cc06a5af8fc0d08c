//! The axum app driven with `oneshot` (no socket), on the real SmolLM2-135M model.

use std::path::PathBuf;
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use smallfirst_engine::{Engine, EngineConfig};
use smallfirst_server::{AppState, app};
use tower::ServiceExt;

mod chat;
mod connections;
mod core;
mod errors;
mod guard;
mod structured;

fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SMALLFIRST_TEST_MODEL") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("SMALLFIRST_MODELS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("smallfirst/models"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/smallfirst/models"))
        })
        .expect("set SMALLFIRST_TEST_MODEL or HOME");
    base.join("smollm2-135m-instruct.gguf")
}

/// One small-context engine for every test here: 256 tokens makes "too long" easy to reach.
fn engine() -> Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    let engine = ENGINE.get_or_init(|| {
        Engine::start(EngineConfig {
            model_path: model_path(),
            n_ctx: Some(256),
            threads: Some(2),
            ..EngineConfig::default()
        })
        .expect("model loads (run `smallfirst pull smollm2-135m-instruct` first)")
    });
    engine.clone()
}

fn state() -> AppState {
    AppState::new(engine(), "smollm2-135m-instruct")
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts the OpenAI error shape and returns `error`.
    pub fn error(&self) -> Value {
        let v = self.json();
        let e = v["error"].clone();
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert!(e["type"].is_string(), "{v}");
        let obj = e.as_object().expect("error is an object");
        assert!(obj.contains_key("param") && obj.contains_key("code"), "{v}");
        e
    }
}

pub async fn send(method: &str, uri: &str, body: impl Into<Body>) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(body.into())
        .expect("request builds");
    collect(app(state()).oneshot(request).await.expect("infallible")).await
}

/// A response read whole.
pub async fn collect(response: axum::response::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body reads")
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn chat(body: Value) -> Reply {
    send("POST", "/v1/chat/completions", body.to_string()).await
}

pub fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}
