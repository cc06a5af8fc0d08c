//! What the provider translations share: their error and the identity of the OpenAI objects
//! they build.
//!
//! A translation is pure: an OpenAI request in, a provider's request out (`to_wire`); a
//! provider's response or stream event in, OpenAI objects out (`from_wire`). HTTP, retries and
//! deadlines are elsewhere, so each translation is tested offline against documented examples.

/// Why a translation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The client's request asks for something the provider cannot express; a 400 naming
    /// `param`.
    #[error("{message}")]
    Unsupported { param: String, message: String },
    /// The provider sent something that is not in its documented shape; the tier failed.
    #[error("the upstream sent a malformed response: {0}")]
    Malformed(String),
    /// The provider reported an error inside a successful response (an `error` stream event).
    #[error("the upstream reported `{kind}`: {message}")]
    Upstream { kind: String, message: String },
}

/// Identity for the OpenAI objects a translation builds, when the provider gives none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// `chatcmpl-…`, used when the provider's response carries no id.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
}
