//! `POST /v1/completions`, OpenAI's legacy Completions API: a prompt (or several, or token
//! ids) completed as it is, without a chat template, or, with `suffix`, filled in the middle
//! with the model's FIM tokens — what editors' autocomplete sends.
//!
//! Routed like chat by `model`: the embedded tier answers here; an OpenAI-compatible tier gets
//! the body as the client sent it; `auto` takes the embedded tier, or the first tier that
//! offers the API where there is none. Privacy rules apply as they do to chat.

mod wire;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Json, Response};
use smallfirst_engine::{GenerateParams, Generation, Prompt, SamplingParams};
use smallfirst_protocol::completions::{CompletionRequest, PromptInput};
use smallfirst_router::splice::without_metadata;
use smallfirst_router::{Answer, Native, Privacy, Protocol};

use crate::chat::{parse_as, privacy_of, task_hint};
use crate::gateway::{EmbeddedTier, Failure, Hop, Outcome};
use crate::guard::KeyName;
use crate::render;
use crate::{ApiError, AppState};

/// smallfirst's hints in `metadata`, kept from remote tiers.
const HINTS: [&str; 3] = ["privacy", "task", "labels"];
/// OpenAI's default `max_tokens` for completions.
const DEFAULT_MAX_TOKENS: u32 = 16;
/// OpenAI's limit on `logprobs` here.
const MAX_LOGPROBS: u32 = 5;
/// Prompts per request.
const MAX_PROMPTS: usize = 16;

pub(crate) async fn create(
    State(state): State<AppState>,
    key: Option<Extension<KeyName>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let key = key.map(|k| k.0.0);
    let answered = async {
        let (req, body, privacy) =
            read::<CompletionRequest>(&state, &headers, body, |r| r.metadata.as_ref())?;
        let call = (Protocol::OpenAiCompletions, body, req.is_stream());
        let metadata = req.metadata.as_ref();
        routed(
            &state,
            (&headers, key.as_deref()),
            &req.model,
            privacy,
            metadata,
            call,
            |tier| embedded(&state, tier, &req),
        )
        .await
    };
    answered.await.unwrap_or_else(refused)
}

/// A request that was not answered, as a response with the facts known.
pub(crate) type Refusal = (ApiError, Option<String>);

pub(crate) fn refused((e, tier): Refusal) -> Response {
    let mut outcome = Outcome::refused(e, "rejected");
    outcome.tier = tier;
    let mut response = match outcome.take_answer() {
        Err(Failure::Request(e)) => e.into_response(),
        Err(Failure::Tier(e)) => render::tier_error(&e),
        Ok(_) => ApiError::Internal("unexpected answer".into()).into_response(),
    };
    render::mark(&mut response, &outcome);
    response
}

/// The body read and parsed into `T` once, with its privacy.
pub(crate) fn read<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    metadata: impl FnOnce(&T) -> Option<&smallfirst_protocol::Metadata>,
) -> Result<(T, Bytes, Privacy), Refusal> {
    let body = body
        .map_err(|e| ApiError::TooLarge(format!("could not read the request body: {e}")))
        .map_err(|e| (e, None))?;
    state.inner.metrics.work.parse();
    let req: T = parse_as(&body).map_err(|e| (e, None))?;
    let privacy = privacy_of(headers, metadata(&req)).map_err(|e| (e, None))?;
    Ok((req, body, privacy))
}

/// A request in an OpenAI API other than chat (`protocol`), sent where the gateway says
/// ([`Gateway::other_api`](crate::gateway::Gateway::other_api)): the embedded tier answers
/// with `embedded`; a remote tier gets the body as sent, smallfirst's hints taken out of its
/// `metadata`. `(headers, key)`: the request's headers and its API key's name.
pub(crate) async fn routed<'a, F, Fut>(
    state: &'a AppState,
    (headers, key): (&HeaderMap, Option<&str>),
    model: &str,
    privacy: Privacy,
    metadata: Option<&smallfirst_protocol::Metadata>,
    call: (Protocol, Bytes, bool),
    embedded: F,
) -> Result<Response, Refusal>
where
    F: FnOnce(&'a EmbeddedTier) -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    let (protocol, body, stream) = call;
    use smallfirst_router::features::TaskSource;
    let task = task_hint(headers)
        .map(|t| (t, TaskSource::Header))
        .or_else(|| {
            metadata
                .and_then(|m| m.value.get("task"))
                .and_then(|v| v.as_str())
                .map(|t| (t.to_string(), TaskSource::Metadata))
        });
    let (hop, reason) = state.inner.gateway.other_api(
        model,
        privacy,
        (task.as_ref().map(|t| t.0.as_str()), key),
        protocol,
    )?;
    let mut failed = None;
    let (name, mut response) = match hop {
        Hop::Embedded(tier) => {
            let name = tier.name.clone();
            let r = embedded(tier).await.map_err(|e| (e, Some(name.clone())))?;
            (name, r)
        }
        Hop::Remote(tier) => {
            let body = without_metadata(&body, &HINTS).map_or(body, Bytes::from);
            let native = Native {
                protocol,
                body,
                stream,
                headers: Vec::new(),
            };
            let r = match tier.pass(&native).await {
                Ok(Answer::Json(bytes)) => {
                    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
                }
                Ok(Answer::Stream(s)) => render::sse(s),
                Err(e) => {
                    let r = render::tier_error(&e);
                    failed = Some(e);
                    r
                }
            };
            (tier.name().to_string(), r)
        }
    };
    let mut outcome = Outcome::new(reason);
    outcome.tier = Some(name);
    outcome.task = task;
    if let Some(e) = failed {
        outcome.answer = Err(Failure::Tier(e));
    }
    render::mark(&mut response, &outcome);
    Ok(response)
}

