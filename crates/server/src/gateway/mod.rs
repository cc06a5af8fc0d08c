//! The core: every request, whatever its ingress, is answered here. A [`Gateway`] holds the
//! tiers (the [`EmbeddedTier`] and the remote ones), the policy, and the engine's admission;
//! [`Gateway::complete`] takes a [`Request`] parsed once by an ingress and returns an
//! [`Outcome`]: the answer, or why there is none, with every fact of how it came to be.
//! Nothing here speaks HTTP; ingress modules render the outcome.
//!
//! - A request whose `model` names a tier goes to it, and down its fallback chain (`chain`).
//! - `model: "auto"` (and the policy's aliases) is routed by the policy from the request's
//!   features; an embedded answer on a route with a threshold is held, judged (`cascade`),
//!   and escalated below it.

mod cascade;
mod chain;
mod consistency;
pub(crate) mod embedded;
mod outcome;
pub(crate) mod scored;
mod verified;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;
use smallfirst_protocol::ChatRequest;
use smallfirst_router::features::{self, Hints};
use smallfirst_router::{Native, Policy, Privacy, Reason, RemoteTier};

use crate::ApiError;
use crate::budget::Budgets;
use crate::metrics::Metrics;

pub(crate) use chain::{Chain, Payload};
pub use embedded::EmbeddedTier;
pub use outcome::{Failover, Failure, Label, Outcome, Reply, Timings};
pub use verified::answer_text;

/// A request as the core takes it: parsed once, with what the client said besides.
pub struct Request {
    /// The request as an OpenAI chat completion.
    pub chat: ChatRequest,
    /// `chat` as JSON bytes: the body as the client sent it when it came as a chat completion
    /// (passed through to OpenAI-compatible tiers untouched).
    pub raw: Bytes,
    /// The body in the ingress's own protocol, for tiers that speak it.
    pub native: Option<Native>,
    /// The request's privacy hints, combined to fail closed.
    pub privacy: Privacy,
    /// `x-smallfirst-task`, when sent.
    pub task: Option<String>,
    /// The name of the API key the request came with, for budgets.
    pub key: Option<String>,
    /// Answer on this tier alone, as the route decided for the request would run there (its
    /// labels, head, estimator and verifier), judged but never escalated: how `eval`
    /// measures one tier through the production path. `None` for every client request.
    pub only: Option<String>,
}

/// Every tier, the policy, and the embedded engine's admission.
pub struct Gateway {
    pub(crate) embedded: Option<EmbeddedTier>,
    pub(crate) remotes: Vec<Arc<RemoteTier>>,
    pub(crate) policy: Policy,
    pub(crate) metrics: Arc<Metrics>,
    /// Chat template renders running at once: each may build up to 64 MiB, so they are not
    /// left to the number of connections.
    pub(crate) renders: tokio::sync::Semaphore,
    /// `[budgets]`, once set.
    pub(crate) budgets: std::sync::OnceLock<Arc<Budgets>>,
}

