//! `POST /v1/completions` (OpenAI's legacy Completions API): the request, the response and the
//! SSE chunk, which share one shape (`object: "text_completion"`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::{FinishReason, Stop, StreamOptions, Usage};
use crate::shape;

/// A completion request as the OpenAI API accepts it. Parameters this type does not name are
/// kept in [`extra`](Self::extra): a remote tier gets them as sent, the embedded tier refuses
/// them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptInput,
    /// Text after the completion: with it the model fills in the middle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// OpenAI's default is 16.
    #[serde(
        default,
        deserialize_with = "shape::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Not in OpenAI's API; as on chat completions.
    #[serde(
        default,
        deserialize_with = "shape::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    #[serde(
        default,
        alias = "repeat_penalty",
        skip_serializing_if = "Option::is_none"
    )]
    pub repetition_penalty: Option<f32>,
    #[serde(
        default,
        deserialize_with = "shape::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// The log-probabilities of this many most likely tokens at each step (at most 5).
    #[serde(
        default,
        deserialize_with = "shape::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub logprobs: Option<u32>,
    /// Repeat the prompt before the completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    #[serde(
        default,
        deserialize_with = "shape::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub best_of: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<std::collections::BTreeMap<String, f32>>,
    #[serde(
        default,
        deserialize_with = "shape::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<crate::Metadata>,
    /// Parameters this type does not name, as sent.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// `prompt`: a string, a list of strings, a list of token ids, or a list of such lists. Each
/// string or id list is one prompt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged, try_from = "Value")]
pub enum PromptInput {
    Texts(Vec<String>),
    Tokens(Vec<Vec<u32>>),
}

impl Default for PromptInput {
    fn default() -> Self {
        PromptInput::Texts(vec![String::new()])
    }
}

impl PromptInput {
    /// How many prompts it holds.
    pub fn len(&self) -> usize {
        match self {
            PromptInput::Texts(t) => t.len(),
            PromptInput::Tokens(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl TryFrom<Value> for PromptInput {
    type Error = String;

    fn try_from(v: Value) -> Result<Self, String> {
        const EXPECTED: &str = "expected a string, an array of strings, an array of token ids, or an array of such arrays";
        let id = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
        match v {
            Value::String(s) => Ok(PromptInput::Texts(vec![s])),
            Value::Array(items) if items.is_empty() => Ok(PromptInput::Texts(Vec::new())),
            Value::Array(items) => match &items[0] {
                Value::String(_) => items
                    .into_iter()
                    .map(|i| match i {
                        Value::String(s) => Ok(s),
                        other => Err(format!(
                            "{EXPECTED}; got an array holding {}",
                            shape::kind(&other)
                        )),
                    })
                    .collect::<Result<_, _>>()
                    .map(PromptInput::Texts),
                Value::Number(_) => items
                    .iter()
                    .map(|i| {
                        id(i).ok_or_else(|| format!("{EXPECTED}; token ids are integers from 0"))
                    })
                    .collect::<Result<_, _>>()
                    .map(|ids| PromptInput::Tokens(vec![ids])),
                Value::Array(_) => items
                    .iter()
                    .map(|list| match list {
                        Value::Array(ids) => ids
                            .iter()
                            .map(|i| {
                                id(i).ok_or_else(|| {
                                    format!("{EXPECTED}; token ids are integers from 0")
                                })
                            })
                            .collect::<Result<Vec<u32>, _>>(),
                        other => Err(format!(
                            "{EXPECTED}; got an array holding {}",
                            shape::kind(other)
                        )),
                    })
                    .collect::<Result<_, _>>()
                    .map(PromptInput::Tokens),
                other => Err(format!(
                    "{EXPECTED}; got an array holding {}",
                    shape::kind(other)
                )),
            },
            other => Err(format!("{EXPECTED}; got {}", shape::kind(&other))),
        }
    }
}

impl CompletionRequest {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The stop sequences as a list, empty when none were given.
    pub fn stop_sequences(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
    }
}

/// A whole completion, or (with `usage` absent) one chunk of a stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Completion {
    pub id: String,
    /// Always `text_completion`.
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub text: String,
    pub index: u32,
    pub logprobs: Option<CompletionLogprobs>,
    /// `null` in a stream's chunks until the last one of the choice.
    pub finish_reason: Option<FinishReason>,
}

/// The legacy log-probability shape: parallel lists, one entry per token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<Option<f32>>,
    /// Each token's most likely alternatives, token text → log-probability.
    pub top_logprobs: Vec<Option<std::collections::BTreeMap<String, f32>>>,
    /// Where each token starts in the choice's text, in characters.
    pub text_offset: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prompt(v: Value) -> Result<PromptInput, String> {
        PromptInput::try_from(v)
    }

    #[test]
    fn every_prompt_shape_reads() {
        assert!(matches!(prompt(json!("hi")), Ok(PromptInput::Texts(t)) if t == ["hi"]));
        assert!(matches!(prompt(json!(["a", "b"])), Ok(PromptInput::Texts(t)) if t.len() == 2));
        assert!(
            matches!(prompt(json!([1, 2, 3])), Ok(PromptInput::Tokens(t)) if t == [vec![1, 2, 3]])
        );
        assert!(matches!(prompt(json!([[1], [2, 3]])), Ok(PromptInput::Tokens(t)) if t.len() == 2));
        for bad in [
            json!(3),
            json!([1, "a"]),
            json!(["a", 1]),
            json!([-1]),
            json!([[1], "a"]),
            json!({}),
        ] {
            assert!(prompt(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_parameters_are_kept() {
        let r: CompletionRequest =
            serde_json::from_value(json!({"model": "m", "prompt": "x", "mystery": 1}))
                .expect("parses");
        assert_eq!(r.extra.get("mystery"), Some(&json!(1)));
        let missing = serde_json::from_value::<CompletionRequest>(json!({"model": "m"}));
        assert!(missing.is_err(), "prompt is required");
    }
}