/// The request answered by the embedded engine.
async fn embedded(
    state: &AppState,
    local: &EmbeddedTier,
    req: &CompletionRequest,
) -> Result<Response, ApiError> {
    let mut plan = plan(req, local)?;
    plan.params.prefix_reuse = state.inner.metrics.prefix_reuse;
    let engine = &local.engine;
    let mut prompts = Vec::with_capacity(req.prompt.len());
    match (&req.prompt, &req.suffix) {
        (PromptInput::Texts(texts), Some(suffix)) => {
            for prefix in texts {
                let fim = engine
                    .fim_prompt(prefix.clone(), suffix.clone())
                    .await
                    .map_err(ApiError::from)?
                    .ok_or_else(|| no_fim(&local.model_id))?;
                prompts.push((fim, String::new()));
            }
        }
        (PromptInput::Texts(texts), None) => {
            for text in texts {
                let p = engine
                    .tokenize_text(text.clone())
                    .await
                    .map_err(ApiError::from)?;
                prompts.push((p, text.clone()));
            }
        }
        (PromptInput::Tokens(lists), suffix) => {
            if suffix.is_some() {
                return Err(ApiError::unsupported(
                    "suffix",
                    "`suffix` needs a text prompt, not token ids",
                ));
            }
            for (i, ids) in lists.iter().enumerate() {
                let p = engine.token_prompt(ids).ok_or_else(|| {
                    ApiError::invalid(
                        format!("prompt[{i}]"),
                        format!(
                            "a token id is not in this model's vocabulary (0..{})",
                            engine.info().n_vocab
                        ),
                    )
                })?;
                prompts.push((p, String::new()));
            }
        }
    }
    // Every choice's place in the queue first, so a request that cannot be taken whole is
    // refused before any of it runs.
    let metrics = &state.inner.metrics;
    let mut tickets = Vec::with_capacity(prompts.len() * plan.n);
    for _ in 0..prompts.len() * plan.n {
        tickets.push(metrics.admit().ok_or_else(|| {
            ApiError::Busy("the local model's queue is full; retry after a moment".into())
        })?);
    }
    let mut runs = Vec::with_capacity(prompts.len());
    for (prompt, text) in prompts {
        let generations = start(engine, prompt, &plan).await?;
        let mut mine: Vec<_> = tickets
            .drain(..generations.len().min(tickets.len()))
            .collect();
        for (j, (t, g)) in mine.iter_mut().zip(&generations).enumerate() {
            // The prompt was prefilled once for all its choices.
            t.started(if j == 0 { g.prompt_tokens } else { 0 });
        }
        runs.push(wire::Run {
            echo: plan.echo.then_some(text),
            logprobs: plan.params.logprobs.is_some(),
            generations: generations.into_iter().zip(mine).collect(),
        });
    }
    let meta = wire::Meta::new(local.model_id.clone());
    if req.is_stream() {
        Ok(render::sse(wire::stream(runs, meta, req.include_usage())))
    } else {
        Ok(Json(wire::collect(runs, meta).await?).into_response())
    }
}

async fn start(
    engine: &smallfirst_engine::Engine,
    prompt: Prompt,
    plan: &Plan,
) -> Result<Vec<Generation>, ApiError> {
    engine
        .generate_n(prompt, plan.params.clone(), plan.n)
        .await
        .map_err(ApiError::from)
}

