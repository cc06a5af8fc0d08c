//! `POST /v1/chat/completions`: parse, plan, generate, answer as JSON or as SSE.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use smallfirst_engine::{ChatMessage, Constraint, Engine, EngineError, StepProb};
use smallfirst_protocol::{ChatCompletion, ChatRequest};

use crate::answer::{self, Meta, Output};
use crate::convert::{self, Plan};
use crate::metrics::Ticket;
use crate::routes::LocalTier;
use crate::{ApiError, AppState, gateway, routing};
use smallfirst_router::Reason;

pub(crate) async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Errors too say how the request was handled.
    answer(state, headers, body)
        .await
        .unwrap_or_else(|e| routing::failed(e, "rejected"))
}

async fn answer(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body =
        body.map_err(|e| ApiError::TooLarge(format!("could not read the request body: {e}")))?;
    let model = target_model(&body);
    let privacy = routing::privacy(&headers, &body)?;
    if model
        .as_deref()
        .is_some_and(|m| state.inner.policy.decides_for(m))
    {
        return routing::auto(&state, &headers, &body).await;
    }
    let local_only = privacy.local_only();
    let named = Reason {
        code: format!("model={}", model.as_deref().unwrap_or("")),
        words: "the request named this tier".into(),
    };
    // A remote tier gets the body as it came; only the embedded path reads all of it.
    if let Some(tier) = model.as_deref().and_then(|m| state.remote_for(m)) {
        if local_only && !tier.is_local() {
            return Err(ApiError::InvalidRequest {
                message: format!(
                    "this request is local-only (`{}`), and tier `{}` is not on this machine",
                    routing::PRIVACY_HEADER,
                    tier.name()
                ),
                param: Some("model".into()),
                code: Some("local_only"),
            });
        }
        let mut response = gateway::forward(
            &state,
            tier,
            &body,
            gateway::Chain {
                local_only,
                embedded: true,
            },
        )
        .await?;
        routing::mark(&mut response, None, &named, None, false);
        return Ok(response);
    }
    let mut response = local(&state, &body, false).await?;
    routing::mark(&mut response, None, &named, None, false);
    Ok(response)
}

