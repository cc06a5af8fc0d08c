//! Model files read without trusting them.
//!
//! - [`gguf`]: the GGUF header (metadata and tensor table) parsed in safe Rust with checked
//!   arithmetic and limits, each problem a [`Finding`] with a rule id and a severity.
//! - [`scan`]: a file's format sniffed from its content, its sha256, and the findings of the
//!   checks for that format; what `smallfirst scan` prints and what the engine runs before
//!   llama.cpp's own parser sees a file.
//! - [`template`]: a chat template checked without running it.
//! - [`pickle`]: pickle streams walked opcode by opcode, never loaded; the globals they import
//!   checked against a denylist and a list of what is known to be safe.
//! - [`containers`]: `.npy` object arrays and gzip / bzip2 / xz / 7z wrappers, opened bounded.
//! - [`safetensors`]: the JSON header's lengths, dtypes, shapes and ranges.

#![forbid(unsafe_code)]

pub mod containers;
pub mod fit;
pub mod gguf;
pub mod machine;
pub mod pickle;
pub mod safetensors;
pub mod sampling;
pub mod scan;
pub mod template;

use serde::Serialize;

/// How bad a finding is. The engine refuses files with a finding at or above its threshold
/// (`error` by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing wrong.
    Info,
    /// Unusual, not unsafe.
    Warning,
    /// Inconsistent: a loader may refuse it or misbehave.
    Error,
    /// Unsafe to hand to a native parser (out-of-bounds reads or writes, overflow), or code that
    /// runs on load.
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    /// `info`, `warning`, `error` or `critical`.
    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "error" => Severity::Error,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// A stable id, e.g. `gguf.tensor-bounds`.
    pub rule: &'static str,
    pub severity: Severity,
    pub message: String,
    /// Where in the file, in bytes, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

impl Finding {
    pub fn new(rule: &'static str, severity: Severity, message: impl Into<String>) -> Self {
        Finding {
            rule,
            severity,
            message: message.into(),
            offset: None,
        }
    }

    pub fn at(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }
}
