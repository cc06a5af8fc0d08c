//! [`EmbeddedTier`]: the in-process engine as a tier. A request is planned, rendered and
//! tokenized once ([`Prepared`]); the same prompt serves the policy's token count and the
//! generation. Answers stream as they are generated, or are held whole to be judged.

use std::collections::BTreeMap;
use std::sync::Arc;

use smallfirst_engine::{ChatMessage, Constraint, Engine, EngineError, Prompt, StepProb};
use smallfirst_heads::{Head, HeadError};
use smallfirst_protocol::chat::ContentPart;
use smallfirst_protocol::{ChatCompletion, ChatRequest, MessageContent, Role};
use smallfirst_router::confidence::{Confidence, Method};

use crate::ApiError;
use crate::answer::{self, Meta, Output};
use crate::convert::{self, Plan};
use crate::gateway::{Gateway, Reply};
use crate::metrics::Ticket;

/// The tier the embedded engine serves.
pub struct EmbeddedTier {
    pub engine: Engine,
    /// The id `/v1/models` lists and responses carry.
    pub model_id: String,
    /// The tier's name in the configuration (`local` without one).
    pub name: String,
    /// Task heads by task name, each checked against this model's file.
    pub heads: BTreeMap<String, Arc<Head>>,
    /// Task verifiers by task name, each checked against this model's file.
    pub verifiers: BTreeMap<String, Arc<Head>>,
    /// Content-free label priors for debiased confidence, estimated on first use.
    pub priors: crate::gateway::scored::Priors,
}

/// A request planned for the engine, its prompt rendered and tokenized.
pub(crate) struct Prepared {
    pub plan: Plan,
    pub prompt: Prompt,
    /// The labels listed to the model in the prompt, when it was prepared for a label set.
    pub labels: Option<Vec<String>>,
}

impl Prepared {
    /// Whether this prompt is the one a route with `labels` runs: the same labels listed, or
    /// none where the request's own format or tools constrain the answer instead.
    pub(crate) fn is_for(&self, labels: Option<&[String]>) -> bool {
        let wanted = labels.filter(|_| self.plan.params.constraint.is_none());
        self.labels.as_deref() == wanted
    }
}

/// A local answer held whole, to be judged before it is sent.
pub(crate) struct Held {
    pub completion: ChatCompletion,
    /// Each sampled token's probability and the runner-up's.
    pub trace: Vec<StepProb>,
    /// The generated text when it may hold tool calls (the completion shows them parsed).
    pub raw_text: String,
    /// How the answer was constrained, which says how to read its confidence.
    pub kind: AnswerKind,
    /// A grammar shaped the answer (a schema, tools, labels): cut by the budget, it is not
    /// the answer it claims to be.
    pub constrained: bool,
    /// Its confidence when it came with one (a head's), rather than read from the trace.
    pub judged: Option<Confidence>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnswerKind {
    /// One of a label set, or JSON whose every leaf is a closed choice.
    Choice,
    Tools,
    Text,
}

impl EmbeddedTier {
    /// Whether a request's `model` names this tier: its model's id, its name, or `local`.
    pub fn answers_to(&self, model: &str) -> bool {
        model == self.model_id || model == self.name || model == "local"
    }

    /// `req` planned (its parameters checked), rendered with the chat template and tokenized.
    /// With `labels` (and no `response_format` or `tools` of its own), the labels are listed to
    /// the model, one per line at the end of the system prompt, when its messages do not name
    /// them all.
    pub(crate) async fn prepare(
        &self,
        gateway: &Gateway,
        req: &ChatRequest,
        labels: Option<&[String]>,
    ) -> Result<Prepared, ApiError> {
        let info = self.engine.info();
        let mut plan = convert::plan(req, info.n_vocab, &info.sampling)?;
        tracing::debug!(sampling = ?plan.params.sampling, "sampling");
        let labels = match labels {
            Some(l) if plan.params.constraint.is_none() => {
                check_labels(l)?;
                list_labels(&mut plan.messages, l);
                Some(l.to_vec())
            }
            _ => None,
        };
        let prompt = self.render(gateway, &plan).await?;
        Ok(Prepared {
            plan,
            prompt,
            labels,
        })
    }

