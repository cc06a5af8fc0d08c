//! A tier's fallback chain. A remote tier retries what it can ([`RemoteTier::chat`]); when it
//! still fails in a way another tier may not, the request goes on to the tier's fallback, and
//! so on, ending at the embedded tier if the chain leads there and may. Each failed tier is
//! recorded in the outcome.

use std::sync::Arc;

use bytes::Bytes;
use smallfirst_router::config::WhenExceeded;
use smallfirst_router::{Answer, BackendError, RemoteTier};

use crate::ApiError;

use crate::gateway::{Failover, Failure, Gateway, Hop, Outcome, Reply, Request};

/// How far down a fallback chain a request may go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chain {
    /// Stop before any tier that is not on this machine.
    pub on_machine_only: bool,
    /// Whether the chain may end at the embedded tier. An escalation may not: the embedded
    /// answer it escalates from already exists and stands if the chain fails.
    pub embedded: bool,
}

/// What a tier is sent.
pub(crate) enum Payload<'a> {
    /// An OpenAI chat completion body.
    Chat(&'a Bytes),
    /// The ingress's own body, for a tier that speaks its protocol (pass-through); tiers that
    /// do not are sent `chat`.
    Native { chat: &'a Bytes },
}

impl Gateway {
    /// `req` answered by the remote tier `first`, then down its fallback chain; `outcome` gets
    /// the tier that answered (or failed last) and the failures on the way.
    pub(crate) async fn walk(
        &self,
        first: &Arc<RemoteTier>,
        req: &Request,
        payload: Payload<'_>,
        chain: Chain,
        outcome: &mut Outcome,
    ) -> Result<Reply, Failure> {
        let mut tier = Arc::clone(first);
        loop {
            if let Some(spent) = self.budget_for(&tier, req, outcome) {
                return self.kept_from(spent, req, chain, outcome).await;
            }
            outcome.tier = Some(tier.name().to_string());
            let e = match self.send(&tier, req, &payload).await {
                Ok(reply) => return Ok(reply),
                Err(e) => e,
            };
            let next = e
                .fails_over()
                .then(|| tier.fallback())
                .flatten()
                .filter(|n| !chain.on_machine_only || self.on_machine(n))
                .and_then(|n| self.hop(n));
            let Some(next) = next else {
                return Err(Failure::Tier(e));
            };
            tracing::warn!(tier = %tier.name(), error = %e, "failing over");
            let failed = Failover {
                tier: tier.name().to_string(),
                code: e.code(),
            };
            match next {
                Hop::Embedded(local) => {
                    if !chain.embedded {
                        return Err(Failure::Tier(e));
                    }
                    outcome.failover.push(failed);
                    outcome.tier = Some(local.name.clone());
                    return Box::pin(self.embedded_answer(local, req)).await;
                }
                Hop::Remote(t) => {
                    outcome.failover.push(failed);
                    tier = Arc::clone(t);
                }
            }
        }
    }

    /// The spent budget that keeps `req` from `tier`, if one does.
    fn budget_for(
        &self,
        tier: &RemoteTier,
        req: &Request,
        outcome: &Outcome,
    ) -> Option<crate::budget::Exhausted> {
        let task = outcome
            .task
            .as_ref()
            .map(|(t, _)| t.as_str())
            .or(req.task.as_deref());
        self.over_budget(tier.name(), task, req.key.as_deref())
    }

    /// A request a spent budget keeps from a tier: answered by the embedded tier when the
    /// budget says so and the chain may end there, else refused (429 `budget_exceeded`). An
    /// escalation is never answered here: its caller keeps the answer it escalated from.
    async fn kept_from(
        &self,
        spent: crate::budget::Exhausted,
        req: &Request,
        chain: Chain,
        outcome: &mut Outcome,
    ) -> Result<Reply, Failure> {
        tracing::info!(tier = %spent.tier, budget = %spent.scope, "budget spent");
        let refusal = spent.refusal();
        let local = self
            .embedded
            .as_ref()
            .filter(|_| spent.when == WhenExceeded::Local);
        outcome.reason = spent.reason();
        outcome.budget = Some(spent);
        match local {
            Some(local) if chain.embedded => {
                outcome.tier = Some(local.name.clone());
                Box::pin(self.embedded_answer(local, req)).await
            }
            // The caller's answer stands.
            Some(_) => Err(Failure::Request(ApiError::Internal(
                "kept from the tier by a budget".into(),
            ))),
            None => Err(Failure::Request(refusal)),
        }
    }

    /// One tier's answer (with its own retries): passed through untouched when the tier speaks
    /// the ingress's protocol, else as an OpenAI chat completion.
    async fn send(
        &self,
        tier: &RemoteTier,
        req: &Request,
        payload: &Payload<'_>,
    ) -> Result<Reply, BackendError> {
        let chat = match payload {
            Payload::Chat(body) => body,
            Payload::Native { chat } => {
                if let Some(native) = &req.native
                    && tier.speaks(native.protocol)
                {
                    return tier.pass(native).await.map(Reply::Native);
                }
                chat
            }
        };
        tier.chat(chat).await.map(|answer| match answer {
            Answer::Json(bytes) => Reply::Json(bytes),
            Answer::Stream(s) => Reply::Stream(s),
        })
    }
}
