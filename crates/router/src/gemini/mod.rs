//! Google's Gemini API as a tier: a client speaks OpenAI Chat Completions, Gemini answers.
//!
//! [`wire`] translates requests, responses, stream events and error bodies, and names the
//! method path a request goes to; this module sends them (`POST
//! {base_url}/models/{model}:generateContent`, or `:streamGenerateContent?alt=sse`, with the
//! key in `x-goog-api-key`).

pub mod wire;

use bytes::Bytes;
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use crate::Secret;
use crate::backend::{Answer, Backend, BackendError, BoxFuture};
use crate::config::{Faults, Remote};
use crate::http::{Http, endpoint};
use crate::sse::SseEvent;
use crate::translated::{self, Events};
use crate::wire::WireError;

#[derive(Debug)]
pub struct GeminiBackend {
    model: String,
    base_url: Url,
    key: Option<Secret>,
    http: Http,
}

impl GeminiBackend {
    pub fn new(tier: &str, remote: &Remote, faults: &Faults) -> Result<Self, BackendError> {
        Ok(GeminiBackend {
            model: remote.model.clone(),
            base_url: remote.base_url.clone(),
            key: Secret::from_env(tier, remote.api_key_env.as_deref())?,
            http: Http::new(tier, faults)?,
        })
    }

    async fn try_chat(&self, request: &Bytes, deadline: Instant) -> Result<Answer, BackendError> {
        let tier = self.http.tier();
        let (request, stream, include_usage) = translated::read_request(request)?;
        let body = wire::to_wire(&request).map_err(|source| BackendError::Wire {
            tier: tier.into(),
            source,
        })?;
        let url = endpoint(&self.base_url, &wire::path(&self.model, stream));
        let mut post = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(translated::to_bytes(tier, &body)?);
        if let Some(key) = &self.key {
            post = post.header("x-goog-api-key", key.expose());
        }
        let response = self
            .http
            .send(post, deadline, stream, wire::error_from_wire)
            .await?;
        let meta = translated::meta();
        let events = stream
            .then(|| StreamEvents(wire::Stream::new(meta.clone(), &self.model, include_usage)));
        translated::answer(&self.http, response, deadline, events, |answer| {
            wire::from_wire(answer, &meta, &self.model)
        })
        .await
    }
}

impl Backend for GeminiBackend {
    fn model(&self) -> &str {
        &self.model
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
        self.0.event(&data)
    }

    fn end(&mut self) -> Vec<Value> {
        self.0.finish()
    }
}
