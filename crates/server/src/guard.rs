//! What a request must be before a handler sees it: for this server (its `Host`), from a
//! page allowed to call it (its `Origin`), with a key when keys are required, JSON when it
//! is a POST, and its body whole within the deadline and the size limit.
//!
//! On a loopback address the `Host` check is what stops DNS rebinding: a page that makes its
//! own name resolve to 127.0.0.1 still sends its own name. Refusing every `Origin` that is
//! not configured stops cross-site requests from any page, and requiring `application/json`
//! stops the form posts and `text/plain` fetches a browser sends without asking first.
//! CORS preflights are answered only for configured origins.

use std::net::IpAddr;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::options::Options;
use crate::{ApiError, AppState};

/// The name of the key a request came with, for whatever attributes traffic to keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName(pub String);

/// Response headers a page may read.
const EXPOSED: &str = "x-request-id, x-smallfirst-tier, x-smallfirst-reason, \
    x-smallfirst-confidence, x-smallfirst-escalated, x-smallfirst-failover, x-smallfirst-task, \
    retry-after";

pub(crate) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let options = &state.inner.options;
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned());
    let allowed_origin = origin
        .as_deref()
        .filter(|o| {
            options
                .cors_origins
                .iter()
                .any(|a| a.eq_ignore_ascii_case(o))
        })
        .map(str::to_string);
    if request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return preflight(allowed_origin.as_deref(), request.headers());
    }
    let checked = check(
        options,
        &request,
        origin.as_deref(),
        allowed_origin.is_some(),
    );
    let mut request = request;
    let key = match checked {
        Ok(key) => key.map(KeyName),
        Err(e) => return refused(e, allowed_origin.as_deref()),
    };
    if let Some(key) = &key {
        tracing::Span::current().record("key", tracing::field::display(&key.0));
        request.extensions_mut().insert(key.clone());
    }
    if request.method() == Method::POST {
        request = match whole_body(options, request).await {
            Ok(r) => r,
            Err(e) => return refused(e, allowed_origin.as_deref()),
        };
    }
    let mut response = next.run(request).await;
    if let Some(origin) = allowed_origin {
        allow_origin(response.headers_mut(), &origin);
    }
    // For the request's record, written outside the guard (`observe`).
    if let Some(key) = key {
        response.extensions_mut().insert(key);
    }
    response
}

/// A request the guard turns away: its error, with CORS headers for a page allowed to read
/// it, and the connection closed (a client without a key, or from the wrong place, does not
/// get to keep a connection slot).
fn refused(e: ApiError, allowed_origin: Option<&str>) -> Response {
    let mut response = e.into_response();
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if let Some(origin) = allowed_origin {
        allow_origin(h, origin);
    }
    response
}

/// The checks that need only the head; the key's name when the request carried one.
fn check(
    o: &Options,
    request: &Request,
    origin: Option<&str>,
    origin_allowed: bool,
) -> Result<Option<String>, ApiError> {
    let headers = request.headers();
    if o.loopback {
        // The `Host` header, and the authority of an absolute-form request line
        // (`GET http://name/…`), must both name this machine; a request with neither is not
        // one a loopback server answers.
        let host = headers.get(header::HOST).map(|h| h.as_bytes().to_vec());
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().as_bytes().to_vec());
        if host.is_none() && authority.is_none() {
            return Err(ApiError::Forbidden {
                message: "a request must name its host (`Host` header)".into(),
                code: "host_not_allowed",
            });
        }
        for name in host.iter().chain(&authority) {
            if !host_allowed(name, &o.allowed_hosts) {
                return Err(ApiError::Forbidden {
                    message: format!(
                        "this server answers requests for loopback names only, not `{}` \
                         (hint: add the name to `[server] allowed_hosts`)",
                        shown(&String::from_utf8_lossy(name))
                    ),
                    code: "host_not_allowed",
                });
            }
        }
    }
    if let Some(origin) = origin
        && !origin_allowed
    {
        return Err(ApiError::Forbidden {
            message: format!(
                "requests from pages at `{}` are not allowed (hint: add the origin to \
                 `[server] cors_origins`)",
                shown(origin)
            ),
            code: "origin_not_allowed",
        });
    }
    let key = if o.keys.is_empty() || request.uri().path() == "/health" {
        None
    } else {
        let Some(presented) = presented_key(headers) else {
            return Err(ApiError::Unauthorized {
                message: "this server requires an API key: send `Authorization: Bearer KEY` \
                          or `x-api-key: KEY`"
                    .into(),
                code: "missing_api_key",
            });
        };
        match o.keys.verify(&presented) {
            Some(name) => Some(name.to_string()),
            None => {
                return Err(ApiError::Unauthorized {
                    message: "the API key is not one this server accepts".into(),
                    code: "invalid_api_key",
                });
            }
        }
    };
    if request.method() == Method::POST && !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType(
            "request bodies must be JSON, sent with `content-type: application/json`".into(),
        ));
    }
    Ok(key)
}