    /// The plan's prompt, rendered off the async runtime's threads (a template may run for a
    /// while within its fuel), then tokenized.
    async fn render(&self, gateway: &Gateway, plan: &Plan) -> Result<Prompt, ApiError> {
        self.render_messages(gateway, plan.messages.clone(), plan.structure.tools.clone())
            .await
    }

    /// `messages` (with `tools` offered) rendered and tokenized, as [`render`](Self::render).
    pub(super) async fn render_messages(
        &self,
        gateway: &Gateway,
        messages: Vec<ChatMessage>,
        tools: Vec<serde_json::Value>,
    ) -> Result<Prompt, ApiError> {
        let _permit = gateway
            .renders
            .acquire()
            .await
            .map_err(|_| ApiError::Internal("the server is shutting down".into()))?;
        let engine = self.engine.clone();
        gateway.metrics.work.render();
        let text = tokio::task::spawn_blocking(move || engine.render_with_tools(&messages, &tools))
            .await
            .map_err(|_| ApiError::Internal("the chat template's render did not finish".into()))?
            .map_err(ApiError::from)?;
        gateway.metrics.work.tokenize();
        self.engine.tokenize(text).await.map_err(ApiError::from)
    }

    /// The answer as the request asked for it: a stream as it is generated, or whole.
    pub(crate) async fn answer(
        &self,
        gateway: &Gateway,
        prepared: Prepared,
    ) -> Result<Reply, ApiError> {
        let Prepared { plan, prompt, .. } = prepared;
        let Plan {
            mut params,
            stream,
            include_usage,
            logprobs,
            structure,
            n,
            ..
        } = plan;
        let mut tickets = (0..n)
            .map(|_| admit(gateway))
            .collect::<Result<Vec<_>, _>>()?;
        params.prefix_reuse = gateway.metrics.prefix_reuse;
        let generations = self
            .engine
            .generate_n(prompt, params, n)
            .await
            .map_err(|e| grammar_error(e, structure.param()))?;
        for (i, (t, g)) in tickets.iter_mut().zip(&generations).enumerate() {
            // The prompt was prefilled once for all the choices.
            t.started(if i == 0 { g.prompt_tokens } else { 0 });
        }
        let meta = Meta::new(self.model_id.clone());
        let out = Output {
            param: structure.param(),
            logprobs,
            calls: structure.calls,
            must_call: structure.must_call,
        };
        let runs: Vec<_> = generations.into_iter().zip(tickets).collect();
        if stream {
            return Ok(Reply::Stream(answer::stream_n(
                runs,
                meta,
                include_usage,
                out,
            )));
        }
        let mut whole: Option<ChatCompletion> = None;
        for (i, (generation, ticket)) in runs.into_iter().enumerate() {
            let (mut completion, ..) =
                answer::collect(generation, meta.clone(), out, ticket).await?;
            match whole.as_mut() {
                None => whole = Some(completion),
                Some(w) => {
                    for mut c in completion.choices.drain(..) {
                        c.index = i as u32;
                        w.choices.push(c);
                    }
                    w.usage.completion_tokens += completion.usage.completion_tokens;
                    w.usage.total_tokens = w.usage.prompt_tokens + w.usage.completion_tokens;
                }
            }
        }
        let completion =
            whole.ok_or_else(|| ApiError::Internal("no choice was generated".into()))?;
        Ok(Reply::Completion(Box::new(completion)))
    }

