//! A decided route run: its first tier answers; an embedded answer on a route with a
//! threshold (or a label set) is held until its confidence is known, and escalated down the
//! route's tiers when it is below the threshold. The local answer stands when escalation
//! fails, unless a local-only route says to refuse instead.

use bytes::Bytes;
use serde_json::Value;
use smallfirst_router::confidence::{self, Confidence, Estimator, Method, Step};
use smallfirst_router::policy::LowConfidence;
use smallfirst_router::{Reason, Route};

use crate::ApiError;
use crate::gateway::embedded::{AnswerKind, EmbeddedTier, Held, Prepared};
use crate::gateway::{Chain, Failure, Gateway, Hop, Label, Outcome, Reply, Request, payload};

impl Gateway {
    pub(crate) async fn run(
        &self,
        req: &Request,
        route: &Route,
        prepared: Option<Prepared>,
        task: (String, smallfirst_router::features::TaskSource),
    ) -> Outcome {
        let mut outcome = Outcome::new(route.reason.clone());
        outcome.task = Some(task);
        let first = route.tiers[0].as_str();
        let local = match self.hop(first) {
            Some(Hop::Embedded(local)) => local,
            Some(Hop::Remote(tier)) => {
                // A remote tier first: its own failover chain, kept on this machine for a
                // local-only request.
                let chain = Chain {
                    on_machine_only: route.local_only,
                    embedded: true,
                };
                let body = onward(req);
                outcome.answer = self
                    .walk(tier, req, payload(req, &body), chain, &mut outcome)
                    .await;
                return outcome;
            }
            None => {
                outcome.answer = Err(ApiError::Internal(format!(
                    "the route names tier `{first}`, which is not served"
                ))
                .into());
                return outcome;
            }
        };
        outcome.tier = Some(local.name.clone());
        // A task with a head answers its classifications from it, without decoding.
        let head = route.head.as_ref().and_then(|t| local.heads.get(t));
        let by_head = match head {
            Some(h) => local.by_head(self, &req.chat, h).await,
            None => None,
        };
        let held = match by_head {
            Some(held) => held,
            None => {
                // The prompt rendered for the features is this route's, unless the route's
                // labels are not the ones it listed; a request it failed for fails the same
                // way now, with its error.
                let labels = route.labels.as_deref();
                let prepared = match prepared {
                    Some(p) if p.is_for(labels) => Ok(p),
                    _ => local.prepare(self, &req.chat, labels).await,
                };
                if route.threshold.is_none()
                    && route.labels.is_none()
                    && route.estimator.is_none()
                    && route.verifier.is_none()
                {
                    outcome.answer = match prepared {
                        Ok(p) => local.answer(self, p).await.map_err(Failure::from),
                        Err(e) => Err(e.into()),
                    };
                    return outcome;
                }
                match prepared {
                    Ok(p) => self.judged(local, req, route, p).await,
                    Err(e) => Err(e),
                }
            }
        };
        let held = match held {
            Ok(h) => h,
            // The embedded tier could not answer (a prompt grown too long with its labels, a
            // grammar that does not compile): the next tier can, if there is one.
            Err(e) if route.tiers.len() > 1 => {
                let reason = Reason {
                    code: "local_failed".into(),
                    words: format!("the local tier failed: {e}"),
                };
                if self.escalate(req, route, reason, &mut outcome).await {
                    return outcome;
                }
                outcome.tier = Some(local.name.clone());
                outcome.answer = Err(e.into());
                return outcome;
            }
            Err(e) => {
                outcome.answer = Err(e.into());
                return outcome;
            }
        };
        let mut c = judge(&held);
        // A decoded answer is judged again by its task's verifier, when it has one.
        let verifier = route.verifier.as_ref().and_then(|t| local.verifiers.get(t));
        if let Some(v) = verifier.filter(|_| c.method != Method::Head) {
            c = local.verified(self, v, &req.chat, &held, c).await;
        }
        outcome.confidence = Some(c);
        let low = route.threshold.filter(|&t| c.value < t);
        if let Some(threshold) = low {
            let code = format!("low_confidence {:.2}<{threshold:.2}", c.value);
            let words = format!(
                "the local answer's {} was {:.3}, below {threshold}",
                c.method.as_str(),
                c.value
            );
            let escalation = Reason {
                code: code.clone(),
                words,
            };
            if self.escalate(req, route, escalation, &mut outcome).await {
                return outcome;
            }
            outcome.tier = Some(local.name.clone());
            if route.local_only && route.low_confidence == LowConfidence::Refuse {
                outcome.answer = Err(ApiError::InvalidRequest {
                    message: format!(
                        "the local answer's confidence {:.3} is below the threshold {threshold}, and this local-only request may not be escalated",
                        c.value
                    ),
                    param: None,
                    code: Some("low_confidence"),
                }
                .into());
                return outcome;
            }
            let words = if route.tiers.len() > 1 {
                "below the threshold; escalation failed, so the local answer stands"
            } else if route.local_only {
                "below the threshold; local-only, so the local answer stands"
            } else {
                "below the threshold; no tier to escalate to"
            };
            outcome.reason = match &outcome.budget {
                Some(b) => b.reason(),
                None => Reason {
                    code,
                    words: words.into(),
                },
            };
        }
        let content = held.completion.choices[0].message.content.as_deref();
        let label = match c.method {
            Method::Head | Method::Debiased | Method::Permuted => content.map(str::to_string),
            Method::Label => label_of(content),
            Method::SelfConsistency | Method::Verifier if held.kind == AnswerKind::Choice => {
                label_of(content)
            }
            _ => None,
        };
        if let Some(label) = label {
            outcome.label = Some(Label {
                label,
                probability: c.value,
                margin: c.margin,
            });
        }
        outcome.answer = Ok(Reply::Completion(Box::new(held.completion)));
        outcome
    }

