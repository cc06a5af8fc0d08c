//! A decoded local answer judged by its task's verifier (`[tasks.NAME] verifier`): the
//! verifier reads the request's last user message, the answer, and the confidence the answer's
//! own estimator gave it, and its calibrated probability that the answer is right becomes the
//! confidence the cascade judges.

use smallfirst_heads::Head;
use smallfirst_heads::verifier::Candidate;
use smallfirst_protocol::{ChatCompletion, ChatRequest, FinishReason};
use smallfirst_router::confidence::{Confidence, Method};

use crate::answer;
use crate::gateway::Gateway;
use crate::gateway::embedded::{EmbeddedTier, Held, admit, last_user_text};

impl EmbeddedTier {
    /// `c` replaced by `verifier`'s judgement of `held`. When the verifier cannot read the
    /// answer (no user text, the queue full, the deadline passed, an engine error), `c`
    /// stands, and its method says so.
    pub(crate) async fn verified(
        &self,
        gateway: &Gateway,
        verifier: &Head,
        req: &ChatRequest,
        held: &Held,
        c: Confidence,
    ) -> Confidence {
        let Some(input) = last_user_text(req) else {
            return c;
        };
        if verifier
            .judges
            .as_deref()
            .is_some_and(|m| m != c.method.as_str())
        {
            // Trained on another estimator's confidence (a request named its own method).
            return c;
        }
        let choice = held.completion.choices.first();
        let answer = answer_text(&held.completion);
        let candidate = Candidate {
            input: &input,
            answer: &answer,
            confidence: c.value,
            margin: c.margin,
            cut: choice.is_some_and(|c| c.finish_reason == FinishReason::Length),
        };
        let ticket = match admit(gateway) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "verifier skipped");
                return c;
            }
        };
        let judged =
            tokio::time::timeout_at(ticket.deadline, verifier.verify(&self.engine, &candidate))
                .await;
        match judged {
            Ok(Ok(p)) => Confidence {
                value: p,
                method: Method::Verifier,
                margin: None,
            },
            Ok(Err(e)) => {
                tracing::warn!(task = %verifier.task, error = %e, "verifier failed; the answer's own confidence stands");
                c
            }
            Err(_) => {
                tracing::warn!(task = %verifier.task, "{}", answer::timeout_message(&ticket));
                c
            }
        }
    }
}

/// The answer as a verifier reads it, in training and in serving alike: the first choice's
/// text, or its tool calls (`name(arguments)` a line, their ids left out: they are random)
/// when it has no text.
pub fn answer_text(completion: &ChatCompletion) -> String {
    let Some(choice) = completion.choices.first() else {
        return String::new();
    };
    match (&choice.message.content, &choice.message.tool_calls) {
        (Some(t), _) if !t.is_empty() => t.clone(),
        (_, Some(calls)) if !calls.is_empty() => calls
            .iter()
            .map(|c| format!("{}({})", c.function.name, c.function.arguments))
            .collect::<Vec<_>>()
            .join("\n"),
        (t, _) => t.clone().unwrap_or_default(),
    }
}
