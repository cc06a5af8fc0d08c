//! `model: "auto"` (and the policy's aliases): read the request's features, let the policy
//! decide the route, answer on its first tier, and escalate a local answer whose confidence is
//! below the route's threshold. Every response says which tier answered, why, how confident
//! the local answer was, and whether it was escalated.
//!
//! A route that may escalate holds the local answer until its confidence is known, streaming
//! requests included (they then receive the answer in one burst once it is judged); routes
//! without a threshold stream as they generate.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use smallfirst_router::confidence::{self, Confidence, Method, Step};
use smallfirst_router::features::{self, Hints};
use smallfirst_router::policy::LowConfidence;
use smallfirst_router::{Reason, Route};

use crate::chat::{self, AnswerKind, Held};
use crate::{ApiError, AppState, gateway};

pub(crate) const TASK_HEADER: &str = "x-smallfirst-task";
pub(crate) const PRIVACY_HEADER: &str = "x-smallfirst-privacy";

/// What the client said in headers.
pub(crate) fn hints(headers: &HeaderMap) -> Hints<'_> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    Hints {
        task: get(TASK_HEADER),
        privacy: get(PRIVACY_HEADER),
    }
}

pub(crate) async fn auto(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidJson(format!("the request body is not valid JSON: {e}")))?;
    let tokens = input_tokens(state, body, &request);
    let features = features::extract(&request, hints(headers), tokens);
    let route = state
        .inner
        .policy
        .decide(&features)
        .map_err(|e| ApiError::InvalidRequest {
            message: e.0,
            param: None,
            code: Some("no_route"),
        })?;
    let decided_us = start.elapsed().as_micros();
    tracing::debug!(task = %features.task, tokens, route = ?route.tiers, reason = %route.reason.code, decided_us, "route");
    let mut response = execute(state, body, &route).await?;
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}; {}",
        features.task,
        features.task_source.as_str()
    )) {
        h.insert(TASK_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("decide;dur={:.3}", decided_us as f64 / 1000.0)) {
        h.insert("server-timing", v);
    }
    Ok(response)
}

/// The prompt's tokens as the local model counts them; without a local model (or when the
/// local model cannot render the request), about four bytes of text per token.
fn input_tokens(state: &AppState, body: &[u8], request: &Value) -> u32 {
    if let Some(local) = &state.inner.local
        && let Some(n) = chat::count_prompt_tokens(local, body)
    {
        return n;
    }
    let text: usize = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["content"].to_string().len())
        .sum();
    (text / 4) as u32
}

async fn execute(state: &AppState, body: &Bytes, route: &Route) -> Result<Response, ApiError> {
    let first = route.tiers[0].as_str();
    let local = state.inner.local.as_ref().filter(|l| l.name == first);
    let Some(local) = local else {
        // A remote (or other local) tier first: its own failover chain, kept on this machine
        // for a local-only request.
        let tier = state.remote(first).ok_or_else(|| {
            ApiError::Internal(format!(
                "the route names tier `{first}`, which is not served"
            ))
        })?;
        let mut response = gateway::forward(state, tier, body, route.local_only).await?;
        mark(&mut response, None, &route.reason, None, false);
        return Ok(response);
    };
    if route.threshold.is_none() && route.labels.is_none() {
        let mut response = chat::local(state, body, true).await?;
        mark(&mut response, Some(&local.name), &route.reason, None, false);
        return Ok(response);
    }
    let held = chat::held(local, body, route.labels.as_deref()).await?;
    let confidence = judge(&held);
    let low = route.threshold.filter(|&t| confidence.value < t);
    let mut reason = route.reason.clone();
    if let Some(threshold) = low {
        let code = format!("low_confidence {:.2}<{threshold:.2}", confidence.value);
        for next in &route.tiers[1..] {
            let Some(tier) = state.remote(next) else {
                continue;
            };
            let mut response = gateway::forward(state, tier, body, route.local_only).await?;
            if response.status().is_success() {
                let words = format!(
                    "the local answer's {} was {:.3}, below {threshold}",
                    confidence.method.as_str(),
                    confidence.value
                );
                mark(
                    &mut response,
                    None,
                    &Reason { code, words },
                    Some(confidence),
                    true,
                );
                return Ok(response);
            }
            tracing::warn!(tier = %next, status = %response.status(), "escalation failed; trying the next tier or answering locally");
        }
        if route.local_only && route.low_confidence == LowConfidence::Refuse {
            return Err(ApiError::InvalidRequest {
                message: format!(
                    "the local answer's confidence {:.3} is below the threshold {threshold}, and this local-only request may not be escalated",
                    confidence.value
                ),
                param: None,
                code: Some("low_confidence"),
            });
        }
        let words = if route.tiers.len() > 1 {
            "below the threshold; escalation failed, so the local answer stands".to_string()
        } else if route.local_only {
            "below the threshold; local-only, so the local answer stands".to_string()
        } else {
            "below the threshold; no tier to escalate to".to_string()
        };
        reason = Reason { code, words };
    }
    let mut response = respond(held, &local.name, &reason, confidence);
    mark(
        &mut response,
        Some(&local.name),
        &reason,
        Some(confidence),
        false,
    );
    Ok(response)
}

/// How sure the held answer is, read the way its constraint allows.
fn judge(held: &Held) -> Confidence {
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
        AnswerKind::Tools => {
            let text = held.raw_text.as_str();
            confidence::of_tool_calls(text, &steps)
        }
        AnswerKind::Text => confidence::of_text(&steps),
    }
}

/// The held local answer sent, JSON or replayed as a stream, with what smallfirst knows about
/// it in the body's `smallfirst` member.
fn respond(held: Held, tier: &str, reason: &Reason, c: Confidence) -> Response {
    let mut completion = held.completion;
    let mut info = json!({
        "tier": tier,
        "reason": reason.code,
        "confidence": {"value": round3(c.value), "method": c.method.as_str()},
    });
    if c.method == Method::Label
        && let Some(label) = label_of(&completion.choices[0].message.content)
    {
        info["label"] = json!({
            "label": label,
            "probability": round3(c.value),
            "margin": c.margin.map(round3),
        });
    }
    completion.smallfirst = Some(info);
    if held.stream {
        chat::replay(completion, held.include_usage)
    } else {
        Json(completion).into_response()
    }
}

/// The chosen label: the answer itself, or the value of an enum-only JSON answer's one member.
fn label_of(content: &Option<String>) -> Option<String> {
    let text = content.as_deref()?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) if map.len() == 1 => map.values().next().map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        Ok(Value::String(s)) => Some(s),
        _ => Some(text.to_string()),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The `x-smallfirst-*` headers: `tier` when it is known here (a forwarded answer carries its
/// own), why, how confident, whether escalated.
pub(crate) fn mark(
    response: &mut Response,
    tier: Option<&str>,
    reason: &Reason,
    confidence: Option<Confidence>,
    escalated: bool,
) {
    let h = response.headers_mut();
    if let Some(t) = tier.and_then(|t| HeaderValue::from_str(t).ok()) {
        h.insert("x-smallfirst-tier", t);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{}; {}", reason.code, reason.words)) {
        h.insert("x-smallfirst-reason", v);
    }
    let c = confidence.map_or("none".to_string(), |c| {
        format!("{:.3}; {}", c.value, c.method.as_str())
    });
    if let Ok(v) = HeaderValue::from_str(&c) {
        h.insert("x-smallfirst-confidence", v);
    }
    h.insert(
        "x-smallfirst-escalated",
        HeaderValue::from_static(if escalated { "true" } else { "false" }),
    );
}
