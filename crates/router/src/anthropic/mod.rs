//! Anthropic's Messages API as a tier: a client speaks OpenAI Chat Completions, Claude answers.
//!
//! [`wire`] translates requests, responses, stream events and error bodies; this module sends
//! them (`POST {base_url}/messages`, `x-api-key`, `anthropic-version`).

pub mod wire;

use bytes::Bytes;
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use crate::Secret;
use crate::backend::{Answer, Backend, BackendError, BoxFuture, Native, Protocol, primed};
use crate::config::{Faults, Remote};
use crate::http::{Http, endpoint};
use crate::sse::SseEvent;
use crate::translated::{self, Events};
use crate::wire::WireError;

/// The API version the translation is written against.
const VERSION: &str = "2023-06-01";

#[derive(Debug)]
pub struct AnthropicBackend {
    model: String,
    endpoint: Url,
    key: Option<Secret>,
    http: Http,
}

impl AnthropicBackend {
    pub fn new(tier: &str, remote: &Remote, faults: &Faults) -> Result<Self, BackendError> {
        Ok(AnthropicBackend {
            model: remote.model.clone(),
            endpoint: endpoint(&remote.base_url, "messages"),
            key: Secret::from_env(tier, remote.api_key_env.as_deref())?,
            http: Http::new(tier, faults)?,
        })
    }

    async fn try_chat(&self, request: &Bytes, deadline: Instant) -> Result<Answer, BackendError> {
        let tier = self.http.tier();
        let (request, stream, include_usage) = translated::read_request(request)?;
        let body = wire::to_wire(&request, &self.model).map_err(|source| BackendError::Wire {
            tier: tier.into(),
            source,
        })?;
        let mut post = self
            .http
            .post(self.endpoint.clone())
            .header("content-type", "application/json")
            .header("anthropic-version", VERSION)
            .body(translated::to_bytes(tier, &body)?);
        if let Some(key) = &self.key {
            post = post.header("x-api-key", key.expose());
        }
        let response = self
            .http
            .send(post, deadline, stream, wire::error_from_wire)
            .await?;
        let meta = translated::meta();
        let events = stream.then(|| StreamEvents(wire::Stream::new(meta.clone(), include_usage)));
        translated::answer(&self.http, response, deadline, events, |answer| {
            wire::from_wire(answer, &meta)
        })
        .await
    }
}

impl AnthropicBackend {
    /// The client's own Messages request, sent as it came but for `model`; the answer's bytes
    /// come back untouched.
    async fn try_pass(&self, native: &Native, deadline: Instant) -> Result<Answer, BackendError> {
        let tier = self.http.tier();
        let (body, _) = crate::splice::with_model(&native.body, &self.model)?;
        let mut post = self
            .http
            .post(self.endpoint.clone())
            .header("content-type", "application/json");
        let mut versioned = false;
        for (name, value) in &native.headers {
            versioned |= name == "anthropic-version";
            post = post.header(name.as_str(), value.as_str());
        }
        if !versioned {
            post = post.header("anthropic-version", VERSION);
        }
        if let Some(key) = &self.key {
            post = post.header("x-api-key", key.expose());
        }
        let response = self
            .http
            .send(
                post.body(body),
                deadline,
                native.stream,
                wire::error_from_wire,
            )
            .await?;
        if native.stream {
            let chunks = self.http.chunks(response, deadline);
            return primed(tier, chunks).await;
        }
        Ok(Answer::Json(self.http.body(response, deadline).await?))
    }
}

impl Backend for AnthropicBackend {
    fn model(&self) -> &str {
        &self.model
    }

    fn speaks(&self, protocol: Protocol) -> bool {
        protocol == Protocol::AnthropicMessages
    }

    fn pass<'a>(
        &'a self,
        native: &'a Native,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Answer, BackendError>> {
        Box::pin(self.try_pass(native, deadline))
    }

    fn chat<'a>(
        &'a self,
        request: &'a Bytes,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Answer, BackendError>> {
        Box::pin(self.try_chat(request, deadline))
    }
}

struct StreamEvents(wire::Stream);

impl Events for StreamEvents {
    fn event(&mut self, event: &SseEvent) -> Result<Vec<Value>, WireError> {
        let data = translated::event_json(event)?;
        // The event's name is in `event:` and repeated in the data's `type`.
        let name = event
            .name
            .as_deref()
            .or_else(|| data["type"].as_str())
            .unwrap_or("");
        self.0.event(name, &data)
    }
}