fn no_fim(model: &str) -> ApiError {
    ApiError::unsupported(
        "suffix",
        format!(
            "model `{model}` has no fill-in-the-middle tokens, so `suffix` cannot be used with it; a code model such as qwen2.5-coder has them"
        ),
    )
}

/// A checked request, ready for the engine.
struct Plan {
    params: GenerateParams,
    n: usize,
    echo: bool,
}

fn plan(req: &CompletionRequest, local: &EmbeddedTier) -> Result<Plan, ApiError> {
    crate::convert::refuse_unknown(&req.extra)?;
    if req.prompt.is_empty() {
        return Err(ApiError::invalid(
            "prompt",
            "`prompt` must not be an empty list",
        ));
    }
    if req.prompt.len() > MAX_PROMPTS {
        return Err(ApiError::invalid(
            "prompt",
            format!(
                "at most {MAX_PROMPTS} prompts are allowed, got {}",
                req.prompt.len()
            ),
        ));
    }
    let range = crate::convert::check_range;
    range("temperature", req.temperature, 0.0, 2.0)?;
    range("top_p", req.top_p, 0.0, 1.0)?;
    range("min_p", req.min_p, 0.0, 1.0)?;
    range("repetition_penalty", req.repetition_penalty, 0.01, 10.0)?;
    range("presence_penalty", req.presence_penalty, -2.0, 2.0)?;
    range("frequency_penalty", req.frequency_penalty, -2.0, 2.0)?;
    let n = req.n.unwrap_or(1);
    let max = crate::convert::MAX_CHOICES;
    if n == 0 || n as usize * req.prompt.len() > max as usize {
        return Err(ApiError::invalid(
            "n",
            format!(
                "a request may ask for 1 to {max} choices in all (`n` × prompts), got {n} × {}",
                req.prompt.len()
            ),
        ));
    }
    if let Some(best_of) = req.best_of
        && best_of != n
    {
        return Err(ApiError::unsupported(
            "best_of",
            "`best_of` other than `n` is not supported: every choice generated is returned",
        ));
    }
    if req.max_tokens == Some(0) {
        return Err(ApiError::invalid(
            "max_tokens",
            "`max_tokens` must be at least 1",
        ));
    }
    if let Some(k) = req.logprobs
        && k > MAX_LOGPROBS
    {
        return Err(ApiError::invalid(
            "logprobs",
            format!("`logprobs` must be between 0 and {MAX_LOGPROBS}, got {k}"),
        ));
    }
    let echo = req.echo.unwrap_or(false);
    if echo && req.suffix.is_some() {
        return Err(ApiError::invalid(
            "echo",
            "`echo` cannot be used with `suffix`",
        ));
    }
    if echo && req.logprobs.is_some() {
        return Err(ApiError::unsupported(
            "echo",
            "`echo` with `logprobs` (the prompt's own log-probabilities) is not supported",
        ));
    }
    if echo && matches!(req.prompt, PromptInput::Tokens(_)) {
        return Err(ApiError::unsupported(
            "echo",
            "`echo` needs a text prompt, not token ids",
        ));
    }
    let stop = req.stop_sequences();
    crate::convert::check_stop(&stop)?;
    if req.stream_options.is_some() && !req.is_stream() {
        return Err(ApiError::invalid(
            "stream_options",
            "`stream_options` is only allowed when `stream` is true",
        ));
    }
    let info = local.engine.info();
    let d = &info.sampling;
    let logit_bias = crate::convert::bias(req.logit_bias.as_ref(), info.n_vocab)?;
    let sampling = SamplingParams {
        temperature: req.temperature.unwrap_or(d.temperature.value),
        top_p: req.top_p.unwrap_or(d.top_p.value),
        top_k: req.top_k.unwrap_or(d.top_k.value),
        min_p: req.min_p.unwrap_or(d.min_p.value),
        // Code filled in the middle repeats its context by nature: no default penalty on it.
        repetition_penalty: req.repetition_penalty.unwrap_or(if req.suffix.is_some() {
            1.0
        } else {
            d.repetition_penalty.value
        }),
        presence_penalty: req.presence_penalty.unwrap_or(0.0),
        frequency_penalty: req.frequency_penalty.unwrap_or(0.0),
        logit_bias,
        seed: req.seed.map(|s| s as u64),
    };
    Ok(Plan {
        params: GenerateParams {
            max_tokens: Some(req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
            sampling,
            stop,
            logprobs: req.logprobs.map(|k| k as usize),
            constraint: None,
            confidence: false,
            prefix_reuse: true,
            ignore_eos: false,
        },
        n: n as usize,
        echo,
    })
}
