//! The guard, without a model: host, origin, keys, content type, body limits, request ids.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use smallfirst_router::{Config, Policy};
use smallfirst_server::{AppState, Keys, Limits, Options, app};
use tower::ServiceExt;

use crate::{Reply, collect};

/// A gateway with no tiers: every request that passes the guard ends in a 404 or 400 from
/// the handlers, which is how a test tells "let through" from "refused".
fn state(options: Options) -> AppState {
    let config = Config::embedded("none");
    AppState::with_tiers(
        None,
        Vec::new(),
        Policy::new(&config, None),
        Limits::default(),
        options,
    )
}

fn keys() -> Keys {
    Keys::parse("test", "ci:sk-test-0001 ops:sk-test-0002").expect("keys parse")
}

/// Sends `request` (naming this machine in `Host` unless it names something itself).
async fn call(state: AppState, mut request: Request<Body>) -> Reply {
    if !request.headers().contains_key("host") {
        request
            .headers_mut()
            .insert("host", axum::http::HeaderValue::from_static("localhost"));
    }
    collect(app(state).oneshot(request).await.expect("infallible")).await
}

fn post(headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut r = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(Body::from(body.to_string())).expect("request")
}

const JSON: (&str, &str) = ("content-type", "application/json");
const BODY: &str = r#"{"model": "x", "messages": [{"role": "user", "content": "hi"}]}"#;

#[tokio::test]
async fn only_loopback_hosts_reach_a_loopback_server() {
    let options = Options {
        allowed_hosts: vec!["gpu-box.lan".into()],
        ..Options::default()
    };
    for host in [
        "evil.example.com",
        "evil.example.com:8080",
        "0.0.0.0:8080",
        "192.168.1.9",
    ] {
        let r = call(state(options.clone()), post(&[JSON, ("host", host)], BODY)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{host}");
        assert_eq!(r.error()["code"], "host_not_allowed", "{host}");
    }
    for host in [
        "127.0.0.1:8080",
        "localhost:8080",
        "[::1]:8080",
        "gpu-box.lan",
    ] {
        let r = call(state(options.clone()), post(&[JSON, ("host", host)], BODY)).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{host}: the handler answered"
        );
    }
    // A request that names no host at all is not one a loopback server answers; nor one whose
    // request line names another (absolute form).
    let bare = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(BODY))
        .expect("request");
    let mut bare = bare;
    bare.headers_mut().remove("host");
    let r = app(state(options.clone()))
        .oneshot(bare)
        .await
        .expect("infallible");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let absolute = Request::builder()
        .method("POST")
        .uri("http://attacker.example.com/v1/chat/completions")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Body::from(BODY))
        .expect("request");
    let r = call(state(options.clone()), absolute).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Off loopback (with keys, as serve requires), any Host may come.
    let open = Options {
        loopback: false,
        ..Options::default()
    };
    let r = call(
        state(open),
        post(&[JSON, ("host", "api.example.com")], BODY),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bodies_must_be_json() {
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let headers: Vec<(&str, &str)> = ct.map(|c| ("content-type", c)).into_iter().collect();
        let r = call(state(Options::default()), post(&headers, BODY)).await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert_eq!(r.error()["code"], "unsupported_media_type");
    }
}

#[tokio::test]
async fn pages_from_other_origins_are_refused_and_listed_ones_get_cors() {
    let r = call(
        state(Options::default()),
        post(&[JSON, ("origin", "https://evil.example.com")], BODY),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.error()["code"], "origin_not_allowed");
    assert!(!r.headers.contains_key("access-control-allow-origin"));
    let cors = Options {
        cors_origins: vec!["https://app.example.com".into()],
        ..Options::default()
    };
    let preflight = Request::builder()
        .method("OPTIONS")
        .uri("/v1/chat/completions")
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .body(Body::empty())
        .expect("request");
    let r = call(state(cors.clone()), preflight).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        r.headers["access-control-allow-methods"]
            .to_str()
            .is_ok_and(|m| m.contains("POST"))
    );
    assert_eq!(
        r.headers["access-control-allow-headers"],
        "authorization, content-type"
    );
    let r = call(
        state(cors.clone()),
        post(&[JSON, ("origin", "https://app.example.com")], BODY),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "let through");
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        r.headers["access-control-expose-headers"]
            .to_str()
            .is_ok_and(|h| h.contains("x-request-id"))
    );
    let other = Request::builder()
        .method("OPTIONS")
        .uri("/v1/chat/completions")
        .header("origin", "https://evil.example.com")
        .header("access-control-request-method", "POST")
        .body(Body::empty())
        .expect("request");
    let r = call(state(cors), other).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!r.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn keys_are_required_when_configured() {
    let options = Options {
        keys: keys(),
        ..Options::default()
    };
    let r = call(state(options.clone()), post(&[JSON], BODY)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error()["code"], "missing_api_key");
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    for bad in ["Bearer sk-test-0003", "Bearer ", "Basic c2stdGVzdC0wMDAx"] {
        let r = call(
            state(options.clone()),
            post(&[JSON, ("authorization", bad)], BODY),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
    }
    let r = call(
        state(options.clone()),
        post(&[JSON, ("authorization", "Bearer sk-test-0001")], BODY),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "let through");
    let r = call(
        state(options.clone()),
        post(&[JSON, ("x-api-key", "sk-test-0002")], BODY),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "let through");
    // Health stays open for load balancers; the models list does not.
    let get = |uri: &str| {
        Request::builder()
            .uri(uri)
            .body(Body::empty())
            .expect("request")
    };
    assert_eq!(
        call(state(options.clone()), get("/health")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(state(options), get("/v1/models")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn bodies_over_the_limit_or_late_are_refused() {
    let small = Options {
        max_body: 1024,
        ..Options::default()
    };
    let big = format!(
        r#"{{"model": "x", "messages": [], "user": "{}"}}"#,
        "x".repeat(4096)
    );
    let r = call(state(small), post(&[JSON], &big)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.error()["code"], "request_too_large");
    // A body that never ends.
    let quick = Options {
        body_timeout: Duration::from_millis(300),
        ..Options::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
    tx.send(Ok(axum::body::Bytes::from_static(b"{\"model\": ")))
        .await
        .expect("send");
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let request = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .expect("request");
    let started = std::time::Instant::now();
    let r = call(state(quick), request).await;
    assert_eq!(r.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(r.error()["code"], "body_timeout");
    assert_eq!(r.headers["connection"], "close");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(tx);
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let r = call(
        state(Options::default()),
        post(&[JSON, ("x-request-id", "client-7")], BODY),
    )
    .await;
    assert_eq!(r.headers["x-request-id"], "client-7");
    let r = call(
        state(Options::default()),
        post(&[("x-request-id", "bad id with spaces")], BODY),
    )
    .await;
    let id = r.headers["x-request-id"].to_str().expect("ascii");
    assert!(id.starts_with("req_"), "{id}");
    let v: Value = serde_json::from_slice(&r.body).expect("json");
    assert!(v["error"].is_object());
}
