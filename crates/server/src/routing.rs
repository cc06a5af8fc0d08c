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
use smallfirst_router::privacy::{self, Privacy};
use smallfirst_router::{Reason, Route};

use crate::chat::{self, AnswerKind, Held};
use crate::{ApiError, AppState, gateway};

pub(crate) const TASK_HEADER: &str = "x-smallfirst-task";
pub(crate) const PRIVACY_HEADER: &str = privacy::HEADER;

/// The request's privacy, from every `x-smallfirst-privacy` header value and every
/// `metadata.privacy` in its body (repeated keys included), combined so that it fails closed
/// ([`Privacy::of_request`]); an unknown value is a 400 naming it.
pub(crate) fn privacy(headers: &HeaderMap, body: &[u8]) -> Result<Privacy, ApiError> {
    let values = headers
        .get_all(PRIVACY_HEADER)
        .iter()
        .map(|v| v.to_str().ok());
    Privacy::of_request(values, &privacy::in_body(body)).map_err(|e| ApiError::InvalidRequest {
        message: e.to_string(),
        param: Some(e.place.into()),
        code: Some("invalid_privacy"),
    })
}

/// What the client said besides the request's body.
pub(crate) fn hints(headers: &HeaderMap, privacy: Privacy) -> Hints<'_> {
    Hints {
        task: headers.get(TASK_HEADER).and_then(|v| v.to_str().ok()),
        privacy,
    }
}

/// The most characters of a header value built from text a client may have sent (a model's
/// name goes into `x-smallfirst-reason`).
const MAX_HEADER: usize = 256;

/// A header value from any text: characters a header cannot carry become `?`, and past
/// [`MAX_HEADER`] characters it is cut (ending `...`).
pub(crate) fn header_value(text: &str) -> HeaderValue {
    let mut clean: String = text
        .chars()
        .take(MAX_HEADER)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect();
    if text.chars().nth(MAX_HEADER).is_some() {
        clean.push_str("...");
    }
    HeaderValue::from_str(&clean).unwrap_or(HeaderValue::from_static("?"))
}

pub(crate) async fn auto(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidJson(format!("the request body is not valid JSON: {e}")))?;
    let privacy = privacy(headers, body)?;
    let tokens = input_tokens(state, body, &request).await;
    let features = features::extract(&request, hints(headers, privacy), tokens);
    let decided = state.inner.policy.decide(&features);
    let decided_us = start.elapsed().as_micros();
    let mut response = match decided {
        Ok(route) => {
            tracing::debug!(task = %features.task, tokens, route = ?route.tiers, reason = %route.reason.code, decided_us, "route");
            match execute(state, body, &route).await {
                Ok(r) => r,
                Err(e) => failed(e, &route.reason.code),
            }
        }
        Err(e) => failed(
            ApiError::InvalidRequest {
                message: e.0,
                param: None,
                code: Some("no_route"),
            },
            "no_route",
        ),
    };
    let h = response.headers_mut();
    h.insert(
        TASK_HEADER,
        header_value(&format!(
            "{}; {}",
            features.task,
            features.task_source.as_str()
        )),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("decide;dur={:.3}", decided_us as f64 / 1000.0)) {
        h.insert("server-timing", v);
    }
    Ok(response)
}

/// The prompt's tokens as the local model counts them; without a local model (or when the
/// local model cannot render the request), estimated as `smallfirst route` does.
async fn input_tokens(state: &AppState, body: &[u8], request: &Value) -> u32 {
    if let Some(local) = &state.inner.local
        && let Some(n) = chat::count_prompt_tokens(state, local, body).await
    {
        return n;
    }
    features::estimate_tokens(request)
}

/// An error response that still says how the request was handled.
pub(crate) fn failed(e: ApiError, code: &str) -> Response {
    let words = e.to_string();
    let mut response = e.into_response();
    let reason = Reason {
        code: code.to_string(),
        words,
    };
    mark(&mut response, None, &reason, None, false);
    response
}

