//! Pure translation between the OpenAI wire types and the engine: request → plan, engine
//! output → response objects. No I/O, so every rule here is unit-tested without a model.

use smallfirst_engine::{
    ChatMessage, FinishReason, GenerateParams, SamplingDefaults, SamplingParams, TokenLogprob,
};
use smallfirst_protocol::chat::ContentPart;
use smallfirst_protocol::{self as wire, ChatRequest, MessageContent, Role};

use crate::ApiError;
use crate::structured::{self, Structure};

/// OpenAI's limits, enforced the same way so code that works here works there.
const MAX_STOP: usize = 4;
const MAX_TOP_LOGPROBS: u32 = 20;

/// What one request may ask of the engine, checked before any work (documented in the
/// README's limits): rendering and tokenizing are linear in these, and these keep them short.
pub(crate) const MAX_MESSAGES: usize = 2048;
/// Content parts over all messages.
pub(crate) const MAX_PARTS: usize = 4096;
/// Choices one request may ask for (`n`).
pub(crate) const MAX_CHOICES: u32 = 16;
/// Bytes of one stop sequence.
const MAX_STOP_BYTES: usize = 256;
/// Entries of `logit_bias`.
const MAX_LOGIT_BIAS: usize = 1024;

/// A validated request, ready for the engine.
#[derive(Debug)]
pub(crate) struct Plan {
    pub messages: Vec<ChatMessage>,
    pub params: GenerateParams,
    /// Choices to generate (`n`).
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
    pub logprobs: bool,
    pub structure: Structure,
}

/// `defaults` fills what the request leaves out: the model's recommended sampling.
pub(crate) fn plan(
    req: &ChatRequest,
    n_vocab: usize,
    defaults: &SamplingDefaults,
) -> Result<Plan, ApiError> {
    refuse_unknown(&req.extra)?;
    let messages = messages(req)?;
    check_range("temperature", req.temperature, 0.0, 2.0)?;
    check_range("top_p", req.top_p, 0.0, 1.0)?;
    check_range("min_p", req.min_p, 0.0, 1.0)?;
    check_range("repetition_penalty", req.repetition_penalty, 0.01, 10.0)?;
    check_range("presence_penalty", req.presence_penalty, -2.0, 2.0)?;
    check_range("frequency_penalty", req.frequency_penalty, -2.0, 2.0)?;
    let n = req.n.unwrap_or(1);
    if !(1..=MAX_CHOICES).contains(&n) {
        return Err(ApiError::invalid(
            "n",
            format!("`n` must be between 1 and {MAX_CHOICES}, got {n}"),
        ));
    }
    if req.max_output_tokens() == Some(0) {
        let param = if req.max_completion_tokens.is_some() {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        return Err(ApiError::invalid(
            param,
            format!("`{param}` must be at least 1"),
        ));
    }
    let stop = req.stop_sequences();
    check_stop(&stop)?;
    let logprobs = req.logprobs.unwrap_or(false);
    if let Some(k) = req.top_logprobs {
        if !logprobs {
            return Err(ApiError::invalid(
                "top_logprobs",
                "`top_logprobs` requires `logprobs: true`",
            ));
        }
        if k > MAX_TOP_LOGPROBS {
            return Err(ApiError::invalid(
                "top_logprobs",
                format!("`top_logprobs` must be between 0 and {MAX_TOP_LOGPROBS}, got {k}"),
            ));
        }
    }
    if req.stream_options.is_some() && !req.is_stream() {
        return Err(ApiError::invalid(
            "stream_options",
            "`stream_options` is only allowed when `stream` is true",
        ));
    }
    let structure = structured::structure(req)?;
    let logit_bias = logit_bias(req, n_vocab)?;
    let sampling = SamplingParams {
        temperature: req.temperature.unwrap_or(defaults.temperature.value),
        top_p: req.top_p.unwrap_or(defaults.top_p.value),
        top_k: req.top_k.unwrap_or(defaults.top_k.value),
        min_p: req.min_p.unwrap_or(defaults.min_p.value),
        // A grammar-bound answer (JSON, calls, labels) must repeat its keys and quotes: the
        // model's default penalty is for free text only.
        repetition_penalty: req
            .repetition_penalty
            .unwrap_or(if structure.constraint.is_some() {
                1.0
            } else {
                defaults.repetition_penalty.value
            }),
        presence_penalty: req.presence_penalty.unwrap_or(0.0),
        frequency_penalty: req.frequency_penalty.unwrap_or(0.0),
        logit_bias,
        seed: req.seed.map(|s| s as u64),
    };
    Ok(Plan {
        messages,
        n: n as usize,
        params: GenerateParams {
            max_tokens: req.max_output_tokens(),
            sampling,
            stop,
            logprobs: logprobs.then(|| req.top_logprobs.unwrap_or(0) as usize),
            constraint: structure.constraint.clone(),
            confidence: false,
            prefix_reuse: true,
            ignore_eos: req.ignore_eos.unwrap_or(false),
        },
        stream: req.is_stream(),
        include_usage: req.include_usage(),
        logprobs,
        structure,
    })
}

/// OpenAI's limits on `stop`, and this server's on each sequence's length.
pub(crate) fn check_stop(stop: &[String]) -> Result<(), ApiError> {
    if stop.len() > MAX_STOP {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "at most {MAX_STOP} stop sequences are allowed, got {}",
                stop.len()
            ),
        ));
    }
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            "stop sequences must not be empty",
        ));
    }
    if stop.iter().any(|s| s.len() > MAX_STOP_BYTES) {
        return Err(ApiError::invalid(
            "stop",
            format!("stop sequences may be at most {MAX_STOP_BYTES} bytes long"),
        ));
    }
    Ok(())
}