/// A tier a request can be sent to.
pub(crate) enum Hop<'a> {
    Embedded(&'a EmbeddedTier),
    Remote(&'a Arc<RemoteTier>),
}

impl Gateway {
    pub fn new(
        embedded: Option<EmbeddedTier>,
        remotes: Vec<RemoteTier>,
        policy: Policy,
        metrics: Arc<Metrics>,
    ) -> Self {
        Gateway {
            embedded,
            remotes: remotes.into_iter().map(Arc::new).collect(),
            policy,
            metrics,
            renders: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
            ),
            budgets: std::sync::OnceLock::new(),
        }
    }

    /// Holds requests to `budgets` from now on; a second call changes nothing and says so.
    pub fn set_budgets(&self, budgets: Arc<Budgets>) -> bool {
        self.budgets.set(budgets).is_ok()
    }

    /// The budget a request of `task` with `key` would spend on `tier`, when it is spent.
    pub(crate) fn over_budget(
        &self,
        tier: &str,
        task: Option<&str>,
        key: Option<&str>,
    ) -> Option<crate::budget::Exhausted> {
        self.budgets.get()?.exhausted(tier, task, key)
    }

    pub fn embedded(&self) -> Option<&EmbeddedTier> {
        self.embedded.as_ref()
    }

    pub fn remotes(&self) -> &[Arc<RemoteTier>] {
        &self.remotes
    }

    /// The tier named `name`.
    pub(crate) fn hop(&self, name: &str) -> Option<Hop<'_>> {
        if let Some(e) = self.embedded.as_ref().filter(|e| e.name == name) {
            return Some(Hop::Embedded(e));
        }
        self.remotes
            .iter()
            .find(|t| t.name() == name)
            .map(Hop::Remote)
    }

    /// Whether tier `name` runs on this machine.
    pub(crate) fn on_machine(&self, name: &str) -> bool {
        match self.hop(name) {
            Some(Hop::Embedded(_)) => true,
            Some(Hop::Remote(t)) => t.on_machine(),
            None => false,
        }
    }

    /// The tier a request's `model` names: the embedded tier's own names win, then a remote
    /// tier's name or model.
    pub(crate) fn named(&self, model: &str) -> Option<Hop<'_>> {
        if let Some(e) = self.embedded.as_ref().filter(|e| e.answers_to(model)) {
            return Some(Hop::Embedded(e));
        }
        self.remotes
            .iter()
            .find(|t| t.name() == model || t.model() == model)
            .map(Hop::Remote)
    }

    /// The tier for a request in an OpenAI API other than chat (`protocol`: completions,
    /// embeddings), which has no chat equivalent to cascade or translate: the tier `model`
    /// names, or for `auto` the embedded tier, else the first remote tier that offers the API
    /// and that the request may reach. Local-only (the request's privacy, or its task's
    /// `privacy = "local-only"`) keeps it on the machine, failing closed. Refused with the tier
    /// it was refused at, when there was one.
    pub(crate) fn other_api(
        &self,
        model: &str,
        privacy: Privacy,
        (task, key): (Option<&str>, Option<&str>),
        protocol: smallfirst_router::Protocol,
    ) -> Result<(Hop<'_>, Reason), (ApiError, Option<String>)> {
        let local_only = privacy.local_only()
            || task
                .and_then(|t| self.policy.task(t))
                .is_some_and(|t| t.local_only);
        let (hop, reason) = if self.decides_for(model) {
            let hop = match &self.embedded {
                Some(e) => Some(Hop::Embedded(e)),
                None => self
                    .remotes
                    .iter()
                    .find(|t| t.speaks(protocol) && (t.on_machine() || !local_only))
                    .map(Hop::Remote),
            };
            let reason = Reason {
                code: format!("model={model}"),
                words: "the embedded tier, else the first tier that offers this API".into(),
            };
            (hop, reason)
        } else {
            let reason = Reason {
                code: format!("model={model}"),
                words: "the request named this tier".into(),
            };
            (self.named(model), reason)
        };
        let Some(hop) = hop else {
            return Err((ApiError::ModelNotFound(model.to_string()), None));
        };
        if let Hop::Remote(tier) = hop {
            let name = tier.name().to_string();
            if local_only && !tier.on_machine() {
                return Err((local_only_refusal(&name), Some(name)));
            }
            if !tier.speaks(protocol) {
                let e = ApiError::unsupported(
                    "model",
                    format!(
                        "tier `{name}` does not offer this API; only OpenAI-compatible tiers do"
                    ),
                );
                return Err((e, Some(name)));
            }
            // A spent budget: the embedded tier instead, when the budget says so.
            if let Some(spent) = self.over_budget(&name, task, key) {
                return match (&self.embedded, spent.when) {
                    (Some(local), smallfirst_router::config::WhenExceeded::Local) => {
                        Ok((Hop::Embedded(local), spent.reason()))
                    }
                    _ => Err((spent.refusal(), Some(name))),
                };
            }
        }
        Ok((hop, reason))
    }

    /// Whether the policy decides where `model` goes (`auto` and its aliases).
    pub fn decides_for(&self, model: &str) -> bool {
        self.policy.decides_for(model)
    }

    /// `req` answered: on the tier its `model` names, or where the policy routes it.
    pub async fn complete(&self, req: Request) -> Outcome {
        // Boxed: the routed path's future is large (features, the cascade, the embedded
        // answer), and a request named for a remote tier should not carry it.
        if self.policy.decides_for(&req.chat.model) {
            return Box::pin(self.auto(&req)).await;
        }
        let model = req.chat.model.as_str();
        let mut outcome = Outcome::new(Reason {
            code: format!("model={model}"),
            words: "the request named this tier".into(),
        });
        // Refused before any tier: the reason says so, as for a request that did not parse.
        let Some(hop) = self.named(model) else {
            return Outcome::refused(ApiError::ModelNotFound(model.to_string()), "rejected");
        };
        outcome.answer = match hop {
            Hop::Embedded(local) => {
                outcome.tier = Some(local.name.clone());
                Box::pin(self.embedded_answer(local, &req)).await
            }
            Hop::Remote(tier) if req.privacy.local_only() && !tier.on_machine() => {
                return Outcome::refused(local_only_refusal(tier.name()), "rejected");
            }
            Hop::Remote(tier) => {
                let chain = Chain {
                    on_machine_only: req.privacy.local_only(),
                    embedded: true,
                };
                self.walk(tier, &req, payload(&req, &req.raw), chain, &mut outcome)
                    .await
            }
        };
        outcome.usage = outcome::usage_of(&outcome.answer);
        outcome
    }

    /// The tokens `chat`'s prompt takes on the embedded model; estimated without one.
    pub async fn count_tokens(&self, chat: &ChatRequest) -> Result<u32, ApiError> {
        match &self.embedded {
            Some(local) => Ok(local.prepare(self, chat, None).await?.prompt.len() as u32),
            None => Ok(features::estimate_tokens(
                &serde_json::to_value(chat).unwrap_or(Value::Null),
            )),
        }
    }

    /// `req` answered by the embedded tier as it asked (streamed or whole).
    pub(crate) async fn embedded_answer(
        &self,
        local: &EmbeddedTier,
        req: &Request,
    ) -> Result<Reply, Failure> {
        let prepared = local.prepare(self, &req.chat, None).await?;
        Ok(local.answer(self, prepared).await?)
    }

    /// `route` kept to `tier` alone: an embedded answer is still judged (a threshold of 0
    /// keeps every answer), and nothing escalates.
    fn only(&self, mut route: smallfirst_router::Route, tier: &str) -> smallfirst_router::Route {
        route.tiers = vec![tier.to_string()];
        route.threshold = match self.hop(tier) {
            Some(Hop::Embedded(_)) => Some(0.0),
            _ => None,
        };
        route.reason = Reason {
            code: format!("{} only={tier}", route.reason.code),
            words: format!("{}; kept to tier `{tier}`", route.reason.words),
        };
        route
    }

    /// `model: "auto"`: the features read (the prompt rendered and tokenized once, on the
    /// embedded model when there is one), the route decided, and the route run.
    async fn auto(&self, req: &Request) -> Outcome {
        let start = Instant::now();
        // The features read the request as JSON; it was parsed once already, so this is a
        // conversion of the typed value, not a second parse of the body.
        let value = serde_json::to_value(&req.chat).unwrap_or(Value::Null);
        let hints = Hints {
            task: req.task.as_deref(),
            privacy: req.privacy,
        };
        let mut features = features::extract(&value, hints, 0);
        if let Some(Err(e)) = &features.confidence {
            let param = if e.starts_with("`metadata.samples`") {
                "metadata.samples"
            } else {
                "metadata.confidence"
            };
            return Outcome::refused(ApiError::invalid(param, e.clone()), "rejected");
        }
        // The prompt is rendered as a label route would run it (its labels listed), so that its
        // tokens are counted once and the same prompt is generated from.
        let labels = features.labels.clone().or_else(|| {
            self.policy
                .task(&features.task)
                .and_then(|t| t.labels.clone())
        });
        let prepared = match &self.embedded {
            Some(local) => local.prepare(self, &req.chat, labels.as_deref()).await.ok(),
            None => None,
        };
        let estimate = || features::estimate_tokens(&value);
        features.input_tokens = match &prepared {
            Some(p) if p.prompt.fits() => p.prompt.len() as u32,
            Some(p) => (p.prompt.len() as u32).max(estimate()),
            None => estimate(),
        };
        let tokens = features.input_tokens;
        let decided = self.policy.decide(&features);
        let decide = start.elapsed();
        let mut outcome = match decided {
            Ok(mut route) => {
                if let Some(tier) = &req.only {
                    route = self.only(route, tier);
                }
                tracing::debug!(task = %features.task, tokens, route = ?route.tiers, reason = %route.reason.code, decide_us = decide.as_micros(), "route");
                let task = (features.task.clone(), features.task_source);
                self.run(req, &route, prepared, task).await
            }
            Err(e) => Outcome::refused(
                ApiError::InvalidRequest {
                    message: e.0,
                    param: None,
                    code: Some("no_route"),
                },
                "no_route",
            ),
        };
        outcome.task = Some((features.task, features.task_source));
        outcome.timings.decide = Some(decide);
        outcome.usage = outcome::usage_of(&outcome.answer);
        outcome
    }
}

/// What a remote tier is sent: the body as it came for a chat completion, or the ingress's
/// own body for a tier that speaks its protocol.
fn payload<'a>(req: &Request, chat: &'a Bytes) -> Payload<'a> {
    if req.native.is_some() {
        Payload::Native { chat }
    } else {
        Payload::Chat(chat)
    }
}

pub(crate) fn local_only_refusal(tier: &str) -> ApiError {
    ApiError::InvalidRequest {
        message: format!(
            "this request is local-only (`{}`), and tier `{tier}` is not on this machine",
            smallfirst_router::privacy::HEADER,
        ),
        param: Some("model".into()),
        code: Some("local_only"),
    }
}