/// The request answered by the embedded model; `fallback` when a remote tier's chain led here,
/// so the `model` it names is another tier's.
pub(crate) async fn local(
    state: &AppState,
    body: &[u8],
    fallback: bool,
) -> Result<Response, ApiError> {
    let req = parse(body)?;
    let local = match &state.inner.local {
        Some(l) if fallback || state.answers_to(&req.model) => l,
        _ => return Err(ApiError::ModelNotFound(req.model)),
    };
    let engine = &local.engine;
    let plan = convert::plan(&req, engine.info().n_vocab)?;
    let prompt = render(state, engine, &plan).await?;
    let mut ticket = admit(state)?;
    let Plan {
        mut params,
        stream,
        include_usage,
        logprobs,
        structure,
        ..
    } = plan;
    params.prefix_reuse = state.inner.metrics.prefix_reuse;
    let generation = engine.generate(prompt, params).await.map_err(|e| match e {
        // The grammar did not compile: the request's schema is at fault.
        EngineError::Grammar(_) => ApiError::invalid(structure.param(), e.to_string()),
        other => other.into(),
    })?;
    ticket.started(generation.prompt_tokens);
    let meta = Meta::new(local.model_id.clone());
    let out = Output {
        param: structure.param(),
        logprobs,
        calls: structure.calls,
        must_call: structure.must_call,
    };
    let mut response = if stream {
        answer::sse(generation, meta, include_usage, out, ticket).into_response()
    } else {
        Json(answer::collect(generation, meta, out, ticket).await?.0).into_response()
    };
    if let Ok(tier) = HeaderValue::from_str(&local.name) {
        response.headers_mut().insert("x-smallfirst-tier", tier);
    }
    Ok(response)
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
    pub stream: bool,
    pub include_usage: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnswerKind {
    /// One of a label set, or JSON whose every leaf is a closed choice.
    Choice,
    Tools,
    Text,
}

/// The request answered by the embedded model in full, with its confidence trace. With
/// `labels` (and no `response_format` or `tools` of its own), the answer is exactly one label;
/// the labels are listed to the model, one per line at the end of the system prompt, when its
/// messages do not name them all.
pub(crate) async fn held(
    state: &AppState,
    local: &LocalTier,
    body: &[u8],
    labels: Option<&[String]>,
) -> Result<Held, ApiError> {
    let req = parse(body)?;
    let engine = &local.engine;
    let mut plan = convert::plan(&req, engine.info().n_vocab)?;
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
    if let Some(labels) = labels
        && plan.params.constraint.is_none()
    {
        check_labels(labels)?;
        let all_named = labels
            .iter()
            .all(|l| plan.messages.iter().any(|m| m.content.contains(l.as_str())));
        if !all_named {
            // One label per line, after the client's own instruction: small models read a
            // list far better than a comma-separated run, which they answer with its first item.
            let list = format!(
                "Possible labels:\n{}\nAnswer with the label only.",
                labels.join("\n")
            );
            match plan.messages.first_mut() {
                Some(m) if m.role == "system" => {
                    m.content.push_str("\n\n");
                    m.content.push_str(&list);
                }
                _ => plan.messages.insert(
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
        plan.params.constraint = Some(Constraint::Choice(labels.to_vec()));
        kind = AnswerKind::Choice;
    }
    plan.params.confidence = true;
    plan.params.prefix_reuse = state.inner.metrics.prefix_reuse;
    let constrained = plan.params.constraint.is_some();
    let prompt = render(state, engine, &plan).await?;
    let mut ticket = admit(state)?;
    let generation = engine
        .generate(prompt, plan.params)
        .await
        .map_err(|e| match e {
            EngineError::Grammar(_) => ApiError::invalid(plan.structure.param(), e.to_string()),
            other => other.into(),
        })?;
    let out = Output {
        param: plan.structure.param(),
        logprobs: plan.logprobs,
        calls: plan.structure.calls,
        must_call: plan.structure.must_call,
    };
    ticket.started(generation.prompt_tokens);
    let (completion, trace, raw_text) =
        answer::collect(generation, Meta::new(local.model_id.clone()), out, ticket).await?;
    Ok(Held {
        completion,
        trace,
        raw_text,
        kind,
        constrained,
        stream: plan.stream,
        include_usage: plan.include_usage,
    })
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

/// The plan's prompt, rendered off the async runtime's threads (a template may run for a
/// while within its fuel).
async fn render(state: &AppState, engine: &Engine, plan: &Plan) -> Result<String, ApiError> {
    let _permit = state
        .inner
        .renders
        .acquire()
        .await
        .map_err(|_| ApiError::Internal("the server is shutting down".into()))?;
    let engine = engine.clone();
    let messages = plan.messages.clone();
    let tools = plan.structure.tools.clone();
    tokio::task::spawn_blocking(move || engine.render_with_tools(&messages, &tools))
        .await
        .map_err(|_| ApiError::Internal("the chat template's render did not finish".into()))?
        .map_err(ApiError::from)
}

/// The tokens the request's prompt takes on the local model, when it can render it.
pub(crate) async fn count_prompt_tokens(
    state: &AppState,
    local: &LocalTier,
    body: &[u8],
) -> Option<u32> {
    let req = parse(body).ok()?;
    let plan = convert::plan(&req, local.engine.info().n_vocab).ok()?;
    let prompt = render(state, &local.engine, &plan).await.ok()?;
    let engine = local.engine.clone();
    tokio::task::spawn_blocking(move || engine.count_tokens(&prompt) as u32)
        .await
        .ok()
}

/// A place in the embedded engine's queue, or 429 when it is full.
fn admit(state: &AppState) -> Result<Ticket, ApiError> {
    state.inner.metrics.admit().ok_or_else(|| {
        ApiError::Busy("the local model's queue is full; retry after a moment".into())
    })
}

/// The `model` a body asks for, read without judging the rest of it.
fn target_model(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Target {
        model: String,
    }
    serde_json::from_slice::<Target>(body).ok().map(|t| t.model)
}

/// Parses the body, naming the offending field path on failure.
pub(crate) fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: Result<ChatRequest, _> = serde_path_to_error::deserialize(&mut de);
    match parsed {
        Ok(req) => Ok(req),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(ApiError::InvalidJson(format!(
                    "the request body is not valid JSON: {inner}"
                )));
            }
            let param = (path != ".").then_some(path);
            Err(ApiError::InvalidRequest {
                message: match &param {
                    Some(p) => format!("invalid request at `{p}`: {inner}"),
                    None => format!("invalid request: {inner}"),
                },
                param,
                code: None,
            })
        }
    }
}