    /// The request answered in full, with its confidence trace. Prepared for a label set
    /// ([`prepare`](Self::prepare)), the answer is exactly one of the labels.
    pub(crate) async fn held(
        &self,
        gateway: &Gateway,
        req: &ChatRequest,
        prepared: Prepared,
    ) -> Result<Held, ApiError> {
        if prepared.plan.n > 1 {
            return Err(ApiError::unsupported(
                "n",
                "`n` > 1 is not supported on a route whose answer is judged before it is sent",
            ));
        }
        let mut all = self.held_n(gateway, req, prepared, 1).await?;
        all.pop()
            .ok_or_else(|| ApiError::Internal("no answer was generated".into()))
    }

    /// `samples` answers held whole from one prefill, as [`held`](Self::held) holds one.
    pub(super) async fn held_n(
        &self,
        gateway: &Gateway,
        req: &ChatRequest,
        prepared: Prepared,
        samples: usize,
    ) -> Result<Vec<Held>, ApiError> {
        let Prepared {
            mut plan,
            prompt,
            labels,
        } = prepared;
        let mut kind = if plan.structure.calls {
            AnswerKind::Tools
        } else if req
            .response_format
            .as_ref()
            .and_then(|f| serde_json::to_value(f).ok())
            .is_some_and(|f| smallfirst_router::features::enum_only(&f["json_schema"]["schema"]))
        {
            AnswerKind::Choice
        } else {
            AnswerKind::Text
        };
        if let Some(labels) = labels {
            plan.params.constraint = Some(Constraint::Choice(labels));
            kind = AnswerKind::Choice;
        }
        plan.params.confidence = true;
        plan.params.prefix_reuse = gateway.metrics.prefix_reuse;
        let constrained = plan.params.constraint.is_some();
        let mut tickets = (0..samples)
            .map(|_| admit(gateway))
            .collect::<Result<Vec<_>, _>>()?;
        let param = plan.structure.param();
        let generations = self
            .engine
            .generate_n(prompt, plan.params, samples)
            .await
            .map_err(|e| grammar_error(e, param))?;
        let out = Output {
            param,
            logprobs: plan.logprobs,
            calls: plan.structure.calls,
            must_call: plan.structure.must_call,
        };
        let mut all = Vec::with_capacity(samples);
        for (i, (generation, mut ticket)) in
            generations.into_iter().zip(tickets.drain(..)).enumerate()
        {
            // The prompt was prefilled once for all the samples.
            ticket.started(if i == 0 { generation.prompt_tokens } else { 0 });
            let (completion, trace, raw_text) =
                answer::collect(generation, Meta::new(self.model_id.clone()), out, ticket).await?;
            all.push(Held {
                completion,
                trace,
                raw_text,
                kind,
                constrained,
                judged: None,
            });
        }
        Ok(all)
    }

    /// A classification answered by a task head: the last user message embedded (one
    /// prefill, no decoding) and classified, the head's calibrated probability its
    /// confidence. `None` when the request is not one a head can answer (tools, a response
    /// format, `n` > 1, no user text).
    pub(crate) async fn by_head(
        &self,
        gateway: &Gateway,
        req: &ChatRequest,
        head: &Head,
    ) -> Option<Result<Held, ApiError>> {
        if req.tools.as_ref().is_some_and(|t| !t.is_empty())
            || req.response_format.is_some()
            || req.n.is_some_and(|n| n > 1)
        {
            return None;
        }
        let text = last_user_text(req)?;
        Some(self.classify(gateway, head, &text).await)
    }

    async fn classify(&self, gateway: &Gateway, head: &Head, text: &str) -> Result<Held, ApiError> {
        let mut ticket = admit(gateway)?;
        let answer = tokio::time::timeout_at(ticket.deadline, head.classify(&self.engine, text))
            .await
            .map_err(|_| ApiError::Timeout(answer::timeout_message(&ticket)))?
            .map_err(|e| match e {
                HeadError::Engine(e) => ApiError::from(e),
                other => ApiError::Internal(other.to_string()),
            })?;
        let tokens = u32::try_from(answer.prompt_tokens).unwrap_or(u32::MAX);
        ticket.started(tokens);
        ticket.done(0, 0);
        let p = answer.prediction;
        let label = head.labels.get(p.index).cloned().unwrap_or_default();
        let c = Confidence {
            value: p.probability,
            method: Method::Head,
            margin: Some(p.margin),
        };
        Ok(self.read_label(label, tokens, c))
    }

