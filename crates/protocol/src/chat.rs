//! `POST /v1/chat/completions`: the request, the response, and the SSE chunk.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::shape;
use crate::tools::{ResponseFormat, Tool, ToolCall, ToolCallDelta, ToolChoice};

/// A chat completion request as the OpenAI API accepts it.
///
/// Fields smallfirst accepts but does not act on (`user`, `metadata`, `store`, `service_tier`)
/// are listed so that SDKs sending them keep working. Others are kept in [`extra`](Self::extra):
/// a remote tier gets them as sent, the embedded tier refuses them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Not in OpenAI's API; llama.cpp and vLLM accept it, so smallfirst does too.
    #[serde(
        default,
        deserialize_with = "shape::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub top_k: Option<u32>,
    /// Not in OpenAI's API; llama.cpp, vLLM and Ollama accept it: keep only tokens at least
    /// this likely relative to the most likely one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    /// Not in OpenAI's API; vLLM's name (llama.cpp's and Ollama's is `repeat_penalty`, read
    /// too): the logit of a token already generated is divided by it when positive.
    #[serde(
        default,
        alias = "repeat_penalty",
        skip_serializing_if = "Option::is_none"
    )]
    pub repetition_penalty: Option<f32>,
    /// Not in OpenAI's API; as in llama.cpp and vLLM, generate until `max_tokens` without
    /// ending the turn (for benchmarks). A response format or tools still end with their grammar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_eos: Option<bool>,
    #[serde(
        default,
        deserialize_with = "shape::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(
        default,
        deserialize_with = "shape::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_tokens: Option<u32>,
    #[serde(
        default,
        deserialize_with = "shape::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_completion_tokens: Option<u32>,
    #[serde(
        default,
        deserialize_with = "shape::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<BTreeMap<String, f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(
        default,
        deserialize_with = "shape::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub top_logprobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<crate::Metadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    /// Parameters this type does not name, as sent.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl ChatRequest {
    /// `max_completion_tokens` is the current name; `max_tokens` the deprecated one.
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// The stop sequences as a list, empty when none were given.
    pub fn stop_sequences(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
    }

    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
}

/// `stop`: one string or a list of them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
#[serde(try_from = "Value")]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl TryFrom<Value> for Stop {
    type Error = String;

    fn try_from(v: Value) -> Result<Self, String> {
        match v {
            Value::String(s) => Ok(Stop::One(s)),
            Value::Array(items) => items
                .into_iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s),
                    other => Err(format!(
                        "expected a string or an array of strings, got an array holding {}",
                        shape::kind(&other)
                    )),
                })
                .collect::<Result<_, _>>()
                .map(Stop::Many),
            other => Err(format!(
                "expected a string or an array of strings, got {}",
                shape::kind(&other)
            )),
        }
    }
}

/// Read from a string, so a role of the wrong type says so (`expected a string`) rather than
/// failing as malformed JSON, which is how serde reports an object where a unit enum was
/// expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

impl TryFrom<String> for Role {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role `{}`: expected one of `system`, `developer`, `user`, `assistant`, `tool`",
                    s.escape_debug()
                )
            })
    }
}

impl Role {
    const ALL: [Role; 6] = [
        Role::System,
        Role::Developer,
        Role::User,
        Role::Assistant,
        Role::Tool,
        Role::Function,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Function => "function",
        }
    }
}

/// One message of the conversation. Fields this type does not name (a provider's
/// `reasoning_content`, say) are kept in [`extra`](Self::extra): a remote tier gets them as
/// sent, the embedded tier refuses them by name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl Message {
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            content: Some(MessageContent::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            refusal: None,
            extra: serde_json::Map::new(),
        }
    }
}

