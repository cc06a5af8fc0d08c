//! `POST /v1/embeddings`: the request and the response.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::completions::PromptInput;

/// An embeddings request as the OpenAI API accepts it; parameters this type does not name are
/// kept in [`extra`](Self::extra).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    pub model: String,
    /// A string, a list of strings, a list of token ids, or a list of such lists.
    pub input: PromptInput,
    /// `float` (the default) or `base64` (little-endian f32 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::shape::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub dimensions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<crate::Metadata>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbeddingList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Embedding>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Embedding {
    /// Always `embedding`.
    pub object: String,
    pub index: u32,
    /// A list of floats, or a base64 string of little-endian f32 bytes.
    pub embedding: Value,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: u32,
    pub total_tokens: u32,
}
