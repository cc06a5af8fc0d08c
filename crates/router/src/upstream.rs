//! An OpenAI-compatible upstream (OpenAI, Ollama, vLLM, llama.cpp server, another
//! smallfirst) reached over HTTP: the request goes through as it came, with only `model`
//! replaced by the tier's; the answer comes back as it was sent, JSON or SSE bytes.
//!
//! One `reqwest::Client` per upstream keeps a pool of HTTP/1.1 keep-alive connections; no
//! request builds a client. A connect deadline and a first-byte deadline keep a client from
//! hanging on a stuck upstream.

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde_json::Value;
use url::Url;

use crate::config::Remote;

/// Time to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time from sending the request to the response head (a slow model's first token included).
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(300);

/// A key read from the environment: prints as `*****`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

/// Why an upstream call failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The environment variable the tier names for its key is not set.
    #[error("tier `{tier}`: the environment variable `{var}` holding its API key is not set")]
    MissingKey { tier: String, var: String },
    #[error("tier `{tier}`: cannot build the HTTP client: {reason}")]
    Client { tier: String, reason: String },
    /// No connection, or it broke before a response head came.
    #[error("tier `{tier}`: cannot reach {url}: {reason}")]
    Unreachable {
        tier: String,
        url: String,
        reason: String,
    },
    #[error("tier `{tier}`: no response from {url} within {secs} s")]
    Timeout {
        tier: String,
        url: String,
        secs: u64,
    },
    /// The request body is not a JSON object.
    #[error("the request body is not a JSON object")]
    Body,
}

impl UpstreamError {
    /// Whether trying again (or elsewhere) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            UpstreamError::Unreachable { .. } | UpstreamError::Timeout { .. }
        )
    }
}

/// An upstream's answer: its status, content type and body, untouched.
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>,
}

/// One OpenAI-compatible upstream.
#[derive(Debug, Clone)]
pub struct OpenAiUpstream {
    tier: String,
    model: String,
    endpoint: Url,
    key: Option<Secret>,
    client: reqwest::Client,
}

impl OpenAiUpstream {
    /// Builds the upstream for `tier`, reading its key from the environment now.
    pub fn new(tier: &str, remote: &Remote) -> Result<Self, UpstreamError> {
        let key = match &remote.api_key_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(Secret::new(v)),
                _ => {
                    return Err(UpstreamError::MissingKey {
                        tier: tier.into(),
                        var: var.clone(),
                    });
                }
            },
        };
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| UpstreamError::Client {
                tier: tier.into(),
                reason: e.to_string(),
            })?;
        Ok(OpenAiUpstream {
            tier: tier.into(),
            model: remote.model.clone(),
            endpoint: endpoint(&remote.base_url, "chat/completions"),
            key,
            client,
        })
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// Sends a chat completion request (`body` as the client sent it) with `model` set to the
    /// tier's, and returns the upstream's answer as it comes.
    pub async fn chat(&self, body: &[u8]) -> Result<Reply, UpstreamError> {
        let body = with_model(body, &self.model)?;
        let mut request = self
            .client
            .post(self.endpoint.clone())
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key.expose());
        }
        let url = self.endpoint.to_string();
        let response = tokio::time::timeout(FIRST_BYTE_TIMEOUT, request.send())
            .await
            .map_err(|_| UpstreamError::Timeout {
                tier: self.tier.clone(),
                url: url.clone(),
                secs: FIRST_BYTE_TIMEOUT.as_secs(),
            })?
            .map_err(|e| UpstreamError::Unreachable {
                tier: self.tier.clone(),
                url,
                reason: error_chain(&e),
            })?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Reply {
            status: response.status().as_u16(),
            content_type,
            body: Box::pin(response.bytes_stream()),
        })
    }
}

/// `base` joined with `path`, whether or not `base` ends in `/`.
fn endpoint(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}/{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url
}

/// The request with `model` replaced, every other field as the client sent it (in order).
fn with_model(body: &[u8], model: &str) -> Result<Vec<u8>, UpstreamError> {
    let mut value: Value = serde_json::from_slice(body).map_err(|_| UpstreamError::Body)?;
    let Value::Object(map) = &mut value else {
        return Err(UpstreamError::Body);
    };
    map.insert("model".into(), Value::String(model.into()));
    serde_json::to_vec(&value).map_err(|_| UpstreamError::Body)
}

/// An error with its causes, which is where reqwest says what actually went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_joins_with_or_without_slash() {
        for base in ["http://h:1/v1", "http://h:1/v1/"] {
            let u = Url::parse(base).expect("url");
            assert_eq!(
                endpoint(&u, "chat/completions").as_str(),
                "http://h:1/v1/chat/completions"
            );
        }
    }

    #[test]
    fn only_the_model_changes() {
        let body = br#"{"model":"frontier","messages":[{"role":"user","content":"hi"}],"stream":true,"x_extra":{"cache_control":{"type":"ephemeral"}}}"#;
        let out: Value = serde_json::from_slice(&with_model(body, "gpt-4o-mini").expect("object"))
            .expect("json");
        assert_eq!(out["model"], "gpt-4o-mini");
        assert_eq!(out["x_extra"]["cache_control"]["type"], "ephemeral");
        assert_eq!(out["stream"], true);
        let keys: Vec<&String> = out.as_object().expect("object").keys().collect();
        assert_eq!(
            keys,
            ["model", "messages", "stream", "x_extra"],
            "order is kept"
        );
        assert!(with_model(b"[1]", "m").is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("sk-123".into())), "*****");
    }
}