/// `content`: a string, or a list of typed parts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
#[serde(try_from = "Value")]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl TryFrom<Value> for MessageContent {
    type Error = String;

    fn try_from(v: Value) -> Result<Self, String> {
        match v {
            Value::String(s) => Ok(MessageContent::Text(s)),
            Value::Array(parts) => parts
                .into_iter()
                .enumerate()
                .map(|(i, p)| {
                    serde_json::from_value(p).map_err(|e| format!("content part [{i}]: {e}"))
                })
                .collect::<Result<_, _>>()
                .map(MessageContent::Parts),
            other => Err(format!(
                "expected a string or an array of content parts, got {}",
                shape::kind(&other)
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text { text: String },
    Refusal { refusal: String },
    ImageUrl { image_url: Value },
    InputAudio { input_audio: Value },
    File { file: Value },
}

impl ContentPart {
    /// The part's `type` as it appears on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            ContentPart::Text { .. } => "text",
            ContentPart::Refusal { .. } => "refusal",
            ContentPart::ImageUrl { .. } => "image_url",
            ContentPart::InputAudio { .. } => "input_audio",
            ContentPart::File { .. } => "file",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    /// A reason another OpenAI-compatible server gives (`function_call`, its own words): read,
    /// so that its answer is not refused for it. smallfirst never writes one.
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

/// Prompt tokens served from a cache (the embedded engine's kept prefix, a provider's cache).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u32,
}

/// Completion tokens spent reasoning before the answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: u32,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: None,
            completion_tokens_details: None,
        }
    }

    /// Prompt tokens read from a cache.
    pub fn cached_tokens(&self) -> u32 {
        self.prompt_tokens_details.map_or(0, |d| d.cached_tokens)
    }

    /// Completion tokens spent reasoning.
    pub fn reasoning_tokens(&self) -> u32 {
        self.completion_tokens_details
            .map_or(0, |d| d.reasoning_tokens)
    }
}

/// `chat.completion`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    /// Some OpenAI-compatible servers leave it out; counted as zero then.
    #[serde(default)]
    pub usage: Usage,
    #[serde(default)]
    pub system_fingerprint: Option<String>,
    /// How smallfirst answered (tier, reason, confidence, label), when it judged the answer.
    /// OpenAI's SDKs keep unknown fields (`completion.model_extra["smallfirst"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smallfirst: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: ResponseMessage,
    pub logprobs: Option<Logprobs>,
    pub finish_reason: FinishReason,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseMessage {
    pub role: Role,
    pub content: Option<String>,
    /// Always present; `null` unless the model refused.
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

/// `logprobs` of a choice: one entry per generated token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Logprobs {
    pub content: Vec<TokenLogprob>,
    pub refusal: Option<Vec<TokenLogprob>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
}

/// `chat.completion.chunk`: one SSE event of a streamed completion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: Option<String>,
    pub choices: Vec<ChunkChoice>,
    /// Present (as `null` until the last chunk) only when `stream_options.include_usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub logprobs: Option<Logprobs>,
    pub finish_reason: Option<FinishReason>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_accepts_sdk_shapes() {
        let req: ChatRequest = serde_json::from_value(serde_json::json!({
            "model": "local",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": null}
            ],
            "stop": "\n",
            "max_completion_tokens": 5,
            "max_tokens": 9,
            "stream": true,
            "stream_options": {"include_usage": true},
            "user": "u1"
        }))
        .expect("valid request");
        assert_eq!(req.stop_sequences(), vec!["\n".to_string()]);
        assert_eq!(req.max_output_tokens(), Some(5));
        assert!(req.is_stream() && req.include_usage());
        assert!(matches!(
            req.messages[1].content,
            Some(MessageContent::Parts(ref p)) if p[0].kind() == "text"
        ));
    }

    #[test]
    fn unknown_fields_are_kept_by_name() {
        let req = serde_json::from_value::<ChatRequest>(serde_json::json!({
            "model": "local", "messages": [], "temperatur": 1.0
        }))
        .expect("kept");
        assert_eq!(req.extra.keys().collect::<Vec<_>>(), ["temperatur"]);
        let back = serde_json::to_value(&req).expect("serializes");
        assert_eq!(back["temperatur"], 1.0, "sent on as it came");
    }

    #[test]
    fn chunk_usage_is_null_until_last() {
        let mut chunk = ChatCompletionChunk {
            id: "c".into(),
            object: "chat.completion.chunk".into(),
            created: 0,
            model: "m".into(),
            system_fingerprint: None,
            choices: vec![],
            usage: Some(None),
        };
        let v = serde_json::to_value(&chunk).expect("serializes");
        assert!(v["usage"].is_null() && v.as_object().is_some_and(|o| o.contains_key("usage")));
        chunk.usage = None;
        let v = serde_json::to_value(&chunk).expect("serializes");
        assert!(!v.as_object().is_some_and(|o| o.contains_key("usage")));
    }

    #[test]
    fn response_message_carries_null_refusal() {
        let m = ResponseMessage {
            role: Role::Assistant,
            content: Some("x".into()),
            refusal: None,
            tool_calls: None,
        };
        let v = serde_json::to_value(&m).expect("serializes");
        assert!(
            v.as_object()
                .is_some_and(|o| o["refusal"].is_null() && o.contains_key("refusal"))
        );
    }
}
