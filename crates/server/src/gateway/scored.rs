//! A label answered from the model's whole label distribution, read in one pass
//! ([`Engine::score`]) rather than decoded: debiased by the model's prior on a content-free
//! input (contextual calibration, Zhao et al. 2021), or averaged over shifts of the order the
//! labels are listed in. The answer is the most probable label after the correction; its
//! corrected probability is the confidence.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use smallfirst_engine::{ChatMessage, Prompt};
use smallfirst_protocol::ChatRequest;
use smallfirst_router::confidence::{self, Estimator, MAX_PERMUTED_LABELS, Method};

use crate::ApiError;
use crate::answer;
use crate::convert::{self, Plan};
use crate::gateway::Gateway;
use crate::gateway::embedded::{EmbeddedTier, Held, Prepared, admit, list_labels};

/// What the last user message becomes in the content-free twins, after Zhao et al.
const CONTENT_FREE: [&str; 3] = ["N/A", "", "[MASK]"];
/// The longest label scored rather than decoded.
const MAX_SCORED_LABEL_BYTES: usize = 256;
/// Content-free priors kept, by prompt and label set; the map is emptied when full.
const PRIORS: usize = 512;

/// Content-free label priors, by the sha256 of the twins' messages, tools and labels (a
/// collision-resistant key: one client's prompts cannot be made to share another's prior).
#[derive(Default)]
pub struct Priors(Mutex<HashMap<[u8; 32], Vec<f64>>>);

impl Priors {
    fn get(&self, key: &[u8; 32]) -> Option<Vec<f64>> {
        self.0.lock().ok()?.get(key).cloned()
    }