    /// The embedded answer held whole and judged by the route's estimator: labels scored in
    /// one pass (debiased or permuted) when the prompt lists a label set, sampled answers'
    /// agreement, or the decode's own probabilities.
    async fn judged(
        &self,
        local: &EmbeddedTier,
        req: &Request,
        route: &Route,
        prepared: Prepared,
    ) -> Result<Held, ApiError> {
        match route.estimator {
            Some(e @ (Estimator::Debiased | Estimator::Permuted)) => {
                match local.scored(self, &req.chat, &prepared, e).await {
                    Some(held) => held,
                    None => local.held(self, &req.chat, prepared).await,
                }
            }
            Some(Estimator::SelfConsistency { samples }) => {
                local.consistent(self, &req.chat, prepared, samples).await
            }
            _ => local.held(self, &req.chat, prepared).await,
        }
    }

    /// The request sent down the route's escalation tiers in turn; whether one answered (the
    /// outcome then holds its answer). Never to the embedded tier.
    async fn escalate(
        &self,
        req: &Request,
        route: &Route,
        reason: Reason,
        outcome: &mut Outcome,
    ) -> bool {
        let body = onward(req);
        let chain = Chain {
            on_machine_only: route.local_only,
            embedded: false,
        };
        for next in &route.tiers[1..] {
            let Some(Hop::Remote(tier)) = self.hop(next) else {
                continue;
            };
            match self
                .walk(tier, req, payload(req, &body), chain, outcome)
                .await
            {
                Ok(reply) => {
                    outcome.answer = Ok(reply);
                    outcome.reason = reason;
                    outcome.escalated = true;
                    outcome.escalated_from = route.tiers.first().cloned();
                    return true;
                }
                // A spent budget that refuses: the request is refused, whatever stands here.
                Err(e @ Failure::Request(ApiError::OverBudget { .. })) => {
                    outcome.answer = Err(e);
                    return true;
                }
                // A spent budget that sends requests here: the local answer stands, unless a
                // later tier is not held back.
                Err(_) if outcome.budget.is_some() => {}
                Err(e) => {
                    // The chain's last tier failed with `e` (the walk recorded those before it).
                    let failed = outcome.tier.clone().unwrap_or_else(|| next.clone());
                    tracing::warn!(tier = %failed, error = %e, "escalation failed");
                    let code = match &e {
                        Failure::Tier(e) => e.code(),
                        Failure::Request(_) => "local_failed",
                    };
                    outcome
                        .failover
                        .push(crate::gateway::Failover { tier: failed, code });
                }
            }
        }
        false
    }
}

/// What a request's metadata says to this server only: removed before it goes on, since
/// OpenAI takes only string metadata values (`labels` is a list, `samples` may be a number).
const OWN_METADATA: [&str; 3] = ["labels", "confidence", "samples"];

/// The body sent on to another tier: the request as the client sent it, less the metadata
/// that is this server's ([`OWN_METADATA`]).
fn onward(req: &Request) -> Bytes {
    let own = req
        .chat
        .metadata
        .as_ref()
        .is_some_and(|m| OWN_METADATA.iter().any(|k| m.get(k).is_some()));
    if !own {
        return req.raw.clone();
    }
    let mut chat = req.chat.clone();
    if let Some(meta) = &mut chat.metadata {
        for k in OWN_METADATA {
            meta.value.remove(k);
        }
        if meta.value.is_empty() {
            chat.metadata = None;
        }
    }
    serde_json::to_vec(&chat).map_or_else(|_| req.raw.clone(), Bytes::from)
}

/// How sure the held answer is, read the way its constraint allows. A label, a structure or
/// a call cut short (or steered closed) by the token budget is not what it claims to be:
/// confidence 0.
fn judge(held: &Held) -> Confidence {
    if let Some(c) = held.judged {
        return c;
    }
    let cut = held
        .completion
        .choices
        .first()
        .is_some_and(|c| c.finish_reason == smallfirst_protocol::FinishReason::Length);
    if cut && (held.constrained || held.kind == AnswerKind::Choice) {
        return Confidence {
            value: 0.0,
            method: match held.kind {
                AnswerKind::Choice => Method::Label,
                AnswerKind::Tools => Method::ToolChoice,
                AnswerKind::Text => Method::TokenProb,
            },
            margin: None,
        };
    }
    let steps: Vec<Step> = held
        .trace
        .iter()
        .map(|s| Step {
            offset: s.offset,
            p: f64::from(s.p),
            runner_up: f64::from(s.runner_up),
        })
        .collect();
    match held.kind {
        AnswerKind::Choice => confidence::of_choice(&steps, Method::Label),
        AnswerKind::Tools => confidence::of_tool_calls(&held.raw_text, &steps),
        AnswerKind::Text => confidence::of_text(&steps),
    }
}

/// The chosen label: the answer itself, or the value of an enum-only JSON answer's one member.
fn label_of(content: Option<&str>) -> Option<String> {
    let text = content?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) if map.len() == 1 => map.values().next().map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        Ok(Value::String(s)) => Some(s),
        _ => Some(text.to_string()),
    }
}
