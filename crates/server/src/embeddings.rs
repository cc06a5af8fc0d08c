//! `POST /v1/embeddings`: pooled, normalized embeddings from the embedded model (one model in
//! memory: a second context on the same weights, run between generation steps), or the body
//! passed to an OpenAI-compatible tier. Routed as the completions API is.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Json, Response};
use base64::Engine as _;
use serde_json::Value;
use smallfirst_protocol::completions::PromptInput;
use smallfirst_protocol::embeddings::{Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage};
use smallfirst_router::Protocol;

use crate::completions::{read, refused, routed};
use crate::gateway::EmbeddedTier;
use crate::guard::KeyName;
use crate::{ApiError, AppState};

/// Inputs one request may embed (OpenAI's limit).
const MAX_INPUTS: usize = 2048;
/// Tokens one request may embed in all: the engine thread runs embeddings between generation
/// steps, and this bounds how long one request holds it.
const MAX_TOKENS: usize = 65_536;

pub(crate) async fn create(
    State(state): State<AppState>,
    key: Option<Extension<KeyName>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let key = key.map(|k| k.0.0);
    let answered = async {
        let (req, body, privacy) =
            read::<EmbeddingRequest>(&state, &headers, body, |r| r.metadata.as_ref())?;
        let call = (Protocol::OpenAiEmbeddings, body, false);
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

async fn embedded(
    state: &AppState,
    local: &EmbeddedTier,
    req: &EmbeddingRequest,
) -> Result<Response, ApiError> {
    crate::convert::refuse_unknown(&req.extra)?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("`encoding_format` must be `float` or `base64`, got `{other}`"),
            ));
        }
    };
    let engine = &local.engine;
    if req.input.is_empty() || req.input.len() > MAX_INPUTS {
        return Err(ApiError::invalid(
            "input",
            format!(
                "`input` must hold 1 to {MAX_INPUTS} inputs, got {}",
                req.input.len()
            ),
        ));
    }
    let mut prompts = Vec::with_capacity(req.input.len());
    match &req.input {
        PromptInput::Texts(texts) => {
            for (i, t) in texts.iter().enumerate() {
                if t.is_empty() {
                    return Err(ApiError::invalid(
                        format!("input[{i}]"),
                        "an input must not be empty",
                    ));
                }
                prompts.push(
                    engine
                        .tokenize_text(t.clone())
                        .await
                        .map_err(ApiError::from)?,
                );
            }
        }
        PromptInput::Tokens(lists) => {
            for (i, ids) in lists.iter().enumerate() {
                if ids.is_empty() {
                    return Err(ApiError::invalid(
                        format!("input[{i}]"),
                        "an input must not be empty",
                    ));
                }
                let p = engine.token_prompt(ids).ok_or_else(|| {
                    ApiError::invalid(
                        format!("input[{i}]"),
                        format!(
                            "a token id is not in this model's vocabulary (0..{})",
                            engine.info().n_vocab
                        ),
                    )
                })?;
                prompts.push(p);
            }
        }
    }
    let limit = engine.embedding_ctx() as usize;
    if let Some(i) = prompts.iter().position(|p| !p.fits() || p.len() > limit) {
        return Err(ApiError::ContextLength(format!(
            "input[{i}] is {} tokens; an input may be at most {limit}",
            prompts[i].len()
        )));
    }
    let tokens: usize = prompts.iter().map(|p| p.len()).sum();
    if tokens > MAX_TOKENS {
        return Err(ApiError::invalid(
            "input",
            format!("the inputs come to {tokens} tokens; a request may embed at most {MAX_TOKENS}"),
        ));
    }
    let ticket = state.inner.metrics.admit().ok_or_else(|| {
        ApiError::Busy("the local model's queue is full; retry after a moment".into())
    })?;
    let vectors = tokio::time::timeout_at(ticket.deadline, engine.embed(prompts))
        .await
        .map_err(|_| ApiError::Timeout(crate::answer::timeout_message(&ticket)))?
        .map_err(ApiError::from)?;
    drop(ticket);
    if let Some(d) = req.dimensions
        && vectors.first().is_some_and(|v| v.len() != d as usize)
    {
        return Err(ApiError::unsupported(
            "dimensions",
            format!(
                "this model's embeddings have {} dimensions and cannot be shortened",
                vectors.first().map_or(0, Vec::len)
            ),
        ));
    }
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| Embedding {
            object: "embedding".into(),
            index: i as u32,
            embedding: if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                serde_json::json!(v)
            },
        })
        .collect();
    let n = tokens.min(u32::MAX as usize) as u32;
    Ok(Json(EmbeddingList {
        object: "list".into(),
        data,
        model: local.model_id.clone(),
        usage: EmbeddingUsage {
            prompt_tokens: n,
            total_tokens: n,
        },
    })
    .into_response())
}