    /// A label read rather than decoded (a head's, a scored label set's): a one-choice
    /// completion of `prompt_tokens` and no completion tokens, judged already.
    pub(super) fn read_label(&self, label: String, prompt_tokens: u32, c: Confidence) -> Held {
        Held {
            completion: answer::labeled(Meta::new(self.model_id.clone()), label, prompt_tokens),
            trace: Vec::new(),
            raw_text: String::new(),
            kind: AnswerKind::Choice,
            constrained: false,
            judged: Some(c),
        }
    }
}

/// The text of the last user message (its text parts, a line each); `None` when it has
/// anything else (an image, a file) or there is none.
pub(super) fn last_user_text(req: &ChatRequest) -> Option<String> {
    let m = req.messages.iter().rev().find(|m| m.role == Role::User)?;
    match m.content.as_ref()? {
        MessageContent::Text(t) => Some(t.clone()),
        MessageContent::Parts(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                match p {
                    ContentPart::Text { text } => out.push(text.as_str()),
                    _ => return None,
                }
            }
            Some(out.join("\n"))
        }
    }
}

/// An engine error as the API's; a grammar that did not compile is the request's fault.
fn grammar_error(e: EngineError, param: &'static str) -> ApiError {
    match e {
        EngineError::Grammar(_) => ApiError::invalid(param, e.to_string()),
        other => other.into(),
    }
}

/// Lists `labels` to the model when its messages do not name them all. One label per line,
/// after the client's own instruction: small models read a list far better than a
/// comma-separated run, which they answer with its first item.
pub(super) fn list_labels(messages: &mut Vec<ChatMessage>, labels: &[String]) {
    let all_named = labels
        .iter()
        .all(|l| messages.iter().any(|m| m.content.contains(l.as_str())));
    if all_named {
        return;
    }
    let list = format!(
        "Possible labels:\n{}\nAnswer with the label only.",
        labels.join("\n")
    );
    match messages.first_mut() {
        Some(m) if m.role == "system" => {
            m.content.push_str("\n\n");
            m.content.push_str(&list);
        }
        _ => messages.insert(
            0,
            ChatMessage {
                role: "system".into(),
                content: list,
                tool_calls: Vec::new(),
                tool_call_id: None,
            },
        ),
    }
}

/// A label set is a closed choice like an `enum`, and is held to the same limits.
fn check_labels(labels: &[String]) -> Result<(), ApiError> {
    use smallfirst_engine::schema::limits::{MAX_CHARS, MAX_ENUM_VALUES};
    if labels.len() > MAX_ENUM_VALUES {
        return Err(ApiError::invalid(
            "metadata.labels",
            format!(
                "at most {MAX_ENUM_VALUES} labels are allowed, got {}",
                labels.len()
            ),
        ));
    }
    if labels.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "metadata.labels",
            "labels must not be empty strings",
        ));
    }
    let chars: usize = labels.iter().map(|l| l.chars().count()).sum();
    if chars > MAX_CHARS {
        return Err(ApiError::invalid(
            "metadata.labels",
            format!("the labels come to {chars} characters, more than {MAX_CHARS}"),
        ));
    }
    Ok(())
}

/// A place in the embedded engine's queue, or 429 when it is full.
pub(super) fn admit(gateway: &Gateway) -> Result<Ticket, ApiError> {
    gateway.metrics.admit().ok_or_else(|| {
        ApiError::Busy("the local model's queue is full; retry after a moment".into())
    })
}
