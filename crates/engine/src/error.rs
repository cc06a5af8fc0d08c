//! `EngineError`: everything the engine can refuse or fail at.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model file `{path}` does not exist")]
    ModelMissing { path: PathBuf },
    #[error("could not load model `{path}`: {reason}")]
    Load { path: PathBuf, reason: String },
    /// The file failed the checks that run before llama.cpp's parser sees it.
    #[error("model file `{path}` failed its safety checks: {findings}")]
    Unsafe { path: PathBuf, findings: String },
    #[error(
        "model `{path}` needs about {} of memory with a context of {ctx} tokens for each of {parallel} sequences, and {} is available{}",
        gib(*need), gib(*available),
        match largest_ctx { Some(c) => format!("; a context of {c} tokens fits"), None => String::new() }
    )]
    DoesNotFit {
        path: PathBuf,
        need: u64,
        available: u64,
        ctx: u64,
        parallel: u64,
        largest_ctx: Option<u64>,
    },
    #[error("could not create a llama.cpp context of {n_ctx} tokens: {reason}")]
    Context { n_ctx: u32, reason: String },
    #[error("{0}")]
    Template(String),
    #[error(
        "this model's maximum context length is {n_ctx} tokens; the messages are {}{prompt_tokens} tokens{}",
        if *at_least { "more than " } else { "" },
        requested.map(|r| format!(" and {r} more were requested for the completion")).unwrap_or_default()
    )]
    ContextLength {
        n_ctx: u32,
        prompt_tokens: u32,
        /// Only a part of the prompt was tokenized: it is longer than `prompt_tokens`.
        at_least: bool,
        requested: Option<u32>,
    },
    #[error("the prompt is empty after tokenization")]
    EmptyPrompt,
    /// The grammar engine's token table could not be built for this model.
    #[error("cannot build the token table for constrained decoding: {0}")]
    TokenTable(String),
    /// The grammar of a constrained request does not compile, or broke mid-way.
    #[error("cannot enforce the requested format: {0}")]
    Grammar(String),
    #[error("llama.cpp decode failed: {0}")]
    Decode(String),
    #[error("the engine thread has stopped")]
    Stopped,
}

/// Bytes as GiB with two decimals (MiB below one GiB).
pub fn gib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}
