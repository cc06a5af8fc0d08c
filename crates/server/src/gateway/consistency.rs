//! Self-consistency (Wang et al. 2023) as a confidence: `n` answers sampled from one prefill,
//! the most common one sent, the share that agree with it the confidence. Answers compare as
//! their kind says: labels and tool calls exactly, JSON by the mode's fields, free text after
//! case folding and collapsing whitespace.

use smallfirst_protocol::ChatRequest;
use smallfirst_router::confidence::{self, Compare};

use crate::ApiError;
use crate::gateway::Gateway;
use crate::gateway::embedded::{AnswerKind, EmbeddedTier, Held, Prepared};

/// The temperature samples are drawn at when the request does not set one: greedy samples
/// would all agree.
pub(super) const SAMPLE_TEMPERATURE: f32 = 0.7;

impl EmbeddedTier {
    /// `samples` answers from one prefill; the mode, judged by the agreement with it. A
    /// request that sets `temperature` samples at it (0 is greedy: every sample agrees).
    pub(crate) async fn consistent(
        &self,
        gateway: &Gateway,
        req: &ChatRequest,
        mut prepared: Prepared,
        samples: u8,
    ) -> Result<Held, ApiError> {
        if prepared.plan.n > 1 {
            return Err(ApiError::unsupported(
                "n",
                "`n` > 1 is not supported on a route whose answer is judged before it is sent",
            ));
        }
        if req.temperature.is_none() {
            prepared.plan.params.sampling.temperature = SAMPLE_TEMPERATURE;
        }
        let json = req.response_format.is_some();
        let mut all = self
            .held_n(gateway, req, prepared, usize::from(samples.max(1)))
            .await?;
        let texts: Vec<String> = all.iter().map(answer_text).collect();
        let compare = match all.first().map(|h| h.kind) {
            Some(AnswerKind::Choice) if !json => Compare::Exact,
            Some(AnswerKind::Tools) => Compare::Exact,
            _ if json => Compare::JsonFields,
            _ => Compare::Text,
        };
        let (mode, c) = confidence::agreement(&texts, compare);
        let completion_tokens: u32 = all
            .iter()
            .map(|h| h.completion.usage.completion_tokens)
            .sum();
        let mut held = all.swap_remove(mode.min(all.len() - 1));
        // A closed answer cut short by the budget is not what it claims to be, however many
        // samples were cut the same way.
        let cut = held
            .completion
            .choices
            .first()
            .is_some_and(|c| c.finish_reason == smallfirst_protocol::FinishReason::Length);
        let c = if cut && (held.constrained || held.kind == AnswerKind::Choice) {
            confidence::Confidence { value: 0.0, ..c }
        } else {
            c
        };
        // Every sample was generated: the usage counts them all.
        held.completion.usage.completion_tokens = completion_tokens;
        held.completion.usage.total_tokens =
            held.completion.usage.prompt_tokens + completion_tokens;
        held.judged = Some(c);
        Ok(held)
    }
}

/// What a held answer says, for comparing: its calls written out when it made any, else its
/// text.
fn answer_text(h: &Held) -> String {
    let Some(choice) = h.completion.choices.first() else {
        return String::new();
    };
    if let Some(calls) = &choice.message.tool_calls
        && !calls.is_empty()
    {
        return calls
            .iter()
            .map(|c| {
                let args = serde_json::from_str::<serde_json::Value>(&c.function.arguments)
                    .map_or_else(|_| c.function.arguments.clone(), |v| v.to_string());
                format!("{}({args})", c.function.name)
            })
            .collect::<Vec<_>>()
            .join(";");
    }
    choice.message.content.clone().unwrap_or_default()
}