/// A parameter this server does not know, refused by name: the embedded tier never ignores
/// a knob it was given.
pub(crate) fn refuse_unknown(
    extra: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), ApiError> {
    match extra.keys().next() {
        Some(name) => Err(ApiError::InvalidRequest {
            message: format!("unrecognized request argument supplied: `{name}`"),
            param: Some(name.clone()),
            code: Some("unknown_parameter"),
        }),
        None => Ok(()),
    }
}

pub(crate) fn check_range(
    param: &str,
    value: Option<f32>,
    lo: f32,
    hi: f32,
) -> Result<(), ApiError> {
    match value {
        Some(v) if !(lo..=hi).contains(&v) => Err(ApiError::invalid(
            param,
            format!("`{param}` must be between {lo} and {hi}, got {v}"),
        )),
        _ => Ok(()),
    }
}

fn logit_bias(req: &ChatRequest, n_vocab: usize) -> Result<Vec<(u32, f32)>, ApiError> {
    bias(req.logit_bias.as_ref(), n_vocab)
}

/// `logit_bias` checked: token ids of this model, biases within OpenAI's range.
pub(crate) fn bias(
    map: Option<&std::collections::BTreeMap<String, f32>>,
    n_vocab: usize,
) -> Result<Vec<(u32, f32)>, ApiError> {
    let Some(map) = map else {
        return Ok(Vec::new());
    };
    if map.len() > MAX_LOGIT_BIAS {
        return Err(ApiError::invalid(
            "logit_bias",
            format!(
                "`logit_bias` may bias at most {MAX_LOGIT_BIAS} tokens, got {}",
                map.len()
            ),
        ));
    }
    map.iter()
        .map(|(k, &v)| {
            let token = k
                .parse::<u32>()
                .ok()
                .filter(|&t| (t as usize) < n_vocab)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "logit_bias",
                        format!("`{k}` is not a token id of this model (0..{n_vocab})"),
                    )
                })?;
            if !(-100.0..=100.0).contains(&v) {
                return Err(ApiError::invalid(
                    "logit_bias",
                    format!("bias for token {k} must be between -100 and 100, got {v}"),
                ));
            }
            Ok((token, v))
        })
        .collect()
}