/// The body sent on to another tier: the request as the client sent it, less
/// `metadata.labels`, which OpenAI refuses (its metadata values must be strings).
fn onward(body: &Bytes) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return body.clone();
    };
    let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) else {
        return body.clone();
    };
    if meta.remove("labels").is_none() {
        return body.clone();
    }
    if meta.is_empty()
        && let Some(o) = v.as_object_mut()
    {
        o.remove("metadata");
    }
    serde_json::to_vec(&v).map_or_else(|_| body.clone(), Bytes::from)
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
        let chain = gateway::Chain {
            local_only: route.local_only,
            embedded: true,
        };
        let mut response = gateway::forward(state, tier, &onward(body), chain).await?;
        mark(&mut response, None, &route.reason, None, false);
        return Ok(response);
    };
    if route.threshold.is_none() && route.labels.is_none() {
        let mut response = chat::local(state, body, true).await?;
        mark(&mut response, Some(&local.name), &route.reason, None, false);
        return Ok(response);
    }
    let held = match chat::held(state, local, body, route.labels.as_deref()).await {
        Ok(h) => h,
        // The local tier could not answer (a prompt grown too long with its labels, a grammar
        // that does not compile): the next tier can, if there is one.
        Err(e) if route.tiers.len() > 1 => {
            let reason = Reason {
                code: "local_failed".into(),
                words: format!("the local tier failed: {e}"),
            };
            if let Some(r) = escalate(state, body, route, &reason, None).await? {
                return Ok(r);
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let confidence = judge(&held);
    let low = route.threshold.filter(|&t| confidence.value < t);
    let mut reason = route.reason.clone();
    if let Some(threshold) = low {
        let code = format!("low_confidence {:.2}<{threshold:.2}", confidence.value);
        let words = format!(
            "the local answer's {} was {:.3}, below {threshold}",
            confidence.method.as_str(),
            confidence.value
        );
        let escalation = Reason {
            code: code.clone(),
            words,
        };
        if let Some(r) = escalate(state, body, route, &escalation, Some(confidence)).await? {
            return Ok(r);
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

/// The request sent down the route's escalation tiers in turn; the first success, marked, or
/// `None` when none answered (the local answer then stands). Never to the embedded model.
async fn escalate(
    state: &AppState,
    body: &Bytes,
    route: &Route,
    reason: &Reason,
    confidence: Option<Confidence>,
) -> Result<Option<Response>, ApiError> {
    let body = onward(body);
    let chain = gateway::Chain {
        local_only: route.local_only,
        embedded: false,
    };
    for next in &route.tiers[1..] {
        let Some(tier) = state.remote(next) else {
            continue;
        };
        let mut response = gateway::forward(state, tier, &body, chain).await?;
        if response.status().is_success() {
            mark(&mut response, None, reason, confidence, true);
            return Ok(Some(response));
        }
        tracing::warn!(tier = %next, status = %response.status(), "escalation failed");
    }
    Ok(None)
}

/// How sure the held answer is, read the way its constraint allows. A label, a structure or
/// a call cut short (or steered closed) by the token budget is not what it claims to be:
/// confidence 0.
fn judge(held: &Held) -> Confidence {
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
        crate::answer::replay(completion, held.include_usage)
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
    if let Some(t) = tier {
        h.insert("x-smallfirst-tier", header_value(t));
    }
    h.insert(
        "x-smallfirst-reason",
        header_value(&format!("{}; {}", reason.code, reason.words)),
    );
    let c = confidence.map_or("none".to_string(), |c| {
        format!("{:.3}; {}", c.value, c.method.as_str())
    });
    h.insert("x-smallfirst-confidence", header_value(&c));
    h.insert(
        "x-smallfirst-escalated",
        HeaderValue::from_static(if escalated { "true" } else { "false" }),
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_values_are_clean_and_short() {
        let v = super::header_value(&format!("model=a\r\nb{}", "x".repeat(10_000)));
        let v = v.to_str().expect("visible ascii");
        assert!(
            v.starts_with("model=a??b") && v.ends_with("...") && v.len() <= 260,
            "{v}"
        );
    }
}