/// The key from `Authorization: Bearer` or `x-api-key`.
fn presented_key(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some((scheme, rest)) = v.trim().split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
    {
        return Some(rest.trim().to_string());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether `host` (a `Host` header) names this machine: `localhost`, a name under
/// `.localhost`, a loopback address, or one of `allowed`; with any port.
pub(crate) fn host_allowed(host: &[u8], allowed: &[String]) -> bool {
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let host = host.trim().to_ascii_lowercase();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal, `[::1]:8080`.
        match rest.split_once(']') {
            Some((addr, port)) if port.is_empty() || is_port(port) => addr.to_string(),
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name.to_string(),
            Some(_) => return false,
            None => host.clone(),
        }
    };
    let name = name.trim_end_matches('.');
    if name.is_empty() {
        return false;
    }
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    if name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
        return true;
    }
    allowed.iter().any(|a| a == name || a == &host)
}

fn is_port(p: &str) -> bool {
    p.strip_prefix(':').unwrap_or(p).parse::<u16>().is_ok()
}

/// The answer to a CORS preflight: allowed for a configured origin, refused otherwise.
fn preflight(origin: Option<&str>, headers: &HeaderMap) -> Response {
    let Some(origin) = origin else {
        return ApiError::Forbidden {
            message: "cross-origin requests are not allowed from this page's origin (hint: \
                      `[server] cors_origins`)"
                .into(),
            code: "origin_not_allowed",
        }
        .into_response();
    };
    let mut response = axum::http::StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    allow_origin(h, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    // The origin is trusted: whatever headers its client sends (the SDKs add their own).
    if let Some(asked) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

fn allow_origin(h: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.append(header::VARY, HeaderValue::from_static("origin"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED),
    );
}

/// The request with its body read whole: within `body_timeout` (a body that never ends is
/// a 408) and `max_body` bytes (past it, 413).
async fn whole_body(o: &Options, request: Request) -> Result<Request, ApiError> {
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, o.max_body);
    let bytes: Bytes = match tokio::time::timeout(o.body_timeout, read).await {
        Err(_) => {
            return Err(ApiError::BodyTimeout(format!(
                "the request body did not arrive within {} s",
                o.body_timeout.as_secs_f64()
            )));
        }
        Ok(Err(e)) => {
            return Err(ApiError::TooLarge(format!(
                "could not read the request body (at most {} bytes): {e}",
                o.max_body
            )));
        }
        Ok(Ok(b)) => b,
    };
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// A client's text for a message: control characters escaped, at most 100 characters.
pub(crate) fn shown(v: &str) -> String {
    let mut out: String = v.chars().take(100).flat_map(char::escape_default).collect();
    if v.chars().count() > 100 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_configured_hosts_are_allowed() {
        let allowed = vec!["gpu-box.lan".to_string()];
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "app.localhost:3000",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:8080",
            "[::1]",
            "gpu-box.lan:8080",
        ] {
            assert!(host_allowed(ok.as_bytes(), &allowed), "{ok}");
        }
        for bad in [
            "evil.example.com",
            "evil.example.com:8080",
            "0.0.0.0:8080",
            "192.168.1.10",
            "localhost.evil.com",
            "[::1]x",
            "localhost:99999",
            "",
            "127.0.0.1:80:80",
        ] {
            assert!(!host_allowed(bad.as_bytes(), &allowed), "{bad}");
        }
        assert!(!host_allowed(b"\xff", &allowed));
    }

    #[test]
    fn keys_come_from_bearer_or_x_api_key() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-1"),
        );
        assert_eq!(presented_key(&h).as_deref(), Some("sk-1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_key(&h), None);
        h.insert("x-api-key", HeaderValue::from_static("sk-3"));
        assert_eq!(
            presented_key(&h).as_deref(),
            Some("sk-3"),
            "Basic does not hide it"
        );
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static(" sk-2 "));
        assert_eq!(presented_key(&h).as_deref(), Some("sk-2"));
        assert_eq!(presented_key(&HeaderMap::new()), None);
    }

    #[test]
    fn only_json_bodies() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        for (v, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("application/jsonx", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            assert_eq!(is_json(&h), ok, "{v}");
        }
    }
}