fn messages(req: &ChatRequest) -> Result<Vec<ChatMessage>, ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must contain at least one message",
        ));
    }
    if req.messages.len() > MAX_MESSAGES {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "at most {MAX_MESSAGES} messages are allowed, got {}",
                req.messages.len()
            ),
        ));
    }
    if let Some((i, name)) = req
        .messages
        .iter()
        .enumerate()
        .find_map(|(i, m)| m.extra.keys().next().map(|k| (i, k)))
    {
        return Err(ApiError::InvalidRequest {
            message: format!("unrecognized message field supplied: `{name}`"),
            param: Some(format!("messages[{i}].{name}")),
            code: Some("unknown_parameter"),
        });
    }
    let parts: usize = req
        .messages
        .iter()
        .map(|m| match &m.content {
            Some(MessageContent::Parts(p)) => p.len(),
            _ => 0,
        })
        .sum();
    if parts > MAX_PARTS {
        return Err(ApiError::invalid(
            "messages",
            format!("at most {MAX_PARTS} content parts are allowed over all messages, got {parts}"),
        ));
    }
    req.messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let param = format!("messages[{i}]");
            let role = match m.role {
                // The developer role is the system prompt under a newer name.
                Role::System | Role::Developer => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
                Role::Function => {
                    return Err(ApiError::unsupported(
                        format!("{param}.role"),
                        "the deprecated `function` role is not supported; use `tool`",
                    ));
                }
            };
            let content = match &m.content {
                Some(MessageContent::Text(t)) => t.clone(),
                Some(MessageContent::Parts(parts)) => text_parts(parts, &param)?,
                None if m.role == Role::Assistant => String::new(),
                None => {
                    return Err(ApiError::invalid(
                        format!("{param}.content"),
                        format!("`{param}.content` is required for role `{role}`"),
                    ));
                }
            };
            let mut message = ChatMessage::new(role, content);
            if let Some(calls) = &m.tool_calls {
                if m.role != Role::Assistant {
                    return Err(ApiError::invalid(
                        format!("{param}.tool_calls"),
                        "only assistant messages carry `tool_calls`",
                    ));
                }
                message.tool_calls = calls
                    .iter()
                    .enumerate()
                    .map(|(j, c)| template_call(c, &format!("{param}.tool_calls[{j}]")))
                    .collect::<Result<_, _>>()?;
            }
            if m.role == Role::Tool {
                let Some(id) = &m.tool_call_id else {
                    return Err(ApiError::invalid(
                        format!("{param}.tool_call_id"),
                        format!("`{param}.tool_call_id` is required for role `tool`"),
                    ));
                };
                message.tool_call_id = Some(id.clone());
            }
            Ok(message)
        })
        .collect()
}

/// A call from the conversation as chat templates expect it: `arguments` as a JSON object.
fn template_call(call: &wire::ToolCall, param: &str) -> Result<serde_json::Value, ApiError> {
    let arguments: serde_json::Value =
        serde_json::from_str(&call.function.arguments).map_err(|e| {
            ApiError::invalid(
                format!("{param}.function.arguments"),
                format!("`{param}.function.arguments` is not valid JSON: {e}"),
            )
        })?;
    Ok(serde_json::json!({
        "id": call.id,
        "type": "function",
        "function": {"name": call.function.name, "arguments": arguments},
    }))
}

fn text_parts(parts: &[ContentPart], param: &str) -> Result<String, ApiError> {
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        match part {
            ContentPart::Text { text: t } | ContentPart::Refusal { refusal: t } => text.push_str(t),
            other => {
                return Err(ApiError::unsupported(
                    format!("{param}.content[{j}].type"),
                    format!(
                        "content parts of type `{}` are not supported by this model; only `text` is",
                        other.kind()
                    ),
                ));
            }
        }
    }
    Ok(text)
}

pub(crate) fn finish_reason(f: FinishReason) -> wire::FinishReason {
    match f {
        FinishReason::Stop => wire::FinishReason::Stop,
        FinishReason::Length => wire::FinishReason::Length,
    }
}