    fn put(&self, key: [u8; 32], prior: Vec<f64>) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= PRIORS {
                map.clear();
            }
            map.insert(key, prior);
        }
    }

    /// Priors cached now.
    pub fn len(&self) -> usize {
        self.0.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl EmbeddedTier {
    /// The request's label answered by `estimator` when it is one that scores labels and the
    /// prompt lists a label set (`prepared.labels`); `None` otherwise (the answer is decoded
    /// and judged as it always is).
    pub(crate) async fn scored(
        &self,
        gateway: &Gateway,
        req: &ChatRequest,
        prepared: &Prepared,
        estimator: Estimator,
    ) -> Option<Result<Held, ApiError>> {
        let method = match estimator {
            Estimator::Debiased => Method::Debiased,
            Estimator::Permuted => Method::Permuted,
            _ => return None,
        };
        let labels = prepared.labels.as_ref()?;
        // A label longer than the scorer takes (256 tokens; a token is at least a byte) is
        // decoded instead.
        if prepared.plan.n > 1
            || labels.is_empty()
            || labels.iter().any(|l| l.len() > MAX_SCORED_LABEL_BYTES)
        {
            return None;
        }
        Some(
            self.score_labels(gateway, req, prepared, labels, method)
                .await,
        )
    }

    async fn score_labels(
        &self,
        gateway: &Gateway,
        req: &ChatRequest,
        prepared: &Prepared,
        labels: &[String],
        method: Method,
    ) -> Result<Held, ApiError> {
        let mut ticket = admit(gateway)?;
        let work = async {
            match method {
                Method::Permuted => self.permuted(gateway, req, prepared, labels).await,
                _ => {
                    let p = self.distribution(prepared.prompt.clone(), labels).await?;
                    let prior = self.prior(gateway, &prepared.plan, labels).await?;
                    Ok(confidence::debias(&p, &prior))
                }
            }
        };
        let q = tokio::time::timeout_at(ticket.deadline, work)
            .await
            .map_err(|_| ApiError::Timeout(answer::timeout_message(&ticket)))??;
        let tokens = u32::try_from(prepared.prompt.len()).unwrap_or(u32::MAX);
        ticket.started(tokens);
        ticket.done(0, 0);
        let (best, c) = confidence::of_distribution(&q, method);
        let label = labels.get(best).cloned().unwrap_or_default();
        Ok(self.read_label(label, tokens, c))
    }

    /// The labels' distribution after `prompt`, normalized over the labels.
    async fn distribution(&self, prompt: Prompt, labels: &[String]) -> Result<Vec<f64>, ApiError> {
        let scores = self
            .engine
            .score(prompt, labels.to_vec())
            .await
            .map_err(ApiError::from)?;
        Ok(confidence::normalized(&scores))
    }

    /// The model's prior over `labels` for this prompt with no content: the mean of its
    /// distributions with the last user message replaced by each [`CONTENT_FREE`] text.
    /// Estimated once per prompt shape and label set, then cached.
    async fn prior(
        &self,
        gateway: &Gateway,
        plan: &Plan,
        labels: &[String],
    ) -> Result<Vec<f64>, ApiError> {
        // The twins list the labels as the prompt does, even where only the user message
        // named them (that message is the one replaced).
        let twins: Vec<Vec<ChatMessage>> = CONTENT_FREE
            .iter()
            .map(|text| {
                let mut twin = content_free(&plan.messages, text);
                list_labels(&mut twin, labels);
                twin
            })
            .collect();
        let key = prior_key(&twins[0], &plan.structure.tools, labels);
        if let Some(prior) = self.priors.get(&key) {
            return Ok(prior);
        }
        let mut each = Vec::with_capacity(twins.len());
        for messages in twins {
            let prompt = self
                .render_messages(gateway, messages, plan.structure.tools.clone())
                .await?;
            each.push(self.distribution(prompt, labels).await?);
        }
        let prior = confidence::mean(&each);
        self.priors.put(key, prior.clone());
        Ok(prior)
    }

    /// The labels' distribution averaged over cyclic shifts of the order they are listed in
    /// (every shift for up to [`MAX_PERMUTED_LABELS`] labels, that many evenly spaced for
    /// more). Labels the client's own messages list are in the client's order: one prompt.
    async fn permuted(
        &self,
        gateway: &Gateway,
        req: &ChatRequest,
        prepared: &Prepared,
        labels: &[String],
    ) -> Result<Vec<f64>, ApiError> {
        let info = self.engine.info();
        let bare = convert::plan(req, info.n_vocab, &info.sampling)?;
        let mut listed = bare.messages.clone();
        list_labels(&mut listed, labels);
        if listed == bare.messages {
            return self.distribution(prepared.prompt.clone(), labels).await;
        }
        let k = labels.len();
        let shifts = k.min(MAX_PERMUTED_LABELS);
        let mut each = vec![self.distribution(prepared.prompt.clone(), labels).await?];
        for i in 1..shifts {
            let shift = i * k / shifts;
            let mut order = labels.to_vec();
            order.rotate_left(shift);
            let mut messages = bare.messages.clone();
            list_labels(&mut messages, &order);
            let prompt = self
                .render_messages(gateway, messages, bare.structure.tools.clone())
                .await?;
            each.push(self.distribution(prompt, labels).await?);
        }
        Ok(confidence::mean(&each))
    }
}

/// The cache key of a prior: what the twins' prompts are made of, length-prefixed.
fn prior_key(messages: &[ChatMessage], tools: &[serde_json::Value], labels: &[String]) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    for m in messages {
        part(m.role.as_bytes());
        part(m.content.as_bytes());
        part(m.tool_call_id.as_deref().unwrap_or("").as_bytes());
        part(
            serde_json::to_string(&m.tool_calls)
                .unwrap_or_default()
                .as_bytes(),
        );
    }
    part(serde_json::to_string(&tools).unwrap_or_default().as_bytes());
    for l in labels {
        part(l.as_bytes());
    }
    h.finalize().into()
}

/// `messages` with the last user message's text replaced by `text` (a new user message at
/// the end when there is none).
fn content_free(messages: &[ChatMessage], text: &str) -> Vec<ChatMessage> {
    let mut out = messages.to_vec();
    match out.iter_mut().rev().find(|m| m.role == "user") {
        Some(m) => m.content = text.to_string(),
        None => out.push(ChatMessage {
            role: "user".into(),
            content: text.to_string(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }),
    }
    out
}