/// The engine's log-probabilities in the wire shape: token text, UTF-8 bytes.
pub(crate) fn token_logprobs(entries: Vec<TokenLogprob>) -> Vec<wire::TokenLogprob> {
    entries
        .into_iter()
        .map(|e| wire::TokenLogprob {
            token: String::from_utf8_lossy(&e.bytes).into_owned(),
            logprob: e.logprob,
            bytes: Some(e.bytes),
            top_logprobs: e
                .top
                .into_iter()
                .map(|(bytes, logprob)| wire::TopLogprob {
                    token: String::from_utf8_lossy(&bytes).into_owned(),
                    logprob,
                    bytes: Some(bytes),
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn req(v: serde_json::Value) -> ChatRequest {
        serde_json::from_value(v).expect("valid request json")
    }

    fn err(v: serde_json::Value) -> ApiError {
        plan(&req(v), 1000, &SamplingDefaults::default()).expect_err("should be refused")
    }

    fn param_of(e: &ApiError) -> Option<String> {
        e.body().error.param
    }

    #[test]
    fn maps_parameters() {
        let p = plan(
            &req(json!({
                "model": "m",
                "messages": [{"role": "developer", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
                "temperature": 0, "top_p": 0.5, "seed": 3, "stop": ["x", "y"], "max_tokens": 7,
                "logprobs": true, "top_logprobs": 2, "logit_bias": {"5": -100},
                "stream": true, "stream_options": {"include_usage": true}
            })),
            1000,
            &SamplingDefaults::default(),
        )
        .expect("valid");
        assert_eq!(
            p.messages,
            vec![
                ChatMessage::new("system", "s"),
                ChatMessage::new("user", "ab")
            ]
        );
        assert_eq!(p.params.max_tokens, Some(7));
        assert_eq!(p.params.stop, vec!["x", "y"]);
        assert_eq!(p.params.logprobs, Some(2));
        assert_eq!(p.params.sampling.seed, Some(3));
        assert_eq!(p.params.sampling.temperature, 0.0);
        assert_eq!(p.params.sampling.logit_bias, vec![(5, -100.0)]);
        assert!(p.stream && p.include_usage && p.logprobs);
    }

    #[test]
    fn refuses_out_of_range_values_naming_the_param() {
        let base = |extra: serde_json::Value| {
            let mut v = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            v
        };
        for (extra, param) in [
            (json!({"temperature": 2.5}), "temperature"),
            (json!({"top_p": -0.1}), "top_p"),
            (json!({"presence_penalty": 3}), "presence_penalty"),
            (json!({"n": 17}), "n"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
            (json!({"top_logprobs": 3}), "top_logprobs"),
            (
                json!({"logprobs": true, "top_logprobs": 21}),
                "top_logprobs",
            ),
            (
                json!({"stream_options": {"include_usage": true}}),
                "stream_options",
            ),
            (json!({"logit_bias": {"99999": 1}}), "logit_bias"),
            (json!({"logit_bias": {"1": 101}}), "logit_bias"),
            (json!({"stop": "x".repeat(300)}), "stop"),
            (
                json!({"logit_bias": (0..1100).map(|i| (i.to_string(), json!(1))).collect::<serde_json::Map<_, _>>()}),
                "logit_bias",
            ),
            (
                json!({"messages": vec![json!({"role": "user", "content": ""}); MAX_MESSAGES + 1]}),
                "messages",
            ),
            (json!({"tool_choice": "required"}), "tool_choice"),
        ] {
            let e = err(base(extra.clone()));
            assert_eq!(param_of(&e).as_deref(), Some(param), "{extra}: {e}");
        }
    }

    #[test]
    fn refuses_bad_messages() {
        assert_eq!(
            param_of(&err(json!({"model": "m", "messages": []}))).as_deref(),
            Some("messages")
        );
        let e = err(json!({"model": "m", "messages": [{"role": "user", "content": null}]}));
        assert_eq!(param_of(&e).as_deref(), Some("messages[0].content"));
        let e = err(
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
        );
        assert_eq!(param_of(&e).as_deref(), Some("messages[0].content[0].type"));
        assert_eq!(e.body().error.code.as_deref(), Some("unsupported_value"));
    }

    #[test]
    fn sampling_defaults_fill_only_what_the_request_leaves_out() {
        use smallfirst_engine::Recommended;
        let defaults = SamplingDefaults::resolve(
            Recommended {
                temperature: Some(0.7),
                top_k: Some(20),
                repetition_penalty: Some(1.1),
                ..Recommended::default()
            },
            Recommended::default(),
        );
        let bare = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let p = plan(&req(bare), 1000, &defaults).expect("valid");
        let s = &p.params.sampling;
        assert_eq!(
            (s.temperature, s.top_k, s.repetition_penalty),
            (0.7, 20, 1.1)
        );
        // llama.cpp's defaults where the model says nothing.
        assert_eq!((s.top_p, s.min_p), (0.95, 0.05));
        let set = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                         "temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0, "repeat_penalty": 1.0});
        let p = plan(&req(set), 1000, &defaults).expect("valid");
        let s = &p.params.sampling;
        assert_eq!(
            (
                s.temperature,
                s.top_p,
                s.top_k,
                s.min_p,
                s.repetition_penalty
            ),
            (1.0, 1.0, 0, 0.0, 1.0),
            "what the client sets is used exactly"
        );
        let e =
            err(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "min_p": 2}));
        assert_eq!(param_of(&e).as_deref(), Some("min_p"));
    }

    #[test]
    fn text_response_format_and_empty_tools_are_fine() {
        let p = plan(
            &req(
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": null}],
                        "response_format": {"type": "text"}, "tools": []}),
            ),
            10,
            &SamplingDefaults::default(),
        );
        assert!(p.is_ok());
    }

    #[test]
    fn logprob_bytes_survive_partial_utf8() {
        let out = token_logprobs(vec![TokenLogprob {
            bytes: vec![0xE2, 0x82],
            logprob: -0.5,
            top: vec![(b"a".to_vec(), -1.0)],
        }]);
        assert_eq!(out[0].bytes.as_deref(), Some(&[0xE2, 0x82][..]));
        assert_eq!(out[0].top_logprobs[0].token, "a");
    }
}
